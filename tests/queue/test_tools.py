"""``mta queue delete|hold|release|requeue`` on a queue directory: what each
does to the files and sidecars, ALL and ``-``, messages in active with and
without a daemon, busy and absent messages, and file ownership when root
works beside a daemon that runs as another user."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from mta.envelope import Envelope, RcptState, Recipient
from mta.queue import tools, trigger
from mta.queue.store import QueueStore
from mta.reply import Reply


def seed(root: Path, state: str, n: int = 1, **fields: object) -> list[str]:
    """Queue n messages as a tool would, then move them to ``state``."""
    store = QueueStore(root)
    store.create_layout()
    ids = []
    for _ in range(n):
        msg = store.begin()
        msg.write(b"Subject: s\r\n\r\nbody\r\n")
        env = Envelope(
            msg.queue_id,
            "a@example.org",
            [
                Recipient("done@example.net", RcptState.DELIVERED, Reply(250, "0.0", "ok")),
                Recipient("wait@example.net", RcptState.DEFERRED, Reply(450, "2.0", "busy")),
            ],
            1000.0,
            attempts=3,
            next_try=99999.0,
            warned=True,
            **fields,  # type: ignore[arg-type]
        )
        store.commit_blocking(msg, env)
        if state != "incoming":
            store.move(msg.queue_id, "incoming", state)
        ids.append(msg.queue_id)
    return ids


def test_hold_release_delete(tmp_path: Path) -> None:
    """hold moves a deferred message to hold; release brings it back to
    deferred due at once; delete removes message and sidecar."""
    [qid] = seed(tmp_path, "deferred")
    store = QueueStore(tmp_path)
    logged: list[str] = []
    out = tools.run(tmp_path, "hold", [qid], tools.DEFAULT_QUEUES["hold"], log=logged.append)
    assert out.done == [qid] and out.summary("hold") == "Placed on hold: 1 message"
    assert store.find(qid) == "hold"
    assert store.envelope_path("hold", qid).exists()
    out = tools.run(tmp_path, "release", [qid], ("hold",), log=logged.append)
    assert store.find(qid) == "deferred"
    env = store.load("deferred", qid)
    assert env.next_try == 0 and env.attempts == 3  # due now; history kept
    out = tools.run(tmp_path, "delete", [qid], tools.DEFAULT_QUEUES["delete"], log=logged.append)
    assert out.summary("delete") == "Deleted: 1 message"
    assert store.find(qid) is None
    assert not any(any((tmp_path / s / "envelope").iterdir()) for s in ("hold", "deferred"))
    assert logged == [f"{qid}: placed on hold", f"{qid}: released from hold", f"{qid}: removed"]


def test_release_ignores_messages_not_on_hold(tmp_path: Path) -> None:
    """release looks in hold only (postsuper -H): a deferred message is absent."""
    [qid] = seed(tmp_path, "deferred")
    out = tools.run(tmp_path, "release", [qid], ("hold",))
    assert out.absent == [qid] and out.summary("release") == "Released from hold: 0 messages"


def test_requeue_resets_the_envelope(tmp_path: Path) -> None:
    """requeue: to incoming, arrival now, attempts 0, no warning sent, the
    undelivered recipient pending again, the delivered one left alone, the
    smtpd HOLD mark dropped."""
    [qid] = seed(tmp_path, "hold", extra={"hold": "by access table"}, reason="held: x")
    out = tools.run(tmp_path, "requeue", [qid], tools.DEFAULT_QUEUES["requeue"], now=5000.0)
    assert out.done == [qid]
    env = QueueStore(tmp_path).load("incoming", qid)
    assert env.arrival_time == 5000.0 and env.attempts == 0 and not env.warned
    assert env.next_try == 0 and "hold" not in env.extra and env.reason == ""
    assert [r.state for r in env.recipients] == [RcptState.DELIVERED, RcptState.PENDING]
    assert env.recipients[1].reply is None


def test_all_and_queue_names(tmp_path: Path) -> None:
    """ALL acts on the action's default queues, ALL QUEUE on the named ones."""
    deferred = seed(tmp_path, "deferred", 3)
    held = seed(tmp_path, "hold", 2)
    out = tools.run(tmp_path, "delete", None, ("deferred",))
    assert sorted(out.done) == sorted(deferred)
    store = QueueStore(tmp_path)
    assert store.queue_ids("hold") == sorted(held)
    ids, queues = tools.parse_targets("delete", ["ALL"])
    assert ids is None and queues == ("hold", "incoming", "active", "deferred")
    out = tools.run(tmp_path, "delete", ids, queues)
    assert sorted(out.done) == sorted(held)


def test_parse_targets_reads_ids_from_stdin_and_checks_them() -> None:
    """``-`` reads the first word of each line (mailq's flags * and ! dropped);
    bad ids and queue names are usage errors."""
    ids, _ = tools.parse_targets("hold", ["-"], io.StringIO("ABC123*  1234 Mon ...\nDEF456!\n"))
    assert ids == ["ABC123", "DEF456"]
    with pytest.raises(tools.UsageError, match="invalid queue id"):
        tools.parse_targets("hold", ["../../etc/passwd"])
    with pytest.raises(tools.UsageError, match="unknown queue"):
        tools.parse_targets("delete", ["ALL", "nowhere"])
    with pytest.raises(tools.UsageError):
        tools.parse_targets("hold", [])


def test_active_message_without_daemon_is_fair_game(tmp_path: Path) -> None:
    """With no daemon running, a message left in active can be held."""
    [qid] = seed(tmp_path, "active")
    out = tools.run(tmp_path, "hold", [qid], tools.DEFAULT_QUEUES["hold"])
    assert out.done == [qid] and QueueStore(tmp_path).find(qid) == "hold"


def test_active_message_with_daemon_is_a_request(tmp_path: Path) -> None:
    """With a daemon reading the FIFO, a message in active is not touched:
    the daemon is asked, and told to rescan."""
    [qid] = seed(tmp_path, "active")
    fifo = trigger.ensure_fifo(tmp_path)
    got: list[tuple[str, str]] = []

    class R:
        def addReader(self, r: object) -> None: ...
        def removeReader(self, r: object) -> None: ...

    reader = trigger.TriggerReader(R(), fifo, lambda w, a: got.append((w, a)))
    try:
        out = tools.run(tmp_path, "delete", [qid], tools.DEFAULT_QUEUES["delete"])
        assert out.requested == [qid] and out.summary("delete") == "Deleted: 1 message"
        assert QueueStore(tmp_path).find(qid) == "active"
        reader.doRead()
        assert got == [("delete", qid), ("scan", "")]
    finally:
        reader.stop()


def test_busy_and_absent(tmp_path: Path) -> None:
    """A message whose sidecar is not beside it (a move under way) is busy
    after the retries; an unknown id is absent."""
    [qid] = seed(tmp_path, "deferred")
    store = QueueStore(tmp_path)
    os.rename(store.envelope_path("deferred", qid), tmp_path / "elsewhere.json")
    out = tools.run(tmp_path, "hold", [qid, "NOSUCHID1"], ("deferred",), sleep=lambda s: None)
    assert out.busy == [qid] and out.absent == ["NOSUCHID1"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give files away")
def test_root_gives_new_files_to_the_queue_owner(tmp_path: Path) -> None:
    """Root working beside a daemon that runs as another user: the files a
    tool creates (sidecars it rewrites) belong to the queue's owner."""
    [qid] = seed(tmp_path, "hold")
    for dirpath, _dirs, files in os.walk(tmp_path):
        os.chown(dirpath, 4242, 4242)
        for name in files:
            os.chown(os.path.join(dirpath, name), 4242, 4242)
    tools.run(tmp_path, "release", [qid], ("hold",))
    st = QueueStore(tmp_path).envelope_path("deferred", qid).stat()
    assert (st.st_uid, st.st_gid) == (4242, 4242)
