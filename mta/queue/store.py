"""The queue on disk: one maildir per state, each message with an envelope sidecar.

Layout under ``queue_directory`` (docs/queue.md explains it for operators)::

    STATE/tmp/                 files being written; never a queued message
    STATE/new/                 unused (kept so that STATE is a valid maildir)
    STATE/cur/ID               the message as received, CRLF line ends
    STATE/envelope/ID.json     its envelope (mta.envelope), readable JSON
    corrupt/note/NAME          why corrupt/cur/NAME was quarantined
    pid/                       the daemon's pid file
    public/qmgr                the tools' wake-up FIFO (mta.queue.trigger)

for STATE in ``incoming``, ``active``, ``deferred``, ``hold``, ``corrupt``.
Mail readers see each STATE as a maildir of the queued messages; the sidecar
lives beside the maildir's three directories, where readers do not look.

The directory a message file is in *is* its state (Postfix ``mail_queue.h``).
Two orderings make every crash recoverable without guessing:

* A commit writes both files in ``incoming/tmp``, fsyncs them, renames the
  message into ``cur``, fsyncs ``cur``, and only then renames the sidecar
  into ``envelope`` and fsyncs that.  The sidecar is the commit record: a
  message without one in ``incoming`` was never acknowledged.
* A move renames the message first and the sidecar after it.  A sidecar
  found away from its message is the tail of an interrupted move: it
  follows the message.  A delete first renames the message to
  ``STATE/tmp/ID.deleted`` (gone from the queue at once), then removes the
  sidecar and that file.

Inputs: the queue directory and a ``GroupSyncer``.  Outputs: ``QueueStore``
(receive, move, update, delete, load, find, quarantine, recover, listing,
counts); ``commit_blocking`` for ``mta sendmail``; and the ``tool_*``
operations that the ``mta queue`` commands run in their own process beside
the daemon.  A tool run by root beside a daemon that runs as ``mail_owner``
gives the files it creates to the queue directory's owner, so that the
daemon can read them.
"""

from __future__ import annotations

import enum
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from mta.envelope import Envelope
from mta.queue.ids import is_queue_id, new_queue_id
from mta.queue.sync import FsyncFunction, GroupSyncer, fsync_path

log = logging.getLogger(__name__)

STATES = ("incoming", "active", "deferred", "hold", "corrupt")
LIVE_STATES = STATES[:-1]  # the queue proper; `corrupt` is for the operator

MESSAGE_DIR = "cur"
ENVELOPE_DIR = "envelope"
TMP_DIR = "tmp"
NEW_DIR = "new"
NOTE_DIR = "note"
ENVELOPE_SUFFIX = ".json"
DELETED_SUFFIX = ".deleted"

_DIR_MODE = 0o700
_FILE_MODE = 0o600
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


class ToolResult(enum.Enum):
    """What a ``tool_*`` operation did to one message."""

    MOVED = "moved"
    DELETED = "deleted"
    UNCHANGED = "unchanged"  # already in the wanted state
    ABSENT = "absent"  # no such message (or it left the queue meanwhile)
    BUSY = "busy"  # the daemon owns it now (active, or mid-commit/move): try later


@dataclass
class Listing:
    """What ``QueueStore.listing`` saw: per state, each message file's size,
    and which ids had their sidecar beside them (complete messages)."""

    sizes: dict[str, dict[str, int]] = field(default_factory=dict)
    complete: dict[str, set[str]] = field(default_factory=dict)


class IncomingMessage:
    """A message being received into ``incoming/tmp/ID``.

    ``write`` is a plain buffered write on the caller's thread (page-cache
    writes are fast; the fsync at commit is what leaves the reactor).  A
    failed write raises and is remembered in ``failed``; commit raises it
    again, so the caller may keep reading the client's data and answer 4xx
    at the end of DATA.
    """

    def __init__(self, queue_id: str, path: Path, file: BinaryIO) -> None:
        self.queue_id = queue_id
        self.path = path
        self.size = 0
        self.failed: OSError | None = None
        self._file: BinaryIO | None = file
        self._state = "open"  # -> "committing" -> "committed" | "aborted"

    def write(self, data: bytes) -> None:
        if self._file is None or self._state != "open":
            raise ValueError(f"{self.queue_id}: message is not open for writing")
        try:
            self._file.write(data)
        except OSError as e:
            self.failed = e
            raise
        self.size += len(data)

    def flush(self) -> None:
        """Flush buffered writes, so that the file can be read back (milters)."""
        if self._file is not None:
            self._file.flush()

    def replace_content(self, source: Path) -> None:
        """Make the content of ``source`` the message's (a milter edited its
        headers or body); writing goes on at its end."""
        if self._file is None or self._state != "open":
            raise ValueError(f"{self.queue_id}: message is not open for writing")
        self._file.seek(0)
        self._file.truncate()
        self.size = 0
        with open(source, "rb") as src:
            for chunk in iter(lambda: src.read(65536), b""):
                self.write(chunk)
        self._file.flush()

    def abort(self) -> None:
        """Drop the message; idempotent.  No effect once a commit has begun:
        the commit then either queues the message or removes it itself."""
        if self._state != "open":
            return
        self._state = "aborted"
        self._discard()

    def _release_fd(self) -> int:
        """Flush, and hand over a descriptor of the file (for fsync)."""
        assert self._file is not None
        self._file.flush()
        fd = os.dup(self._file.fileno())
        self._file.close()
        self._file = None
        return fd

    def _discard(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass  # the failed flush of a message we throw away
            self._file = None
        _unlink_quietly(self.path)


class QueueStore:
    """The queue directory.  Methods that only rename or read run on the
    caller's (reactor) thread; the ``async`` ones fsync through the syncer.

    The store also keeps the counts and bytes per state in memory, so that
    the statistics service never rescans the disk: ``recover()`` sets them,
    every operation of this process keeps them, ``refresh()`` re-reads the
    directories after ``mta queue`` tools changed the queue.

    ``syncer`` may be None for a process that only runs the ``tool_*``
    operations (they fsync blocking); the async methods then raise.
    """

    def __init__(self, root: Path, syncer: GroupSyncer | None = None) -> None:
        self.root = Path(root)
        self._syncer = syncer
        self._fsync: FsyncFunction = syncer.fsync if syncer is not None else os.fsync
        # A tool run by root beside a daemon that dropped to mail_owner: the
        # files it creates must belong to the queue's owner.
        self._owner: tuple[int, int] | None = None
        if syncer is None and os.geteuid() == 0:
            try:
                st = os.stat(self.root)
            except OSError:
                st = None
            if st is not None and st.st_uid != 0:
                self._owner = (st.st_uid, st.st_gid)
        self._where: dict[str, tuple[str, int]] = {}  # live queue id -> (state, size)
        self._counts = dict.fromkeys(STATES, 0)
        self._bytes = dict.fromkeys(STATES, 0)

    # -- paths ------------------------------------------------------------------
    def state_dir(self, state: str, sub: str) -> Path:
        return self.root / state / sub

    def message_path(self, state: str, queue_id: str) -> Path:
        _check(state, queue_id)
        return self.root / state / MESSAGE_DIR / queue_id

    def envelope_path(self, state: str, queue_id: str) -> Path:
        _check(state, queue_id)
        return self.root / state / ENVELOPE_DIR / (queue_id + ENVELOPE_SUFFIX)

    def create_layout(self) -> None:
        """Create the missing directories and make them durable: a message
        fsynced into a directory whose own name was not yet on disk could
        vanish with it."""
        wanted = [self.root, self.root / "pid"]
        for state in STATES:
            wanted.append(self.root / state)
            subs = [TMP_DIR, NEW_DIR, MESSAGE_DIR, ENVELOPE_DIR]
            if state == "corrupt":
                subs.append(NOTE_DIR)
            wanted.extend(self.root / state / sub for sub in subs)
        created: list[Path] = []
        for path in wanted:
            try:
                path.mkdir(mode=_DIR_MODE, parents=True)
            except FileExistsError:
                continue
            created.append(path)
        for parent in sorted({p.parent for p in created}, key=lambda p: len(p.parts)):
            fsync_path(parent, self._fsync)

    # -- receiving -----------------------------------------------------------------
    def begin(self) -> IncomingMessage:
        """Create ``incoming/tmp/ID`` with a fresh id, open for writing."""
        tmp = self.state_dir("incoming", TMP_DIR)
        while True:
            queue_id = new_queue_id()
            if queue_id in self._where:
                continue  # the clock went back onto an id still queued
            path = tmp / queue_id
            try:
                fd = os.open(path, _CREATE_FLAGS, _FILE_MODE)
            except FileExistsError:
                continue
            try:
                self._adopt(fd)
            except OSError:
                os.close(fd)
                _unlink_quietly(path)
                raise
            return IncomingMessage(queue_id, path, os.fdopen(fd, "wb"))

    async def commit(self, msg: IncomingMessage, envelope: Envelope) -> None:
        """Make the message and its envelope durable in ``incoming``; the
        caller answers 250 only after this returns.  Sets ``envelope.size``
        to the octets written.  On any error (ENOSPC, EIO, ...) every file
        of the message is removed and the error raised: answer 4xx."""
        if msg._state != "open":
            raise ValueError(f"{msg.queue_id}: message already committed or aborted")
        if envelope.queue_id != msg.queue_id:
            raise ValueError(f"envelope {envelope.queue_id!r} is not message {msg.queue_id!r}")
        syncer = self._need_syncer()
        queue_id = msg.queue_id
        msg._state = "committing"
        env_tmp = self.state_dir("incoming", TMP_DIR) / (queue_id + ENVELOPE_SUFFIX)
        msg_final = self.message_path("incoming", queue_id)
        env_final = self.envelope_path("incoming", queue_id)
        msg_renamed = env_renamed = False
        try:
            if msg.failed is not None:
                raise msg.failed
            envelope.size = msg.size
            msg_fd = msg._release_fd()
            try:
                env_fd = _write_new(env_tmp, envelope.to_json(), self._owner)
            except BaseException:
                os.close(msg_fd)
                raise
            await syncer.sync_fds([msg_fd, env_fd])
            os.rename(msg.path, msg_final)
            msg_renamed = True
            # The message's name must be durable before the sidecar's: a
            # sidecar on disk means "acknowledged", and must not outlive
            # the message it speaks for.
            await syncer.sync_dir(msg_final.parent)
            os.rename(env_tmp, env_final)
            env_renamed = True
            await syncer.sync_dir(env_final.parent)
        except BaseException:
            msg._state = "aborted"
            if env_renamed:
                _unlink_quietly(env_final)
            _unlink_quietly(env_tmp)
            if msg_renamed:
                _unlink_quietly(msg_final)
            msg._discard()
            raise
        msg._state = "committed"
        self._add("incoming", queue_id, msg.size)

    def commit_blocking(self, msg: IncomingMessage, envelope: Envelope) -> None:
        """``commit`` with blocking fsyncs, for ``mta sendmail`` (its own
        process, which may run without the daemon): the same steps in the
        same order, so a crash at any point leaves what ``recover`` expects."""
        if msg._state != "open":
            raise ValueError(f"{msg.queue_id}: message already committed or aborted")
        if envelope.queue_id != msg.queue_id:
            raise ValueError(f"envelope {envelope.queue_id!r} is not message {msg.queue_id!r}")
        queue_id = msg.queue_id
        msg._state = "committing"
        env_tmp = self.state_dir("incoming", TMP_DIR) / (queue_id + ENVELOPE_SUFFIX)
        msg_final = self.message_path("incoming", queue_id)
        env_final = self.envelope_path("incoming", queue_id)
        msg_renamed = env_renamed = False
        try:
            if msg.failed is not None:
                raise msg.failed
            envelope.size = msg.size
            msg_fd = msg._release_fd()
            try:
                self._fsync(msg_fd)
            finally:
                os.close(msg_fd)
            env_fd = _write_new(env_tmp, envelope.to_json(), self._owner)
            try:
                self._fsync(env_fd)
            finally:
                os.close(env_fd)
            os.rename(msg.path, msg_final)
            msg_renamed = True
            fsync_path(msg_final.parent, self._fsync)
            os.rename(env_tmp, env_final)
            env_renamed = True
            fsync_path(env_final.parent, self._fsync)
        except BaseException:
            msg._state = "aborted"
            if env_renamed:
                _unlink_quietly(env_final)
            _unlink_quietly(env_tmp)
            if msg_renamed:
                _unlink_quietly(msg_final)
            msg._discard()
            raise
        msg._state = "committed"
        self._add("incoming", queue_id, msg.size)

    # -- the daemon's operations ------------------------------------------------------
    def move(self, queue_id: str, src_state: str, dst_state: str) -> None:
        """Rename message and sidecar from one state to another (message
        first).  Raises FileNotFoundError when the message is not in
        ``src_state`` (a tool moved or deleted it).  Not durable by itself:
        see ``move_durable``."""
        src_msg = self.message_path(src_state, queue_id)
        dst_msg = self.message_path(dst_state, queue_id)
        if src_state == dst_state:
            return
        os.rename(src_msg, dst_msg)
        try:
            os.rename(
                self.envelope_path(src_state, queue_id), self.envelope_path(dst_state, queue_id)
            )
        except OSError:
            # Keep the pair together: put the message back.
            try:
                os.rename(dst_msg, src_msg)
            except OSError as e:
                log.error("%s: cannot undo move to %s: %s", queue_id, dst_state, e)
            raise
        self._moved(queue_id, src_state, dst_state, dst_msg)

    async def move_durable(self, queue_id: str, src_state: str, dst_state: str) -> None:
        """``move``, then fsync the destination directories (grouped)."""
        syncer = self._need_syncer()
        self.move(queue_id, src_state, dst_state)
        await syncer.sync_dirs(
            [self.state_dir(dst_state, MESSAGE_DIR), self.state_dir(dst_state, ENVELOPE_DIR)]
        )

    async def update(self, state: str, envelope: Envelope) -> None:
        """Replace the sidecar atomically and durably: write a temporary
        file, fsync it, rename it over the old one, fsync the directory."""
        syncer = self._need_syncer()
        queue_id = envelope.queue_id
        final = self.envelope_path(state, queue_id)
        if not self.message_path(state, queue_id).exists():
            raise FileNotFoundError(f"{queue_id}: no message in {state}")
        tmp = self.state_dir(state, TMP_DIR) / f"{queue_id}{ENVELOPE_SUFFIX}.{secrets.token_hex(4)}"
        fd = _write_new(tmp, envelope.to_json(), self._owner)
        try:
            await syncer.sync_fds([fd])
            os.rename(tmp, final)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        await syncer.sync_dir(final.parent)

    def delete(self, state: str, queue_id: str) -> None:
        """Remove a message and its sidecar.  Raises FileNotFoundError when
        the message is not in ``state``."""
        tomb = self.state_dir(state, TMP_DIR) / (queue_id + DELETED_SUFFIX)
        os.rename(self.message_path(state, queue_id), tomb)
        _unlink_quietly(self.envelope_path(state, queue_id))
        _unlink_quietly(tomb)
        self._removed(queue_id, state)

    def load(self, state: str, queue_id: str) -> Envelope:
        """The envelope of a message; raises OSError (missing, unreadable)
        or ValueError (not an envelope, or another message's)."""
        envelope = Envelope.from_json(self.envelope_path(state, queue_id).read_bytes())
        if envelope.queue_id != queue_id:
            raise ValueError(f"envelope names another queue id: {envelope.queue_id!r}")
        return envelope

    def exists(self, state: str, queue_id: str) -> bool:
        """Is the message file in ``state``?"""
        return self.message_path(state, queue_id).exists()

    def read_message(self, state: str, queue_id: str, limit: int = -1) -> bytes:
        """The queued message (its first ``limit`` octets); blocks: run it
        in a thread."""
        with open(self.message_path(state, queue_id), "rb") as f:
            return f.read(limit)

    def quarantine(self, state: str, queue_id: str, reason: str) -> str:
        """Move a message and its sidecar (what exists of them) from
        ``state`` into ``corrupt`` with a note saying ``reason``, and log
        it: for a file that turned out unreadable while the daemon runs.
        Returns the name it has in ``corrupt``."""
        msg_state = state if self.message_path(state, queue_id).exists() else None
        env_state = state if self.envelope_path(state, queue_id).exists() else None
        name = self._quarantine(queue_id, msg_state, env_state, reason)
        if msg_state is not None:
            size = self._where.get(queue_id, (state, 0))[1]
            self._removed(queue_id, state)
            self._counts["corrupt"] += 1
            self._bytes["corrupt"] += size
        return name

    def find(self, queue_id: str) -> str | None:
        """The state whose directory holds the message, else None (also
        for a string that is not a queue id)."""
        if not is_queue_id(queue_id):
            return None
        for state in STATES:
            if self.message_path(state, queue_id).exists():
                return state
        return None

    def queue_ids(self, state: str) -> list[str]:
        """The ids of the messages in ``state``, sorted (roughly by age)."""
        _check_state(state)
        return sorted(name for name, _ in _files(self.state_dir(state, MESSAGE_DIR)))

    # -- statistics ---------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Messages per state."""
        return dict(self._counts)

    def total_bytes(self) -> int:
        """Octets of the messages in the live states (not ``corrupt``)."""
        return sum(self._bytes[s] for s in LIVE_STATES)

    def listing(self) -> Listing:
        """Every message file and sidecar, per state (blocking: a few
        directory reads; run it in a thread).  For ``apply_listing``, and
        for the queue manager to learn what tools changed."""
        out = Listing()
        for state in STATES:
            out.sizes[state] = dict(_files(self.state_dir(state, MESSAGE_DIR)))
            names = _names(self.state_dir(state, ENVELOPE_DIR))
            out.complete[state] = {
                n[: -len(ENVELOPE_SUFFIX)]
                for n in names
                if n.endswith(ENVELOPE_SUFFIX) and n[: -len(ENVELOPE_SUFFIX)] in out.sizes[state]
            }
        return out

    def apply_listing(self, listing: Listing) -> None:
        """Take counts and sizes from a listing (see ``refresh``)."""
        self._where.clear()
        self._counts = dict.fromkeys(STATES, 0)
        self._bytes = dict.fromkeys(STATES, 0)
        for state in STATES:
            for name, size in listing.sizes.get(state, {}).items():
                self._add(state, name, size)

    def refresh(self) -> None:
        """Re-read counts and sizes from the directories (no sidecars): for
        after ``mta queue`` tools changed the queue behind this process."""
        self._where.clear()
        self._counts = dict.fromkeys(STATES, 0)
        self._bytes = dict.fromkeys(STATES, 0)
        for state in STATES:
            for name, size in _files(self.state_dir(state, MESSAGE_DIR)):
                self._add(state, name, size)

    # -- the tools' operations -----------------------------------------------------------
    #
    # `mta queue hold|release|requeue|delete` and `mta sendmail` run in their own
    # process while the daemon runs.  Rules: a tool never touches `active` while
    # the daemon runs (it asks the daemon instead: mta.queue.trigger); it acts
    # only on a message whose sidecar sits beside it (else a commit or a move is
    # under way: BUSY); it acts by renames, which are atomic, so of a tool and
    # the daemon racing for one message exactly one wins and the other sees the
    # file gone; and it tolerates that (looks again, or ABSENT).  A sidecar is
    # only ever rewritten in `hold`, where the daemon never looks.

    def tool_move(
        self,
        queue_id: str,
        dst_state: str,
        *,
        sources: tuple[str, ...] = LIVE_STATES,
        edit: Callable[[Envelope], None] | None = None,
        allow_active: bool = False,
    ) -> ToolResult:
        """Move a message found in one of ``sources`` to ``dst_state`` (not
        ``active``), durably (blocking fsync).  ``edit`` changes the sidecar
        on the way: the message passes through ``hold`` for that.
        ``allow_active``: the daemon is not running, so ``active`` is fair
        game.  Raises ValueError for a sidecar that cannot be read (the
        message is then left in ``hold``)."""
        if dst_state == "active":
            raise ValueError("the tools never move messages into active")
        _check(dst_state, queue_id)
        for _ in range(3):
            src = self._tool_source(queue_id, allow_active)
            if isinstance(src, ToolResult):
                return src
            if src not in sources:
                return ToolResult.ABSENT
            if src == dst_state and edit is None:
                return ToolResult.UNCHANGED
            via = "hold" if edit is not None else dst_state
            if src != via and not self._tool_rename(queue_id, src, via):
                continue  # the daemon or another tool got there first: look again
            if edit is not None:
                self._tool_edit(queue_id, edit)
                if dst_state != "hold":
                    self._tool_rename(queue_id, "hold", dst_state)
            return ToolResult.MOVED
        return ToolResult.ABSENT

    def tool_delete(
        self,
        queue_id: str,
        *,
        sources: tuple[str, ...] = STATES,
        allow_active: bool = False,
    ) -> ToolResult:
        """Delete a message found in one of ``sources``, durably."""
        _check_id(queue_id)
        for _ in range(3):
            src = self._tool_source(queue_id, allow_active)
            if isinstance(src, ToolResult):
                return src
            if src not in sources:
                return ToolResult.ABSENT
            tomb = self.state_dir(src, TMP_DIR) / (queue_id + DELETED_SUFFIX)
            try:
                os.rename(self.message_path(src, queue_id), tomb)
            except FileNotFoundError:
                continue
            _unlink_quietly(self.envelope_path(src, queue_id))
            _unlink_quietly(tomb)
            if src == "corrupt":
                _unlink_quietly(self.state_dir(src, NOTE_DIR) / queue_id)
            for sub in (MESSAGE_DIR, ENVELOPE_DIR):
                fsync_path(self.state_dir(src, sub), self._fsync)
            self._removed(queue_id, src)
            return ToolResult.DELETED
        return ToolResult.ABSENT

    def _tool_source(self, queue_id: str, allow_active: bool = False) -> str | ToolResult:
        """The state a tool may take the message from, or why it may not."""
        src = self.find(queue_id)
        if src is None:
            return ToolResult.ABSENT
        if src == "active" and not allow_active:
            return ToolResult.BUSY
        # The daemon never writes into corrupt, where a file may well lack
        # its sidecar; elsewhere a missing one means a move is under way.
        if src != "corrupt" and not self.envelope_path(src, queue_id).exists():
            return ToolResult.BUSY
        return src

    def _tool_rename(self, queue_id: str, src: str, dst: str) -> bool:
        """Message, then sidecar, from ``src`` to ``dst``, durably; False
        when the message left ``src`` before we could take it."""
        dst_msg = self.message_path(dst, queue_id)
        try:
            os.rename(self.message_path(src, queue_id), dst_msg)
        except FileNotFoundError:
            return False
        self._tool_carry_envelope(queue_id, src, dst)
        for sub in (MESSAGE_DIR, ENVELOPE_DIR):
            fsync_path(self.state_dir(dst, sub), self._fsync)
        self._moved(queue_id, src, dst, dst_msg)
        return True

    def _tool_edit(self, queue_id: str, edit: Callable[[Envelope], None]) -> None:
        """Rewrite the sidecar of a held message atomically and durably."""
        final = self.envelope_path("hold", queue_id)
        envelope = Envelope.from_json(final.read_bytes())
        if envelope.queue_id != queue_id:
            raise ValueError(f"envelope names another queue id: {envelope.queue_id!r}")
        edit(envelope)
        name = f"{queue_id}{ENVELOPE_SUFFIX}.{secrets.token_hex(4)}"
        tmp = self.state_dir("hold", TMP_DIR) / name
        fd = _write_new(tmp, envelope.to_json(), self._owner)
        try:
            self._fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink_quietly(tmp)
            raise
        os.close(fd)
        try:
            os.rename(tmp, final)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        fsync_path(final.parent, self._fsync)

    def _tool_carry_envelope(self, queue_id: str, src: str, dst: str) -> None:
        """Bring the sidecar after the message.  It was beside the message in
        ``src`` when we looked; should another tool have raced us, fetch it
        from wherever it went (never from active)."""
        dst_env = self.envelope_path(dst, queue_id)
        for state in (src, *(s for s in STATES if s not in (src, dst, "active"))):
            try:
                os.rename(self.envelope_path(state, queue_id), dst_env)
                return
            except FileNotFoundError:
                continue
        if not dst_env.exists():
            log.warning("%s: envelope not found after move to %s", queue_id, dst)

    # -- recovery ---------------------------------------------------------------------------
    def recover(self) -> list[tuple[str, Envelope]]:
        """Reconcile every half-done step, once at start (it blocks).

        Finishes interrupted deletes and moves, removes what was never
        acknowledged and every temporary file, quarantines what cannot be
        understood into ``corrupt`` (with a note saying why), and returns
        every live message with its state, in id order; messages found in
        ``active`` are returned as such (the caller requeues them).  Never
        raises for a bad file; sets the counts.  No fsync: each step is
        idempotent, so a crash during recovery is recovered next time.
        """
        self.create_layout()
        self._where.clear()
        self._counts = dict.fromkeys(STATES, 0)
        self._bytes = dict.fromkeys(STATES, 0)
        for state in STATES:
            self._recover_tmp(state)
        messages: dict[str, list[str]] = {}
        envelopes: dict[str, list[str]] = {}
        for state in LIVE_STATES:
            for path in self._entries(state, NEW_DIR):
                self._quarantine_stray(path, MESSAGE_DIR, "unexpected file in new/")
            for path in self._entries(state, MESSAGE_DIR):
                if is_queue_id(path.name):
                    messages.setdefault(path.name, []).append(state)
                else:
                    self._quarantine_stray(path, MESSAGE_DIR, "file name is not a queue id")
            for path in self._entries(state, ENVELOPE_DIR):
                queue_id = path.name.removesuffix(ENVELOPE_SUFFIX)
                if path.name.endswith(ENVELOPE_SUFFIX) and is_queue_id(queue_id):
                    envelopes.setdefault(queue_id, []).append(state)
                else:
                    self._quarantine_stray(path, ENVELOPE_DIR, "file name is not ID.json")
        live: list[tuple[str, Envelope]] = []
        for queue_id in sorted(messages.keys() | envelopes.keys()):
            try:
                found = self._reconcile(
                    queue_id, messages.get(queue_id, []), envelopes.get(queue_id, [])
                )
            except OSError as e:
                log.error("%s: recovery failed, left as it is: %s", queue_id, e)
                continue
            if found is not None:
                live.append(found)
        for name, size in _files(self.state_dir("corrupt", MESSAGE_DIR)):
            self._add("corrupt", name, size)
        return live

    def _recover_tmp(self, state: str) -> None:
        for path in self._entries(state, TMP_DIR):
            queue_id = path.name.removesuffix(DELETED_SUFFIX)
            if path.name.endswith(DELETED_SUFFIX) and is_queue_id(queue_id):
                # An interrupted delete: its message is gone, finish the sidecar.
                _unlink_quietly(self.envelope_path(state, queue_id))
            log.info("recovery: removing %s", path.relative_to(self.root))
            _unlink_quietly(path)

    def _reconcile(
        self, queue_id: str, msg_states: list[str], env_states: list[str]
    ) -> tuple[str, Envelope] | None:
        if not env_states:
            for state in msg_states:
                if state == "incoming":
                    # Renamed into place, sidecar not: never acknowledged.
                    log.info("recovery: %s: removing unacknowledged message", queue_id)
                    _unlink_quietly(self.message_path(state, queue_id))
                else:
                    self._quarantine(queue_id, state, None, "envelope sidecar missing")
            return None
        if not msg_states:
            for state in env_states:
                self._quarantine(queue_id, None, state, "message file missing")
            return None
        # Its state is where the message file is; prefer the copy with a
        # sidecar should a crash have left the file in two directories.
        beside = [s for s in msg_states if s in env_states]
        state = beside[0] if beside else msg_states[0]
        final_msg = self.message_path(state, queue_id)
        for other in msg_states:
            if other != state:
                self._drop_copy(queue_id, other, MESSAGE_DIR, final_msg)
        final_env = self.envelope_path(state, queue_id)
        if state not in env_states:
            source = env_states[0]
            log.info("recovery: %s: completing move %s -> %s", queue_id, source, state)
            os.rename(self.envelope_path(source, queue_id), final_env)
        else:
            source = state
        for other in env_states:
            if other not in (source, state):
                self._drop_copy(queue_id, other, ENVELOPE_DIR, final_env)
        try:
            envelope = Envelope.from_json(final_env.read_bytes())
        except ValueError as e:
            self._quarantine(queue_id, state, state, f"unreadable envelope: {e}")
            return None
        if envelope.queue_id != queue_id:
            self._quarantine(
                queue_id, state, state, f"envelope names another queue id: {envelope.queue_id!r}"
            )
            return None
        size = final_msg.stat().st_size
        if envelope.size <= 0:
            envelope.size = size
        self._add(state, queue_id, size)
        return state, envelope

    def _drop_copy(self, queue_id: str, state: str, sub: str, kept: Path) -> None:
        """A second directory entry for a file that a crash left behind a
        rename: the same file is unlinked, a different one quarantined."""
        path = (
            self.message_path(state, queue_id)
            if sub == MESSAGE_DIR
            else self.envelope_path(state, queue_id)
        )
        if os.path.samefile(path, kept):
            _unlink_quietly(path)
        else:
            self._quarantine_stray(path, sub, f"second copy of {queue_id} beside {kept}")

    # -- quarantine -----------------------------------------------------------------------------
    def _quarantine(
        self, queue_id: str, msg_state: str | None, env_state: str | None, reason: str
    ) -> str:
        files: list[tuple[Path, str]] = []
        if msg_state is not None:
            files.append((self.message_path(msg_state, queue_id), MESSAGE_DIR))
        if env_state is not None:
            files.append((self.envelope_path(env_state, queue_id), ENVELOPE_DIR))
        return self._to_corrupt(queue_id, files, reason)

    def _quarantine_stray(self, path: Path, sub: str, reason: str) -> None:
        self._to_corrupt(new_queue_id(), [(path, sub)], reason)

    def _to_corrupt(self, name: str, files: list[tuple[Path, str]], reason: str) -> str:
        """Move ``files`` into ``corrupt`` under ``name`` (a fresh one if
        taken) and write the reason to ``corrupt/note/NAME``; returns NAME."""
        while any(self._corrupt_path(name, sub).exists() for sub in (MESSAGE_DIR, ENVELOPE_DIR)):
            name = new_queue_id()
        lines = [f"reason: {reason}", f"time: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"]
        for path, sub in files:
            dst = self._corrupt_path(name, sub)
            try:
                os.rename(path, dst)
            except OSError as e:
                log.error("cannot quarantine %s: %s", path, e)
                continue
            lines.append(f"file: {path.relative_to(self.root)} -> {dst.relative_to(self.root)}")
            log.warning(
                "queue: %s quarantined as %s: %s", path.relative_to(self.root), name, reason
            )
        try:
            _write_all(
                self.state_dir("corrupt", NOTE_DIR) / name, "\n".join(lines) + "\n", self._owner
            )
        except OSError as e:
            log.error("cannot write note for %s: %s", name, e)
        return name

    def _corrupt_path(self, name: str, sub: str) -> Path:
        suffix = ENVELOPE_SUFFIX if sub == ENVELOPE_DIR else ""
        return self.state_dir("corrupt", sub) / (name + suffix)

    def _entries(self, state: str, sub: str) -> Iterator[Path]:
        """Regular files in STATE/SUB, skipping dot files (NFS, editors);
        other kinds of entry are left alone and reported."""
        directory = self.state_dir(state, sub)
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except OSError as e:
            log.error("cannot read %s: %s", directory, e)
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                regular = entry.is_file(follow_symlinks=False)
            except OSError:
                continue
            if regular:
                yield Path(entry.path)
            else:
                log.warning("queue: ignoring %s: not a regular file", entry.path)

    # -- bookkeeping ----------------------------------------------------------------------------
    def _adopt(self, fd: int) -> None:
        """Give a file this process created to the queue's owner (tools run
        by root beside a daemon that runs as mail_owner)."""
        if self._owner is not None:
            os.fchown(fd, *self._owner)

    def _need_syncer(self) -> GroupSyncer:
        if self._syncer is None:
            raise RuntimeError("this QueueStore has no syncer: tool operations only")
        return self._syncer

    def _add(self, state: str, queue_id: str, size: int) -> None:
        self._counts[state] += 1
        self._bytes[state] += size
        if state != "corrupt":
            self._where[queue_id] = (state, size)

    def _removed(self, queue_id: str, state: str) -> None:
        _, size = self._where.pop(queue_id, (state, 0))
        self._counts[state] = max(0, self._counts[state] - 1)
        self._bytes[state] = max(0, self._bytes[state] - size)

    def _moved(self, queue_id: str, src: str, dst: str, path: Path) -> None:
        known = self._where.get(queue_id)
        if known is not None:
            size = known[1]
        else:
            try:
                size = path.stat().st_size
            except OSError:
                size = 0
        self._removed(queue_id, src)
        self._add(dst, queue_id, size)


def _check(state: str, queue_id: str) -> None:
    _check_state(state)
    _check_id(queue_id)


def _check_state(state: str) -> None:
    if state not in STATES:
        raise ValueError(f"unknown queue state: {state!r}")


def _check_id(queue_id: str) -> None:
    # Also what keeps a name typed at a tool from reaching outside the queue.
    if not is_queue_id(queue_id):
        raise ValueError(f"not a queue id: {queue_id!r}")


def _files(directory: Path) -> Iterator[tuple[str, int]]:
    """(name, size) of the queue-id-named files in a directory."""
    try:
        with os.scandir(directory) as it:
            entries = list(it)
    except OSError as e:
        log.error("cannot read %s: %s", directory, e)
        return
    for entry in entries:
        if not is_queue_id(entry.name):
            continue
        try:
            yield entry.name, entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue  # gone meanwhile


def _names(directory: Path) -> list[str]:
    try:
        with os.scandir(directory) as it:
            return [e.name for e in it]
    except OSError as e:
        log.error("cannot read %s: %s", directory, e)
        return []


def _write_new(path: Path, data: bytes, owner: tuple[int, int] | None = None) -> int:
    """Create ``path`` (it must not exist), write ``data``; return the open
    descriptor for fsync.  On error nothing is left behind."""
    fd = os.open(path, _CREATE_FLAGS, _FILE_MODE)
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        _unlink_quietly(path)
        raise
    return fd


def _write_all(path: Path, text: str, owner: tuple[int, int] | None = None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, _FILE_MODE)
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        view = memoryview(text.encode("utf-8", "surrogateescape"))
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        log.error("cannot remove %s: %s", path, e)
