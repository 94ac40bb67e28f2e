"""QueueStore: durable commit, moves, updates, deletes, the tools' operations,
crash recovery at every step, quarantine of what cannot be read, and the
counts kept in memory."""

from __future__ import annotations

import errno
import json
import mailbox
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

from mta.envelope import Envelope, RcptState, Recipient
from mta.queue.store import STATES, QueueStore, ToolResult
from mta.queue.sync import GroupSyncer

MESSAGE = b"Received: from client by mta\r\nSubject: hi\r\n\r\nbody\r\n"


class CountingFsync:
    """os.fsync that counts, can wait, and can fail for paths matching a
    suffix (to simulate ENOSPC/EIO at a chosen step)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.fail_suffix: str | None = None
        self.fail_files = False
        self.delay = 0.0
        self._lock = threading.Lock()

    def __call__(self, fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        with self._lock:
            self.calls.append((path, is_dir))
        if self.delay:
            time.sleep(self.delay)
        if self.fail_files and not is_dir:
            raise OSError(errno.ENOSPC, "No space left on device")
        if self.fail_suffix and path.endswith(self.fail_suffix):
            raise OSError(errno.EIO, "Input/output error")
        os.fsync(fd)

    def dirs(self) -> list[str]:
        return [p for p, is_dir in self.calls if is_dir]


@pytest.fixture
def fsync() -> CountingFsync:
    return CountingFsync()


@pytest.fixture
def syncer(fsync: CountingFsync) -> Iterator[GroupSyncer]:
    s = GroupSyncer(reactor, threadpool_size=16, fsync=fsync)
    s.start()
    yield s
    s.stop()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "queue"


@pytest.fixture
def store(root: Path, syncer: GroupSyncer) -> QueueStore:
    s = QueueStore(root, syncer)
    s.create_layout()
    return s


def envelope(queue_id: str, **kw: object) -> Envelope:
    return Envelope(
        queue_id=queue_id,
        sender="sender@example.com",
        recipients=[Recipient("rcpt@example.net")],
        arrival_time=1_700_000_000.0,
        **kw,  # type: ignore[arg-type]
    )


async def queue_one(store: QueueStore, data: bytes = MESSAGE) -> str:
    msg = store.begin()
    msg.write(data)
    await store.commit(msg, envelope(msg.queue_id))
    return msg.queue_id


def files_under(root: Path) -> list[str]:
    """Every regular file below root, relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# -- layout ---------------------------------------------------------------------


def test_layout_is_one_maildir_per_state(root: Path) -> None:
    """Each state is a maildir (tmp/new/cur) with an envelope directory beside;
    corrupt has notes; pid/ exists."""
    QueueStore(root).create_layout()
    for state in STATES:
        for sub in ("tmp", "new", "cur", "envelope"):
            assert (root / state / sub).is_dir()
    assert (root / "corrupt" / "note").is_dir()
    assert (root / "pid").is_dir()
    assert stat.S_IMODE((root / "incoming" / "cur").stat().st_mode) == 0o700


def test_layout_creation_is_durable_and_idempotent(root: Path, fsync: CountingFsync) -> None:
    """New directories' parents are fsynced; a second call creates nothing."""
    s = QueueStore(root, GroupSyncer(reactor, fsync=fsync))
    s.create_layout()
    assert str(root) in fsync.dirs() and str(root / "incoming") in fsync.dirs()
    fsync.calls.clear()
    s.create_layout()
    assert fsync.calls == []


# -- receiving ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_commit_puts_message_and_sidecar_in_place(store: QueueStore, root: Path) -> None:
    """After commit: the message in incoming/cur/ID byte for byte, a readable
    JSON sidecar in incoming/envelope/ID.json, nothing left in tmp."""
    queue_id = await queue_one(store)
    assert (root / "incoming/cur" / queue_id).read_bytes() == MESSAGE
    raw = (root / "incoming/envelope" / f"{queue_id}.json").read_bytes()
    assert json.loads(raw)["queue_id"] == queue_id
    env = Envelope.from_json(raw)
    assert env.size == len(MESSAGE)
    assert store.load("incoming", queue_id) == env
    assert files_under(root) == [f"incoming/cur/{queue_id}", f"incoming/envelope/{queue_id}.json"]
    assert store.find(queue_id) == "incoming"


@pytest_twisted.ensureDeferred
async def test_commit_fsyncs_files_then_directories(
    store: QueueStore, root: Path, fsync: CountingFsync
) -> None:
    """Both files are fsynced, and the message directory before the envelope
    directory (the sidecar must never be durable without its message)."""
    fsync.calls.clear()  # forget the layout's
    queue_id = await queue_one(store)
    files = [p for p, is_dir in fsync.calls if not is_dir]
    assert len(files) == 2
    dirs = fsync.dirs()
    assert dirs == [str(root / "incoming/cur"), str(root / "incoming/envelope")]
    assert queue_id


@pytest_twisted.ensureDeferred
async def test_committed_messages_are_a_maildir_for_mail_readers(
    store: QueueStore, root: Path
) -> None:
    """A maildir reader sees exactly the queued messages, not the sidecars."""
    ids = {await queue_one(store) for _ in range(3)}
    box = mailbox.Maildir(root / "incoming", create=False)
    assert set(box.keys()) == ids
    assert all(m["Subject"] == "hi" for m in box)


def test_abort_leaves_nothing(store: QueueStore, root: Path) -> None:
    """An aborted message leaves no file; abort twice is harmless."""
    msg = store.begin()
    msg.write(MESSAGE)
    assert msg.path.exists() and msg.size == len(MESSAGE)
    msg.abort()
    msg.abort()
    assert files_under(root) == []
    with pytest.raises(ValueError):
        msg.write(b"more")


@pytest_twisted.ensureDeferred
async def test_abort_after_commit_keeps_the_message(store: QueueStore, root: Path) -> None:
    """abort() once committed does not remove an acknowledged message."""
    msg = store.begin()
    msg.write(MESSAGE)
    await store.commit(msg, envelope(msg.queue_id))
    msg.abort()
    assert store.find(msg.queue_id) == "incoming"


@pytest_twisted.ensureDeferred
async def test_commit_rejects_an_envelope_of_another_message(store: QueueStore) -> None:
    """The envelope must name the message's id."""
    msg = store.begin()
    with pytest.raises(ValueError):
        await store.commit(msg, envelope("SomethingElse"))
    msg.abort()


class FullDisk:
    """A file object whose writes fail like a full file system."""

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def fileno(self) -> int:
        raise AssertionError("not reached")

    def close(self) -> None:
        pass


@pytest_twisted.ensureDeferred
async def test_enospc_while_writing_leaves_nothing(store: QueueStore, root: Path) -> None:
    """A failed write raises, is remembered, and commit raises it and cleans up."""
    msg = store.begin()
    msg._file = FullDisk()  # type: ignore[assignment]
    with pytest.raises(OSError):
        msg.write(MESSAGE)
    assert msg.failed is not None and msg.failed.errno == errno.ENOSPC
    with pytest.raises(OSError) as info:
        await store.commit(msg, envelope(msg.queue_id))
    assert info.value.errno == errno.ENOSPC
    assert files_under(root) == []
    assert store.counts()["incoming"] == 0


@pytest_twisted.ensureDeferred
async def test_enospc_at_file_fsync_leaves_nothing(
    store: QueueStore, root: Path, fsync: CountingFsync
) -> None:
    """A failed file fsync fails the commit and removes both files."""
    fsync.fail_files = True
    msg = store.begin()
    msg.write(MESSAGE)
    with pytest.raises(OSError):
        await store.commit(msg, envelope(msg.queue_id))
    assert files_under(root) == []


@pytest.mark.parametrize("failing_dir", ["incoming/cur", "incoming/envelope"])
@pytest_twisted.ensureDeferred
async def test_failed_directory_fsync_removes_everything(
    store: QueueStore, root: Path, fsync: CountingFsync, failing_dir: str
) -> None:
    """Even after the renames, a failed directory fsync means no 250: the
    message and its sidecar are removed and the error raised."""
    fsync.fail_suffix = failing_dir
    msg = store.begin()
    msg.write(MESSAGE)
    with pytest.raises(OSError):
        await store.commit(msg, envelope(msg.queue_id))
    assert files_under(root) == []
    assert store.counts()["incoming"] == 0


@pytest_twisted.ensureDeferred
async def test_fifty_concurrent_commits_share_directory_fsyncs(
    store: QueueStore, fsync: CountingFsync
) -> None:
    """50 commits at once need two directory fsyncs each if done one by one
    (100); grouped, they take far fewer."""
    fsync.delay = 0.005
    ids = await gatherResults([Deferred.fromCoroutine(queue_one(store)) for _ in range(50)])
    assert len(set(ids)) == 50
    assert store.counts()["incoming"] == 50
    assert len(fsync.dirs()) <= 25, len(fsync.dirs())


# -- the daemon's operations ---------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_move_renames_message_and_sidecar(store: QueueStore, root: Path) -> None:
    """move() carries both files; moving from the wrong state raises."""
    queue_id = await queue_one(store)
    store.move(queue_id, "incoming", "active")
    assert files_under(root) == [f"active/cur/{queue_id}", f"active/envelope/{queue_id}.json"]
    assert store.find(queue_id) == "active"
    with pytest.raises(FileNotFoundError):
        store.move(queue_id, "incoming", "deferred")
    assert store.counts()["active"] == 1 and store.counts()["incoming"] == 0


@pytest_twisted.ensureDeferred
async def test_move_puts_the_message_back_if_the_sidecar_cannot_follow(
    store: QueueStore, root: Path
) -> None:
    """A move whose sidecar rename fails undoes the message rename."""
    queue_id = await queue_one(store)
    (root / "incoming/envelope" / f"{queue_id}.json").unlink()
    with pytest.raises(FileNotFoundError):
        store.move(queue_id, "incoming", "active")
    assert (root / "incoming/cur" / queue_id).exists()


@pytest_twisted.ensureDeferred
async def test_move_durable_syncs_the_destination(
    store: QueueStore, root: Path, fsync: CountingFsync
) -> None:
    """move_durable fsyncs the destination's message and envelope directories."""
    queue_id = await queue_one(store)
    fsync.calls.clear()
    await store.move_durable(queue_id, "incoming", "deferred")
    assert sorted(fsync.dirs()) == [str(root / "deferred/cur"), str(root / "deferred/envelope")]


@pytest_twisted.ensureDeferred
async def test_update_replaces_the_sidecar_atomically(store: QueueStore, root: Path) -> None:
    """update() writes the new envelope in place and leaves no temporary file."""
    queue_id = await queue_one(store)
    store.move(queue_id, "incoming", "active")
    env = store.load("active", queue_id)
    env.attempts = 3
    env.recipients[0].state = RcptState.DEFERRED
    await store.update("active", env)
    assert store.load("active", queue_id) == env
    assert list((root / "active/tmp").iterdir()) == []
    with pytest.raises(FileNotFoundError):
        await store.update("deferred", env)


@pytest_twisted.ensureDeferred
async def test_delete_removes_both_files(store: QueueStore, root: Path) -> None:
    """delete() leaves nothing and updates the counts."""
    queue_id = await queue_one(store)
    store.delete("incoming", queue_id)
    assert files_under(root) == []
    assert store.find(queue_id) is None
    assert store.counts()["incoming"] == 0 and store.total_bytes() == 0
    with pytest.raises(FileNotFoundError):
        store.delete("incoming", queue_id)


def test_bad_names_never_reach_the_file_system(store: QueueStore) -> None:
    """Ids and states are validated: nothing outside the queue can be named."""
    assert store.find("../../etc/passwd") is None
    with pytest.raises(ValueError):
        store.message_path("incoming", "../x")
    with pytest.raises(ValueError):
        store.move("abc", "incoming", "nowhere")
    with pytest.raises(ValueError):
        store.tool_move("a/b", "hold")


@pytest_twisted.ensureDeferred
async def test_counts_and_bytes_follow_every_operation(store: QueueStore) -> None:
    """counts() and total_bytes() track commit, move and delete without disk scans."""
    a = await queue_one(store, b"x" * 100)
    b = await queue_one(store, b"y" * 50)
    assert store.counts() == {"incoming": 2, "active": 0, "deferred": 0, "hold": 0, "corrupt": 0}
    assert store.total_bytes() == 150
    store.move(a, "incoming", "active")
    store.move(a, "active", "deferred")
    store.move(b, "incoming", "hold")
    assert store.counts()["deferred"] == 1 and store.counts()["hold"] == 1
    assert store.total_bytes() == 150
    store.delete("deferred", a)
    assert store.counts()["deferred"] == 0 and store.total_bytes() == 50


def test_async_operations_need_a_syncer(root: Path) -> None:
    """A tools-only store (no syncer) refuses commits instead of skipping fsync."""
    s = QueueStore(root)
    s.create_layout()
    msg = s.begin()
    coro = s.commit(msg, envelope(msg.queue_id))
    with pytest.raises(RuntimeError):
        coro.send(None)
    msg.abort()


# -- the tools -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_tool_move_hold_and_release(store: QueueStore, root: Path) -> None:
    """A tools-only store in "another process" holds and releases a message;
    the daemon's store sees the change after refresh()."""
    queue_id = await queue_one(store)
    store.move(queue_id, "incoming", "deferred")
    tools = QueueStore(root)
    assert tools.tool_move(queue_id, "hold") is ToolResult.MOVED
    assert files_under(root) == [f"hold/cur/{queue_id}", f"hold/envelope/{queue_id}.json"]
    assert tools.tool_move(queue_id, "hold") is ToolResult.UNCHANGED
    assert store.counts()["deferred"] == 1  # stale until told
    store.refresh()
    assert store.counts()["deferred"] == 0 and store.counts()["hold"] == 1
    assert tools.tool_move(queue_id, "deferred") is ToolResult.MOVED
    assert store.find(queue_id) == "deferred"


@pytest_twisted.ensureDeferred
async def test_tools_never_touch_active(store: QueueStore, root: Path) -> None:
    """A message in active is the daemon's: the tools answer BUSY."""
    queue_id = await queue_one(store)
    store.move(queue_id, "incoming", "active")
    tools = QueueStore(root)
    assert tools.tool_move(queue_id, "hold") is ToolResult.BUSY
    assert tools.tool_delete(queue_id) is ToolResult.BUSY
    with pytest.raises(ValueError):
        tools.tool_move(queue_id, "active")
    assert store.find(queue_id) == "active"


def test_tools_wait_for_a_commit_in_progress(root: Path) -> None:
    """A message in incoming/cur without its sidecar is mid-commit: BUSY."""
    tools = QueueStore(root)
    tools.create_layout()
    (root / "incoming/cur/Q1").write_bytes(MESSAGE)
    assert tools.tool_move("Q1", "hold") is ToolResult.BUSY
    assert tools.tool_delete("Q1") is ToolResult.BUSY


@pytest_twisted.ensureDeferred
async def test_tool_delete(store: QueueStore, root: Path) -> None:
    """tool_delete removes a queued message; a second time it is ABSENT."""
    queue_id = await queue_one(store)
    store.move(queue_id, "incoming", "deferred")
    tools = QueueStore(root)
    assert tools.tool_delete(queue_id) is ToolResult.DELETED
    assert files_under(root) == []
    assert tools.tool_delete(queue_id) is ToolResult.ABSENT
    assert tools.tool_move("NoSuchId", "hold") is ToolResult.ABSENT


def test_tools_clean_up_corrupt(cold: QueueStore, root: Path) -> None:
    """A quarantined message without a sidecar can still be deleted by the
    tools, note and all."""
    put(root, "deferred/cur/Q1")
    cold.recover()
    assert (root / "corrupt/note/Q1").exists()
    assert cold.tool_delete("Q1") is ToolResult.DELETED
    assert files_under(root) == []


@pytest_twisted.ensureDeferred
async def test_tool_move_loses_a_race_gracefully(
    store: QueueStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the message leaves between the look and the rename (the daemon won
    the race), the tool looks again instead of failing."""
    queue_id = await queue_one(store)
    store.move(queue_id, "incoming", "deferred")
    tools = QueueStore(root)
    real = tools._tool_source
    stale = iter(["incoming"])  # where it was a moment ago
    monkeypatch.setattr(
        tools, "_tool_source", lambda q, allow_active=False: next(stale, None) or real(q)
    )
    assert tools.tool_move(queue_id, "hold") is ToolResult.MOVED
    assert store.find(queue_id) == "hold"


# -- recovery: every crash point ----------------------------------------------------------


def put(root: Path, rel: str, data: bytes = MESSAGE) -> Path:
    path = root / rel
    path.write_bytes(data)
    return path


def sidecar(queue_id: str, **kw: object) -> bytes:
    return envelope(queue_id, **kw).to_json()


@pytest.fixture
def cold(root: Path) -> QueueStore:
    """A store as at daemon start, before recover(); no reactor needed."""
    s = QueueStore(root)
    s.create_layout()
    return s


# (files present after the crash) -> (expected files after recovery, expected result)
CRASHES = {
    "commit: writing the message": (
        ["incoming/tmp/Q1"],
        [],
        [],
    ),
    "commit: both files written, not renamed": (
        ["incoming/tmp/Q1", "incoming/tmp/Q1.json"],
        [],
        [],
    ),
    "commit: message renamed, sidecar not (never acknowledged)": (
        ["incoming/cur/Q1", "incoming/tmp/Q1.json"],
        [],
        [],
    ),
    "commit: done": (
        ["incoming/cur/Q1", "incoming/envelope/Q1.json"],
        ["incoming/cur/Q1", "incoming/envelope/Q1.json"],
        [("incoming", "Q1")],
    ),
    "move: message moved, sidecar not": (
        ["active/cur/Q1", "deferred/envelope/Q1.json"],
        ["active/cur/Q1", "active/envelope/Q1.json"],
        [("active", "Q1")],
    ),
    "move: not started": (
        ["deferred/cur/Q1", "deferred/envelope/Q1.json"],
        ["deferred/cur/Q1", "deferred/envelope/Q1.json"],
        [("deferred", "Q1")],
    ),
    "move: tool's move to hold half done": (
        ["hold/cur/Q1", "deferred/envelope/Q1.json"],
        ["hold/cur/Q1", "hold/envelope/Q1.json"],
        [("hold", "Q1")],
    ),
    "delete: message renamed away": (
        ["deferred/tmp/Q1.deleted", "deferred/envelope/Q1.json"],
        [],
        [],
    ),
    "delete: sidecar removed too": (
        ["deferred/tmp/Q1.deleted"],
        [],
        [],
    ),
    "update: new sidecar written, not renamed": (
        ["active/cur/Q1", "active/envelope/Q1.json", "active/tmp/Q1.json.1a2b3c4d"],
        ["active/cur/Q1", "active/envelope/Q1.json"],
        [("active", "Q1")],
    ),
}


@pytest.mark.parametrize("case", sorted(CRASHES))
def test_recover_after_crash(cold: QueueStore, root: Path, case: str) -> None:
    """For each crash point of commit, move, delete and update, recovery
    leaves exactly the right files and returns exactly the live messages."""
    before, after, live = CRASHES[case]
    for rel in before:
        put(root, rel, sidecar("Q1") if ".json" in rel else MESSAGE)
    result = cold.recover()
    assert files_under(root) == sorted(after)
    assert [(state, env.queue_id) for state, env in result] == live
    assert cold.counts()["corrupt"] == 0
    assert sum(cold.counts().values()) == len(live)


def test_recover_a_rename_left_in_two_directories(cold: QueueStore, root: Path) -> None:
    """A crash can leave a renamed file linked in both directories: the copy
    beside the sidecar wins and the other link goes."""
    put(root, "deferred/cur/Q1")
    os.link(root / "deferred/cur/Q1", root / "active/cur/Q1")
    put(root, "active/envelope/Q1.json", sidecar("Q1"))
    put(root, "deferred/cur/Q2")
    os.link(root / "deferred/cur/Q2", root / "hold/cur/Q2")
    put(root, "deferred/envelope/Q2.json", sidecar("Q2"))
    result = cold.recover()
    assert [(s, e.queue_id) for s, e in result] == [("active", "Q1"), ("deferred", "Q2")]
    assert files_under(root) == [
        "active/cur/Q1",
        "active/envelope/Q1.json",
        "deferred/cur/Q2",
        "deferred/envelope/Q2.json",
    ]


def test_recover_returns_envelopes_and_sets_counts(cold: QueueStore, root: Path) -> None:
    """Recovered envelopes are complete, sizes come from the files when the
    sidecar lacks them, and counts and bytes are set."""
    put(root, "deferred/cur/Q1", b"x" * 2048)
    put(root, "deferred/envelope/Q1.json", sidecar("Q1", attempts=2))
    put(root, "hold/cur/Q2", b"y" * 10)
    put(root, "hold/envelope/Q2.json", sidecar("Q2", size=10))
    result = dict((e.queue_id, (s, e)) for s, e in cold.recover())
    assert result["Q1"][0] == "deferred" and result["Q1"][1].attempts == 2
    assert result["Q1"][1].size == 2048
    assert cold.counts() == {"incoming": 0, "active": 0, "deferred": 1, "hold": 1, "corrupt": 0}
    assert cold.total_bytes() == 2058


# -- recovery: quarantine --------------------------------------------------------------------


def note_for(root: Path, original: str) -> str:
    """The note that mentions a quarantined original path."""
    for note in (root / "corrupt/note").iterdir():
        text = note.read_text()
        if original in text:
            return text
    raise AssertionError(f"no note mentions {original}")


CORRUPT = {
    "truncated JSON": (
        {"deferred/cur/Q1": MESSAGE, "deferred/envelope/Q1.json": sidecar("Q1")[:40]},
        "unreadable envelope",
    ),
    "JSON that is no envelope": (
        {"deferred/cur/Q1": MESSAGE, "deferred/envelope/Q1.json": b'{"queue_id": "Q1"}'},
        "unreadable envelope",
    ),
    "missing sidecar": ({"deferred/cur/Q1": MESSAGE}, "envelope sidecar missing"),
    "sidecar without message": (
        {"hold/envelope/Q1.json": sidecar("Q1")},
        "message file missing",
    ),
    "sidecar names another id": (
        {"deferred/cur/Q1": MESSAGE, "deferred/envelope/Q1.json": sidecar("Q9")},
        "names another queue id",
    ),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_unreadable_messages_are_quarantined(cold: QueueStore, root: Path, case: str) -> None:
    """What cannot be understood moves to corrupt, keeping its id, with a note
    saying why; recovery does not raise and returns the good messages."""
    files, reason = CORRUPT[case]
    for rel, data in files.items():
        put(root, rel, data)
    put(root, "deferred/cur/GOOD")
    put(root, "deferred/envelope/GOOD.json", sidecar("GOOD"))
    result = cold.recover()
    assert [(s, e.queue_id) for s, e in result] == [("deferred", "GOOD")]
    for rel, data in files.items():
        assert not (root / rel).exists()
        target = "corrupt/envelope/Q1.json" if rel.endswith(".json") else "corrupt/cur/Q1"
        assert (root / target).read_bytes() == data
        assert reason in note_for(root, rel)
    assert cold.counts()["corrupt"] == (1 if any("/cur/" in r for r in files) else 0)


def test_garbage_file_names_are_quarantined(cold: QueueStore, root: Path) -> None:
    """Files whose names are no queue id, and files in new/, go to corrupt
    under fresh names, each with a note naming the original."""
    put(root, "deferred/cur/not-an-id.txt", b"junk")
    put(root, "hold/envelope/README", b"junk")
    put(root, "active/new/1700000000.M1P2.host", MESSAGE)
    (root / "deferred/cur/subdir").mkdir()
    put(root, "deferred/cur/.nfs0001", b"in use")
    assert cold.recover() == []
    assert "file name is not a queue id" in note_for(root, "deferred/cur/not-an-id.txt")
    assert "not ID.json" in note_for(root, "hold/envelope/README")
    assert "unexpected file in new/" in note_for(root, "active/new/1700000000.M1P2.host")
    assert len(list((root / "corrupt/cur").iterdir())) == 2
    assert len(list((root / "corrupt/envelope").iterdir())) == 1
    # Left alone: a directory (not ours to remove) and a dot file (NFS).
    assert (root / "deferred/cur/subdir").is_dir()
    assert (root / "deferred/cur/.nfs0001").exists()


def test_quarantine_never_overwrites(cold: QueueStore, root: Path) -> None:
    """An id already in corrupt gets the new arrival a fresh name."""
    put(root, "corrupt/cur/Q1", b"old")
    put(root, "deferred/cur/Q1", b"new")
    cold.recover()
    assert (root / "corrupt/cur/Q1").read_bytes() == b"old"
    names = sorted(p.name for p in (root / "corrupt/cur").iterdir())
    assert len(names) == 2
    assert cold.counts()["corrupt"] == 2


def test_recovery_is_idempotent(cold: QueueStore, root: Path) -> None:
    """Recovering twice (a crash during recovery) gives the same queue."""
    put(root, "active/cur/Q1")
    put(root, "deferred/envelope/Q1.json", sidecar("Q1"))
    put(root, "deferred/cur/Q2")
    first = cold.recover()
    files = files_under(root)
    second = QueueStore(root).recover()
    assert [(s, e.queue_id) for s, e in first] == [(s, e.queue_id) for s, e in second]
    assert files_under(root) == files


@pytest_twisted.ensureDeferred
async def test_committed_messages_survive_a_restart(store: QueueStore, root: Path) -> None:
    """What commit acknowledged, a fresh store's recover() returns."""
    ids = [await queue_one(store) for _ in range(3)]
    store.move(ids[0], "incoming", "active")
    store.move(ids[1], "incoming", "hold")
    result = QueueStore(root).recover()
    assert sorted((e.queue_id, s) for s, e in result) == sorted(
        [(ids[0], "active"), (ids[1], "hold"), (ids[2], "incoming")]
    )
