"""Grouped fsync off the reactor thread: what makes a queued message durable.

``fsync`` blocks for milliseconds (a disk flush), so it never runs on the
reactor thread: every call goes to a small thread pool of its own, apart from
the reactor's pool that DNS lookups use.  File fsyncs of many messages run
side by side in that pool.  Directory fsyncs are *grouped*: while one fsync
of a directory runs, every further request for that directory waits for one
next round, which starts when the running one ends and so covers every
rename made before it started.  Fifty messages committed at once thus cost a
handful of directory flushes, not fifty (the group commit of databases;
Postfix gets the same effect from one fsync per queue file only).

Inputs: the reactor, the pool size, and an fsync function (``os.fsync``;
tests pass a counting one).  Outputs: ``GroupSyncer`` with ``sync_files``,
``sync_fds``, ``sync_dir``, ``sync_dirs`` (awaitables), ``start``/``stop``; and
``fsync_path`` for callers that may block (recovery, the ``mta`` tools).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

FsyncFunction = Callable[[int], None]
StrPath = str | os.PathLike[str]

_T = TypeVar("_T")


def fsync_path(path: StrPath, fsync: FsyncFunction = os.fsync) -> None:
    """Open ``path`` (a file or a directory) read-only and fsync it; blocks."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fsync(fd)
    finally:
        os.close(fd)


def _fsync_and_close(fd: int, fsync: FsyncFunction) -> None:
    try:
        fsync(fd)
    finally:
        os.close(fd)


@dataclass
class _DirRounds:
    """One directory's grouping state: is a round running, and who waits for
    the next one."""

    running: bool = False
    waiting: list[Deferred[None]] = field(default_factory=list)


class GroupSyncer:
    """Runs fsync in its own thread pool, grouping directory fsyncs.

    ``start()`` before use; ``stop()`` returns a Deferred that fires when the
    work in flight has finished and the pool is down (return it from
    ``stopService``).  Calls made while stopped raise RuntimeError: a
    stopped Twisted pool drops work silently, which would hang the caller.
    """

    def __init__(
        self,
        reactor: Any,
        threadpool_size: int = 8,
        *,
        fsync: FsyncFunction = os.fsync,
    ) -> None:
        self._reactor = reactor
        self._pool_size = threadpool_size
        self._pool: ThreadPool | None = None
        self.fsync = fsync
        self._dirs: dict[str, _DirRounds] = {}
        self._in_flight = 0
        self._running = False
        self._drained: list[Deferred[None]] = []
        # How many directory fsync rounds ran: a gauge of the grouping.
        self.dir_rounds = 0

    # -- life cycle -----------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        if self._running:
            return
        if self._pool is None:
            # A fresh pool: a stopped Twisted ThreadPool cannot restart.
            self._pool = ThreadPool(minthreads=0, maxthreads=self._pool_size, name="mta-fsync")
            self._pool.start()
        self._running = True

    def stop(self) -> Deferred[None]:
        """Refuse new work, let the work in flight finish, stop the pool."""
        if not self._running:
            return succeed(None)
        self._running = False
        done: Deferred[None] = Deferred()
        done.addCallback(lambda _: self._stop_pool())
        if self._in_flight:
            self._drained.append(done)
        else:
            done.callback(None)
        return done

    def _stop_pool(self) -> None:
        if self._running or self._pool is None:
            return  # started again while draining: keep the pool
        pool, self._pool = self._pool, None
        pool.stop()

    # -- the work ---------------------------------------------------------------
    async def sync_files(self, paths: Iterable[StrPath]) -> None:
        """fsync each file (by name), all at once in the pool.  Raises the
        first OSError after every fsync has ended."""
        with self._operation():
            await self._all([self._submit(fsync_path, os.fspath(p), self.fsync) for p in paths])

    async def sync_fds(self, fds: Iterable[int]) -> None:
        """fsync each open descriptor, all at once in the pool, and close it
        there: the descriptors belong to the syncer from this call on, so a
        caller that gives up waiting can never see a descriptor reused under
        a running fsync.  Prefer this to ``sync_files`` for files still open:
        a write-back error is reported to the descriptor that wrote."""
        fds = list(fds)
        if not self._running:
            for fd in fds:
                os.close(fd)
            raise RuntimeError("GroupSyncer is not running")
        with self._operation():
            await self._all([self._submit(_fsync_and_close, fd, self.fsync) for fd in fds])

    async def sync_dir(self, path: StrPath) -> None:
        """fsync a directory so that renames into it are durable; shares the
        fsync with every other request for the same directory (see module
        docstring).  Raises the OSError of the round it joined."""
        with self._operation():
            key = os.fspath(path)
            rounds = self._dirs.get(key)
            if rounds is None:
                rounds = self._dirs[key] = _DirRounds()
            waiter: Deferred[None] = Deferred()
            rounds.waiting.append(waiter)
            if not rounds.running:
                self._start_round(key, rounds)
            await waiter

    async def sync_dirs(self, paths: Iterable[StrPath]) -> None:
        """``sync_dir`` for several directories at once; raises the first
        error after all have ended."""
        await self._all([Deferred.fromCoroutine(self.sync_dir(p)) for p in paths])

    def _start_round(self, key: str, rounds: _DirRounds) -> None:
        waiters, rounds.waiting = rounds.waiting, []
        rounds.running = True
        self.dir_rounds += 1
        d = self._submit(fsync_path, key, self.fsync)

        def finished(result: object) -> None:
            # Start the next round (if anyone asked) before waking the ones
            # of this round: a waiter that asks again at once must wait for
            # a round that starts after its request, never for this one.
            rounds.running = False
            if rounds.waiting:
                self._start_round(key, rounds)
            else:
                del self._dirs[key]
            for w in waiters:
                if isinstance(result, Failure):
                    w.errback(result)
                else:
                    w.callback(None)

        d.addBoth(finished)

    # -- plumbing ------------------------------------------------------------------
    @contextlib.contextmanager
    def _operation(self) -> Iterator[None]:
        """Count a request from its call to its answer, so that ``stop()``
        waits for it, including a directory request waiting for the next
        round (whose fsync is submitted only later)."""
        if not self._running:
            raise RuntimeError("GroupSyncer is not running")
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            if not self._in_flight and self._drained:
                drained, self._drained = self._drained, []
                for d in drained:
                    d.callback(None)

    def _submit(self, f: Callable[..., _T], *args: object) -> Deferred[_T]:
        # Work counted by _operation() may reach here after stop() (a next
        # directory round): the pool stays up until that work has drained.
        assert self._pool is not None
        d: Deferred[_T] = deferToThreadPool(self._reactor, self._pool, f, *args)
        return d

    @staticmethod
    async def _all(deferreds: list[Deferred[Any]]) -> None:
        """Wait for all (they already run side by side); raise the first error."""
        first: Exception | None = None
        for d in deferreds:
            try:
                await d
            except Exception as e:
                if first is None:
                    first = e
        if first is not None:
            raise first
