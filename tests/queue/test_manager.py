"""The queue manager on a bench (tests/queue/kit.py): a real store in a
temporary directory, ``task.Clock`` time, a fake delivery agent.  Backoff,
lifetime and delay-warning timing; partial delivery; notices (NOTIFY, RET,
double bounces, postmaster copies, soft_bounce); concurrency, recipient and
active limits and the parking that keeps a slow destination from starving
the rest; the tools' changes; damaged sidecars; failed writes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from mta.envelope import Envelope, RcptState, Recipient
from mta.queue import tools
from mta.queue.store import QueueStore
from tests.queue.kit import T0, Bench, make_settings, parse, report_fields


def bench(tmp_path: Path, policy=None, **settings) -> Bench:  # type: ignore[no-untyped-def]
    b = Bench(tmp_path / "queue", make_settings(**settings))
    if policy is not None:
        b.policy = policy
    b.start()
    return b


# -- the simple paths -------------------------------------------------------------------
def test_delivered_message_is_removed_and_logged(tmp_path: Path) -> None:
    """A message the next hop takes is delivered once, removed from the
    queue, and the log has Postfix's qmgr/smtp/removed lines."""
    b = bench(tmp_path)
    qid = b.queue()
    assert [c.recipients for c in b.calls] == [["bob@example.net"]]
    assert b.calls[0].message.endswith(b"hello\r\n")
    assert b.state(qid) is None
    log = b.log()
    assert f"{qid}: from=<alice@example.org>, size=" in log and "(queue active)" in log
    assert f"{qid}: to=<bob@example.net>, relay=mx.example[192.0.2.1]:25" in log
    assert "status=sent" in log and f"{qid}: removed" in log


def test_backoff_doubles_with_age_up_to_the_maximum(tmp_path: Path) -> None:
    """Postfix's backoff: the wait is the message's age, at least
    minimal_backoff_time, at most maximal_backoff_time."""
    b = bench(tmp_path, policy=lambda r: 450, minimal_backoff=300, maximal_backoff=4000)
    qid = b.queue()
    b.run_until(T0 + 13000, step=50)
    times = [c.time - T0 for c in b.calls]
    assert times == [0, 300, 600, 1200, 2400, 4800, 8800, 12800]
    assert b.state(qid) == "deferred"
    env = b.store.load("deferred", qid)
    assert env.attempts == 8 and env.next_try == T0 + 12800 + 4000
    assert env.recipients[0].reply is not None and env.recipients[0].reply.code == 450


def test_deferred_message_shows_reason_and_flush_retries_now(tmp_path: Path) -> None:
    """A 450 leaves the message deferred with its reason in the sidecar;
    flush makes it due at once instead of after the backoff."""
    answers = iter([450, 250])
    b = bench(tmp_path, policy=lambda r: next(answers), minimal_backoff=3600)
    qid = b.queue()
    env = b.store.load("deferred", qid)
    assert env.recipients[0].state is RcptState.DEFERRED
    assert "450 4.2.0 mailbox busy" in env.recipients[0].reply.one_line()  # type: ignore[union-attr]
    b.advance(10)
    assert len(b.calls) == 1
    b.manager.flush()
    assert len(b.calls) == 2 and b.state(qid) is None


def test_partial_delivery_retries_only_the_remaining_recipients(tmp_path: Path) -> None:
    """Of two recipients one is delivered and one deferred: the retry goes
    to the deferred one only."""
    busy = {"b@example.net"}
    b = bench(tmp_path, policy=lambda r: 450 if r in busy else 250)
    qid = b.queue(rcpts=["a@example.net", "b@example.net"])
    assert b.calls[0].recipients == ["a@example.net", "b@example.net"]
    env = b.store.load("deferred", qid)
    assert [r.state for r in env.recipients] == [RcptState.DELIVERED, RcptState.DEFERRED]
    busy.clear()
    b.advance(300)
    assert b.calls[1].recipients == ["b@example.net"]
    assert b.state(qid) is None


def test_deliveries_to_several_destinations_save_progress(tmp_path: Path) -> None:
    """While one destination hangs, what another already took is written
    to the sidecar, so a crash would not deliver it again."""
    b = bench(tmp_path, policy=lambda r: None if r.endswith("@slow.example") else 250)
    qid = b.queue(rcpts=["a@fast.example", "z@slow.example"])
    assert b.state(qid) == "active"
    env = b.store.load("active", qid)
    states = {r.address: r.state for r in env.recipients}
    assert states == {"a@fast.example": RcptState.DELIVERED, "z@slow.example": RcptState.PENDING}
    slow = next(c for c in b.calls if c.result is not None)
    slow.answer(250)
    assert b.state(qid) is None


# -- lifetime, delay warnings ----------------------------------------------------------------
def test_queue_lifetime_expiry_returns_the_message(tmp_path: Path) -> None:
    """A message still deferred when its age reaches maximal_queue_lifetime
    goes back to its sender: one notice, Action failed with the last 4xx
    status and text, the original attached; the message is removed."""
    b = bench(
        tmp_path,
        policy=lambda r: 450 if r == "bob@example.net" else 250,
        queue_lifetime=3600,
        minimal_backoff=600,
        maximal_backoff=600,
    )
    qid = b.queue()
    b.run_until(T0 + 3000, step=60)
    assert b.state(qid) == "deferred" and not b.notices()
    b.run_until(T0 + 3700, step=60)
    assert b.state(qid) is None
    assert f"{qid}: from=<alice@example.org>, status=expired, returned to sender" in b.log()
    [notice] = b.notices()
    assert notice.sender == "" and notice.recipients == ["alice@example.org"]
    groups = report_fields(notice.message)
    assert groups[1]["action"] == "failed"
    assert groups[1]["status"] == "4.2.0"
    assert "mailbox busy" in groups[1]["diagnostic-code"]
    assert b"Message-Id: <t@example.org>" in notice.message  # the original comes back


def test_lifetime_zero_means_one_attempt(tmp_path: Path) -> None:
    """maximal_queue_lifetime = 0: tried once, then returned (Postfix)."""
    b = bench(tmp_path, policy=lambda r: 450 if r == "bob@example.net" else 250, queue_lifetime=0)
    qid = b.queue()
    assert b.state(qid) is None
    assert len(b.user_calls()) == 1 and len(b.notices()) == 1


def test_bounce_queue_lifetime_applies_to_notices(tmp_path: Path) -> None:
    """A notice (null sender) is given up after bounce_queue_lifetime, and
    is not bounced to anyone (default notify_classes)."""
    b = bench(
        tmp_path,
        policy=lambda r: 450,
        queue_lifetime=86400,
        bounce_lifetime=1000,
        minimal_backoff=300,
    )
    qid = b.queue(sender="")
    b.run_until(T0 + 1300, step=50)
    assert b.state(qid) is None
    assert not b.notices()
    assert "undeliverable bounce discarded" in b.log()


def test_delay_warning_is_sent_once_after_delay_warning_time(tmp_path: Path) -> None:
    """delay_warning_time: after the first failed attempt past it, the
    sender gets one "delayed" notice (headers only, Will-Retry-Until), never
    a second; a recipient with NOTIFY=NEVER is not mentioned."""
    b = bench(
        tmp_path,
        policy=lambda r: 450 if r.endswith("@example.net") else 250,
        delay_warning=1000,
        minimal_backoff=300,
        maximal_backoff=300,
        queue_lifetime=86400,
    )
    qid = b.queue(rcpts=["bob@example.net", Recipient("never@example.net", notify=("NEVER",))])
    b.run_until(T0 + 900, step=50)
    assert not b.notices()
    b.run_until(T0 + 5000, step=50)
    [warning] = b.notices()
    assert warning.time - T0 == 1200
    msg = parse(warning.message)
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    groups = report_fields(warning.message)
    assert [g["final-recipient"] for g in groups[1:]] == ["rfc822; bob@example.net"]
    assert groups[1]["action"] == "delayed" and "will-retry-until" in groups[1]
    assert b"text/rfc822-headers" in warning.message
    assert b"hello" not in warning.message.split(b"text/rfc822-headers", 1)[1]
    assert b.state(qid) == "deferred" and b.store.load("deferred", qid).warned
    assert f"{qid}: sender delay notification: " in b.log()


# -- notices --------------------------------------------------------------------------------
def test_5xx_for_one_recipient_one_notice_with_its_text(tmp_path: Path) -> None:
    """550 for one of two recipients: the other is delivered, the sender gets
    one notice about the 550 (Status 5.1.1, the server's text)."""
    b = bench(tmp_path, policy=lambda r: 550 if r.startswith("bad") else 250)
    qid = b.queue(rcpts=["good@example.net", "bad@example.net"])
    assert b.state(qid) is None
    [notice] = b.notices()
    assert notice.recipients == ["alice@example.org"] and notice.sender == ""
    msg = parse(notice.message)
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg.get_content_type() == "multipart/report"
    groups = report_fields(notice.message)
    assert groups[0]["x-postfix-queue-id"] == qid
    assert [g["final-recipient"] for g in groups[1:]] == ["rfc822; bad@example.net"]
    assert groups[1]["status"] == "5.1.1"
    assert groups[1]["diagnostic-code"] == "smtp; 550 5.1.1 no such user"
    assert "<bad@example.net>: host mx.example[192.0.2.1] said: 550 5.1.1 no such user" in (
        notice.message.decode()
    )
    assert f"{qid}: sender non-delivery notification: " in b.log()


def test_soft_bounce_keeps_5xx_mail_queued(tmp_path: Path) -> None:
    """soft_bounce = yes: a 550 becomes a 450 and the message stays deferred."""
    b = bench(tmp_path, policy=lambda r: 550, soft_bounce=True)
    qid = b.queue()
    assert b.state(qid) == "deferred" and not b.notices()
    reply = b.store.load("deferred", qid).recipients[0].reply
    assert reply is not None and reply.code == 450 and reply.status == "4.1.1"


def test_notify_never_suppresses_and_success_reports_relayed(tmp_path: Path) -> None:
    """NOTIFY=NEVER: no notice for a 550; NOTIFY=SUCCESS: a "relayed"
    notice (the fake next hop does not take DSN over); RET/ENVID/ORCPT show."""
    b = bench(tmp_path, policy=lambda r: 550 if r.startswith("x") else 250)
    b.queue(
        rcpts=[
            Recipient("x@example.net", notify=("NEVER",)),
            Recipient("ok@example.net", notify=("SUCCESS",), orcpt="rfc822;Ok+2Bme@example.net"),
        ],
        envid="ENV+2B1",
        ret="FULL",
    )
    [notice] = b.notices()
    msg = parse(notice.message)
    assert msg["Subject"] == "Successful Mail Delivery Report"
    groups = report_fields(notice.message)
    assert groups[0]["original-envelope-id"] == "ENV+1"
    assert groups[1]["action"] == "relayed"
    assert groups[1]["original-recipient"] == "rfc822;Ok+me@example.net"
    assert b"message/rfc822" in notice.message  # RET=FULL


def test_ret_hdrs_returns_headers_only(tmp_path: Path) -> None:
    """RET=HDRS: the failure notice carries the headers, not the body."""
    b = bench(tmp_path, policy=lambda r: 550 if r == "bob@example.net" else 250)
    b.queue(ret="HDRS", body=b"Subject: secret\r\n\r\nthe body text\r\n")
    [notice] = b.notices()
    assert b"Subject: secret" in notice.message
    assert b"the body text" not in notice.message
    assert b"Content-Description: Undelivered Message Headers" in notice.message


def test_failed_notice_is_discarded_by_default(tmp_path: Path) -> None:
    """A notice that bounces is never bounced again; with the default
    notify_classes (resource, software) it is simply dropped."""
    b = bench(tmp_path, policy=lambda r: 550)
    qid = b.queue(sender="")
    assert b.state(qid) is None and not b.notices()


def test_double_bounce_goes_to_postmaster_with_bounce_class(tmp_path: Path) -> None:
    """notify_classes = 2bounce: an undeliverable notice goes whole to
    2bounce_notice_recipient from double_bounce_sender; when that fails too
    it is discarded ("undeliverable postmaster notification discarded")."""
    b = bench(
        tmp_path,
        policy=lambda r: 250 if r.startswith("postmaster@") else 550,
        notify_classes=frozenset({"2bounce"}),
    )
    qid = b.queue(sender="", body=b"Subject: a notice\r\n\r\nnotice body\r\n")
    [copy] = b.notices()
    assert copy.sender == "double-bounce@mx.test.example"
    assert copy.recipients == ["postmaster@test.example"]
    assert parse(copy.message)["Subject"] == "Postmaster Copy: Undelivered Mail"
    assert b"notice body" in copy.message
    assert b.state(qid) is None

    b.policy = lambda r: 550
    b.queue(sender="double-bounce@mx.test.example")
    assert len(b.notices()) == 1  # nothing about the failed postmaster notice
    assert "undeliverable postmaster notification discarded" in b.log()


def test_bounce_class_sends_postmaster_copy_of_headers(tmp_path: Path) -> None:
    """notify_classes = bounce: besides the sender's notice, the postmaster
    (bounce_notice_recipient) gets a copy with the headers only."""
    b = bench(
        tmp_path,
        policy=lambda r: 550 if r == "bob@example.net" else 250,
        notify_classes=frozenset({"bounce"}),
        bounce_notice_recipient="mailadmin@example.org",
    )
    b.queue()
    to = sorted(c.recipients[0] for c in b.notices())
    assert to == ["alice@example.org", "mailadmin@example.org"]
    copy = next(c for c in b.notices() if c.recipients == ["mailadmin@example.org"])
    assert parse(copy.message)["Subject"] == "Postmaster Copy: Undelivered Mail"
    assert b"hello" not in copy.message.split(b"text/rfc822-headers", 1)[1]


def test_notice_that_cannot_be_queued_keeps_the_message(tmp_path: Path) -> None:
    """When the notice cannot be written (disk full), the message is not
    removed: the notice is owed and tried again after the backoff."""
    b = bench(tmp_path, policy=lambda r: 550 if r == "bob@example.net" else 250)
    real_begin = b.store.begin
    calls = []

    def begin():  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 2:  # the first is the test's own message, the second the notice
            raise OSError(28, "No space left on device")
        return real_begin()

    b.store.begin = begin  # type: ignore[method-assign]
    qid = b.queue()
    assert b.state(qid) == "deferred" and not b.notices()
    b.advance(300)
    assert b.state(qid) is None and len(b.notices()) == 1
    assert len(b.user_calls()) == 1  # the recipient was not tried again


# -- limits ------------------------------------------------------------------------------
def test_destination_concurrency_limit(tmp_path: Path) -> None:
    """At most *_destination_concurrency_limit deliveries to one destination
    at once; the next starts when one ends."""
    b = bench(tmp_path, policy=lambda r: None, destination_concurrency=2)
    for _ in range(5):
        b.queue()
    assert len(b.calls) == 2
    b.calls[0].answer(250)
    assert len(b.calls) == 3


def test_transport_concurrency_limit_overrides_default(tmp_path: Path) -> None:
    """smtp_destination_concurrency_limit (per transport) wins over the default."""
    b = bench(
        tmp_path,
        policy=lambda r: None,
        destination_concurrency=20,
        transport_concurrency={"smtp": 1},
    )
    b.queue()
    b.queue()
    assert len(b.calls) == 1


def test_recipient_limit_splits_deliveries(tmp_path: Path) -> None:
    """*_destination_recipient_limit recipients per delivery at most."""
    b = bench(tmp_path, destination_recipients=50)
    b.queue(rcpts=[f"u{i}@example.net" for i in range(120)])
    assert [len(c.recipients) for c in b.calls] == [50, 50, 20]


def test_recipient_limit_one_makes_concurrency_per_recipient(tmp_path: Path) -> None:
    """With a recipient limit of 1, Postfix counts concurrency per
    recipient: two recipients of one domain are delivered side by side even
    with a concurrency limit of 1."""
    b = bench(tmp_path, policy=lambda r: None, destination_recipients=1, destination_concurrency=1)
    b.queue(rcpts=["a@example.net", "b@example.net"])
    assert sorted(c.recipients[0] for c in b.calls) == ["a@example.net", "b@example.net"]


def test_active_limit_bounds_the_active_set(tmp_path: Path) -> None:
    """qmgr_message_active_limit: no more messages in active than that;
    the rest wait in incoming and follow as room appears."""
    b = bench(tmp_path, policy=lambda r: None, active_limit=3)
    ids = [b.queue(rcpts=[f"u@d{i}.example"]) for i in range(6)]
    assert b.manager.active_count == 3
    assert [b.state(q) for q in ids].count("incoming") == 3
    b.calls[0].answer(250)
    assert b.manager.active_count == 3 and len(b.calls) == 4


def test_slow_destination_never_starves_the_rest(tmp_path: Path) -> None:
    """Forty messages for a destination that never answers, then three for
    others: the slow ones take at most two rounds of its concurrency in the
    active set (the rest stay parked on disk), so the others are delivered
    at once; the parked ones follow as the slow one frees slots."""
    b = bench(
        tmp_path,
        policy=lambda r: None if r.endswith("@slow.example") else 250,
        active_limit=10,
        destination_concurrency=2,
    )
    slow = [b.queue(rcpts=["x@slow.example"]) for _ in range(40)]
    fast = [b.queue(rcpts=[f"y@fast{i}.example"]) for i in range(3)]
    assert all(b.state(q) is None for q in fast)
    assert b.manager.active_count <= 4
    assert sum(1 for q in slow if b.state(q) == "incoming") >= 36
    for _ in range(60):
        pending = [c for c in b.calls if c.result is not None and not c.result.called]
        if not pending:
            break
        pending[0].answer(250)
        b.advance(0)
    assert all(b.state(q) is None for q in slow)
    assert len([c for c in b.calls if c.recipients == ["x@slow.example"]]) == 40


# -- the tools beside the manager ---------------------------------------------------------
def test_held_message_is_never_delivered_and_release_delivers_it(tmp_path: Path) -> None:
    """A deferred message held by `mta queue hold` is not delivered when
    its time comes; `release` (and the daemon's wake-up) delivers it at once."""
    answers = iter([450])
    b = bench(tmp_path, policy=lambda r: next(answers, 250), minimal_backoff=300)
    qid = b.queue()
    out = tools.run(b.root, "hold", [qid], tools.DEFAULT_QUEUES["hold"])
    assert out.done == [qid] and b.state(qid) == "hold"
    b.run_until(T0 + 5000, step=100)
    assert len(b.calls) == 1
    b.manager.scan()
    assert qid not in [e.queue_id for e in b.manager.deferred_envelopes()]
    out = tools.run(b.root, "release", [qid], ("hold",))
    assert out.done == [qid]
    b.manager.request("release", qid)
    assert len(b.calls) == 2 and b.state(qid) is None


def test_deleted_message_is_never_delivered(tmp_path: Path) -> None:
    """`mta queue delete` on a deferred message: it is never tried again."""
    b = bench(tmp_path, policy=lambda r: 450)
    qid = b.queue()
    tools.run(b.root, "delete", [qid], tools.DEFAULT_QUEUES["delete"])
    b.run_until(T0 + 5000, step=100)
    assert len(b.calls) == 1 and b.state(qid) is None


def test_rescan_picks_up_what_a_tool_queued(tmp_path: Path) -> None:
    """A message committed by another process (mta sendmail) is found by the
    next rescan, which runs every queue_run_delay without being asked."""
    b = bench(tmp_path, queue_run_delay=60)
    other = QueueStore(b.root)
    msg = other.begin()
    msg.write(b"Subject: from sendmail\r\n\r\nx\r\n")
    other.commit_blocking(
        msg, Envelope(msg.queue_id, "root@test.example", [Recipient("r@example.net")], T0)
    )
    b.advance(30)
    assert not b.calls
    b.advance(31)
    assert [c.sender for c in b.calls] == ["root@test.example"]
    assert b.state(msg.queue_id) is None


def test_requeue_makes_a_fresh_start(tmp_path: Path) -> None:
    """`mta queue requeue`: the message goes to incoming with a new arrival
    time and no attempts, and is delivered at once."""
    answers = iter([450])
    b = bench(tmp_path, policy=lambda r: next(answers, 250), minimal_backoff=3600)
    qid = b.queue()
    b.advance(100)
    out = tools.run(b.root, "requeue", [qid], tools.DEFAULT_QUEUES["requeue"], now=b.now())
    assert out.done == [qid] and b.state(qid) == "incoming"
    env = b.store.load("incoming", qid)
    assert env.attempts == 0 and env.arrival_time == T0 + 100
    assert env.recipients[0].state is RcptState.PENDING and env.recipients[0].reply is None
    b.manager.request("release", qid)
    assert len(b.calls) == 2 and b.state(qid) is None


def test_hold_request_for_an_active_message_applies_after_the_attempt(tmp_path: Path) -> None:
    """A tool asks to hold a message being delivered: the attempt ends, the
    message goes to hold instead of deferred."""
    b = bench(tmp_path, policy=lambda r: None)
    qid = b.queue()
    assert b.state(qid) == "active"
    b.manager.request("hold", qid)
    b.calls[0].answer(450)
    assert b.state(qid) == "hold"
    assert f"{qid}: placed on hold" in b.log()


def test_delete_request_for_an_active_message(tmp_path: Path) -> None:
    """A delete request for a message being delivered removes it when the
    attempt ends, delivered or not."""
    b = bench(tmp_path, policy=lambda r: None)
    qid = b.queue()
    b.manager.request("delete", qid)
    b.calls[0].answer(450)
    assert b.state(qid) is None
    b.run_until(T0 + 2000, step=100)
    assert len(b.calls) == 1


# -- damage ----------------------------------------------------------------------------------
def test_sidecar_broken_while_deferred_is_quarantined(tmp_path: Path) -> None:
    """A sidecar that became unreadable while the message waited is moved to
    corrupt with a note at activation; the manager goes on delivering."""
    b = bench(tmp_path, policy=lambda r: 450 if r == "bob@example.net" else 250)
    qid = b.queue()
    b.store.envelope_path("deferred", qid).write_text('{"queue_id": "trunc')
    b.advance(300)
    assert b.state(qid) == "corrupt"
    note = (b.root / "corrupt" / "note" / qid).read_text()
    assert "unreadable envelope" in note
    assert f"warning: {qid}: queue file quarantined as corrupt/{qid}" in b.log()
    other = b.queue(rcpts=["carol@example.net"])
    assert b.state(other) is None


def test_failed_sidecar_update_loses_nothing(tmp_path: Path) -> None:
    """The sidecar cannot be rewritten (ENOSPC) after a partial delivery: the
    message is deferred with what was learned kept in memory, and the next
    attempt does not deliver the delivered recipient again."""
    busy = {"b@example.net"}
    b = bench(tmp_path, policy=lambda r: 450 if r in busy else 250)
    b.syncer.fail_updates = 1
    qid = b.queue(rcpts=["a@example.net", "b@example.net"])
    assert b.state(qid) == "deferred"
    assert "cannot update queue file" in b.log()
    busy.clear()
    b.advance(300)
    tried = [c.recipients for c in b.user_calls()]
    assert tried == [["a@example.net", "b@example.net"], ["b@example.net"]]
    assert b.state(qid) is None
    # notify_classes resource (the default): the postmaster was told.
    [report] = [c for c in b.calls if c.recipients == ["postmaster@test.example"]]
    assert b"the envelope could not be saved" in report.message


def test_delivery_agent_exception_defers_and_reports(tmp_path: Path) -> None:
    """A delivery function that raises: the recipient is deferred with an
    internal error (nothing lost), and with notify_classes software the
    postmaster hears of it."""
    b = bench(tmp_path, notify_classes=frozenset({"software"}))
    calls = []

    def broken(route, env, rcpts, path):  # type: ignore[no-untyped-def]
        calls.append(env.queue_id)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return b.deliver(route, env, rcpts, path)

    b.manager.deliver = broken
    qid = b.queue()
    assert b.state(qid) == "deferred"
    reply = b.store.load("deferred", qid).recipients[0].reply
    assert reply is not None and reply.code == 451 and "internal error" in reply.text
    report = [c for c in b.calls if c.recipients == ["postmaster@test.example"]]
    assert report and b"RuntimeError" in report[0].message
    b.advance(300)
    assert b.state(qid) is None


# -- start and stop ------------------------------------------------------------------------------
def test_restart_rebuilds_the_schedule_from_disk(tmp_path: Path) -> None:
    """A new manager on the same queue: deferred mail is retried at its time,
    active mail (its attempt died with the old process) at once."""
    b = bench(tmp_path, policy=lambda r: None if r == "hang@example.net" else 450)
    deferred = b.queue()
    active = b.queue(rcpts=["hang@example.net"])
    assert b.state(deferred) == "deferred" and b.state(active) == "active"
    b2 = Bench(b.root, b.settings, policy=lambda r: 250, clock=b.clock)
    b2.start()
    assert [c.recipients for c in b2.calls] == [["hang@example.net"]]
    b2.advance(300)
    assert b2.state(deferred) is None and b2.state(active) is None


def test_stop_leaves_unfinished_attempts_in_active(tmp_path: Path) -> None:
    """stop(): a delivery still running after stop_grace is abandoned and
    the message stays in active (a restart moves it back to incoming)."""
    b = bench(tmp_path, policy=lambda r: None, stop_grace=5.0)
    qid = b.queue()
    out: list[object] = []
    from twisted.internet import defer

    defer.Deferred.fromCoroutine(b.manager.stop()).addBoth(out.append)
    assert not out
    b.advance(5)
    assert out == [None]
    assert b.state(qid) == "active"


@pytest.mark.parametrize("limit", [0])
def test_zero_concurrency_limit_means_unlimited(tmp_path: Path, limit: int) -> None:
    """A concurrency limit of 0 puts no limit on parallel deliveries."""
    b = bench(tmp_path, policy=lambda r: None, destination_concurrency=limit)
    for _ in range(30):
        b.queue()
    assert len(b.calls) == 30


def test_deferred_envelopes_for_statistics(tmp_path: Path) -> None:
    """deferred_envelopes() lists what waits in deferred, with its reason."""
    b = bench(tmp_path, policy=lambda r: 450)
    qid = b.queue()
    [env] = b.manager.deferred_envelopes()
    assert env.queue_id == qid and replace(env).pending[0].reply is not None
