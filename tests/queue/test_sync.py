"""GroupSyncer: fsync off the reactor thread, directory fsyncs grouped per round."""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults

from mta.queue.sync import GroupSyncer, fsync_path


class FsyncRecorder:
    """An fsync stand-in: records what it was called on (and from which
    thread), optionally waits, optionally fails."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[tuple[str, bool]] = []  # (path, is a directory)
        self.threads: set[int] = set()
        self.fail_dirs = False
        self.fail_files = False
        self.gate: threading.Event | None = None

    def __call__(self, fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        self.calls.append((path, is_dir))
        self.threads.add(threading.get_ident())
        if self.gate is not None:
            self.gate.wait(5)
        if self.delay:
            time.sleep(self.delay)
        if (is_dir and self.fail_dirs) or (not is_dir and self.fail_files):
            raise OSError(errno.EIO, "Input/output error")

    def dirs(self) -> list[str]:
        return [p for p, is_dir in self.calls if is_dir]

    def files(self) -> list[str]:
        return [p for p, is_dir in self.calls if not is_dir]


@pytest.fixture
def recorder() -> FsyncRecorder:
    return FsyncRecorder()


@pytest.fixture
def syncer(recorder: FsyncRecorder) -> Iterator[GroupSyncer]:
    s = GroupSyncer(reactor, threadpool_size=16, fsync=recorder)
    s.start()
    yield s
    s.stop()


def test_fsync_path_syncs_files_and_directories(tmp_path: Path) -> None:
    """The blocking helper opens a file or a directory and fsyncs it."""
    rec = FsyncRecorder()
    f = tmp_path / "f"
    f.write_bytes(b"x")
    fsync_path(f, rec)
    fsync_path(tmp_path, rec)
    assert rec.calls == [(str(f), False), (str(tmp_path), True)]


@pytest_twisted.ensureDeferred
async def test_sync_files_runs_off_the_reactor_thread(
    tmp_path: Path, syncer: GroupSyncer, recorder: FsyncRecorder
) -> None:
    """Every named file is fsynced, in pool threads, never the caller's."""
    paths = [tmp_path / f"m{i}" for i in range(5)]
    for p in paths:
        p.write_bytes(b"data")
    await syncer.sync_files(paths)
    assert sorted(recorder.files()) == sorted(str(p) for p in paths)
    assert threading.get_ident() not in recorder.threads


@pytest_twisted.ensureDeferred
async def test_sync_fds_takes_ownership_and_closes(
    tmp_path: Path, syncer: GroupSyncer, recorder: FsyncRecorder
) -> None:
    """Descriptors handed to sync_fds are fsynced and closed by the syncer."""
    fds = []
    for i in range(3):
        fd = os.open(tmp_path / f"m{i}", os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"data")
        fds.append(fd)
    await syncer.sync_fds(fds)
    assert len(recorder.files()) == 3
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


@pytest_twisted.ensureDeferred
async def test_concurrent_dir_requests_share_rounds(
    tmp_path: Path, syncer: GroupSyncer, recorder: FsyncRecorder
) -> None:
    """50 requests for one directory at once cost two fsync rounds: the first
    request's, and one for everyone who asked while it ran."""
    recorder.delay = 0.02
    await gatherResults([Deferred.fromCoroutine(syncer.sync_dir(tmp_path)) for _ in range(50)])
    assert len(recorder.dirs()) == 2
    assert syncer.dir_rounds == 2


@pytest_twisted.ensureDeferred
async def test_request_during_a_round_waits_for_the_next(
    tmp_path: Path, syncer: GroupSyncer, recorder: FsyncRecorder
) -> None:
    """A request made while a round runs is not answered by that round (its
    rename may postdate the fsync) but by a new one."""
    recorder.gate = threading.Event()
    first = Deferred.fromCoroutine(syncer.sync_dir(tmp_path))
    while not recorder.calls:  # round 1 is inside fsync now
        await _sleep(0.001)
    second = Deferred.fromCoroutine(syncer.sync_dir(tmp_path))
    recorder.gate.set()
    await first
    assert len(recorder.dirs()) >= 1
    await second
    assert len(recorder.dirs()) == 2


@pytest_twisted.ensureDeferred
async def test_different_directories_are_not_grouped(
    tmp_path: Path, syncer: GroupSyncer, recorder: FsyncRecorder
) -> None:
    """Grouping is per directory: each directory gets its own fsync."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    await syncer.sync_dirs([a, b])
    assert sorted(recorder.dirs()) == [str(a), str(b)]


@pytest_twisted.ensureDeferred
async def test_errors_reach_every_waiter_of_the_round(
    tmp_path: Path, syncer: GroupSyncer, recorder: FsyncRecorder
) -> None:
    """A failed directory fsync is raised to each request it was meant to cover."""
    recorder.fail_dirs = True
    recorder.delay = 0.01
    results = []
    for d in [Deferred.fromCoroutine(syncer.sync_dir(tmp_path)) for _ in range(5)]:
        try:
            await d
            results.append("ok")
        except OSError as e:
            results.append(e.errno)
    assert results == [errno.EIO] * 5


@pytest_twisted.ensureDeferred
async def test_file_errors_are_raised(
    tmp_path: Path, syncer: GroupSyncer, recorder: FsyncRecorder
) -> None:
    """A failed file fsync is raised after all the others ended."""
    recorder.fail_files = True
    (tmp_path / "m").write_bytes(b"x")
    with pytest.raises(OSError) as info:
        await syncer.sync_files([tmp_path / "m"])
    assert info.value.errno == errno.EIO


@pytest_twisted.ensureDeferred
async def test_stop_waits_for_work_in_flight(tmp_path: Path) -> None:
    """stop() refuses new work at once but fires only after running fsyncs end."""
    rec = FsyncRecorder()
    rec.gate = threading.Event()
    syncer = GroupSyncer(reactor, fsync=rec)
    syncer.start()
    running = Deferred.fromCoroutine(syncer.sync_dir(tmp_path))
    stopped = syncer.stop()
    assert not stopped.called
    with pytest.raises(RuntimeError):
        await syncer.sync_dir(tmp_path)
    rec.gate.set()
    await running
    await stopped
    assert not syncer.running


@pytest_twisted.ensureDeferred
async def test_stop_lets_a_waiting_round_run(tmp_path: Path) -> None:
    """A request waiting for the next directory round when stop() is called
    still gets its own fsync before the pool goes down."""
    rec = FsyncRecorder()
    rec.gate = threading.Event()
    syncer = GroupSyncer(reactor, fsync=rec)
    syncer.start()
    first = Deferred.fromCoroutine(syncer.sync_dir(tmp_path))
    while not rec.calls:
        await _sleep(0.001)
    second = Deferred.fromCoroutine(syncer.sync_dir(tmp_path))
    stopped = syncer.stop()
    rec.gate.set()
    await first
    await second
    await stopped
    assert len(rec.dirs()) == 2


@pytest_twisted.ensureDeferred
async def test_restart_after_stop(tmp_path: Path, recorder: FsyncRecorder) -> None:
    """A stopped syncer can be started again (a fresh pool)."""
    syncer = GroupSyncer(reactor, fsync=recorder)
    syncer.start()
    await syncer.stop()
    syncer.start()
    await syncer.sync_dir(tmp_path)
    await syncer.stop()
    assert recorder.dirs() == [str(tmp_path)]


@pytest_twisted.ensureDeferred
async def test_not_running_refuses_and_closes(tmp_path: Path) -> None:
    """A syncer that was never started raises instead of hanging, and does
    not leak the descriptors it was given."""
    syncer = GroupSyncer(reactor)
    fd = os.open(tmp_path, os.O_RDONLY)
    with pytest.raises(RuntimeError):
        await syncer.sync_fds([fd])
    with pytest.raises(OSError):
        os.fstat(fd)
    with pytest.raises(RuntimeError):
        await syncer.sync_dir(tmp_path)


def _sleep(seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d
