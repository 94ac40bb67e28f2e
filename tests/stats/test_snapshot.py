"""Tests of mta.stats.snapshot: figures from the daemon's own state, and their JSON."""

from __future__ import annotations

import json

from mta.envelope import Envelope, RcptState, Recipient
from mta.maillog import LogEvent
from mta.reply import Reply
from mta.stats.counters import Counters
from mta.stats.recent import RecentDeliveries
from mta.stats.snapshot import Sources, StatsView, as_json, take_snapshot


class FakeStore:
    def __init__(self, counts: dict[str, int], total: int) -> None:
        self._counts = counts
        self._total = total
        self.calls = 0

    def counts(self) -> dict[str, int]:
        self.calls += 1
        return dict(self._counts)

    def total_bytes(self) -> int:
        return self._total


class FakeManager:
    def __init__(self, envelopes: list[Envelope]) -> None:
        self.envelopes = envelopes

    def deferred_envelopes(self) -> list[Envelope]:
        return list(self.envelopes)


def deferred(qid: str, arrival: float, *rcpts: str) -> Envelope:
    recipients = [
        Recipient(r, RcptState.DEFERRED, Reply(451, "3.0", f"try {r} later")) for r in rcpts
    ]
    return Envelope(qid, "s@example.org", recipients, arrival, size=1000, attempts=2)


def sources() -> Sources:
    counters = Counters()
    counters.count("accepted", 7)
    counters.count("deferred", 3)
    counters.reject("reject_unauth_destination")
    counters.reject("reject_unauth_destination")
    counters.active_sessions = 2
    envs = [
        deferred("B", 2000.0, "x@b.example", "y@B.example"),
        deferred("A", 1000.0, "z@a.example"),
        deferred("C", 3000.0, "w@b.example"),
    ]
    envs[0].recipients.append(Recipient("done@c.example", RcptState.DELIVERED))
    store = FakeStore({"incoming": 1, "active": 0, "deferred": 3, "hold": 1, "corrupt": 2}, 5000)
    return Sources(
        counters=counters,
        store=store,
        manager=FakeManager(envs),
        disk=lambda: (3.456, ["Data volume has less than 5% of free disk space"]),
        hostname="mx.example",
        version="0.1.0",
        started=500.0,
    )


def test_snapshot_figures() -> None:
    """Queue counts and bytes from the store, totals and rejects from the counters,
    deferred mail by domain (pending recipients only), the oldest first, disk."""
    s = take_snapshot(sources(), now=5000.0)
    assert s.mqueue_messages == 5  # corrupt is not the queue proper
    assert s.mqueue_kbytes == 4 and s.mqueue_bytes == 5000
    assert s.smtp_active_sessions == 2
    assert s.totals == {"accepted": 7, "rejected": 2, "delivered": 0, "deferred": 3, "bounced": 0}
    assert s.reject_reasons == {"reject_unauth_destination": 2}
    assert [(d.domain, d.messages, d.recipients) for d in s.destinations] == [
        ("b.example", 2, 3),
        ("a.example", 1, 1),
    ]
    assert [m.queue_id for m in s.oldest_deferred] == ["A", "B", "C"]
    assert [r.address for r in s.oldest_deferred[1].recipients] == ["x@b.example", "y@B.example"]
    assert s.oldest_deferred[0].recipients[0].reason == "451 4.3.0 try z@a.example later"
    assert s.disk_free_percent == 3.46
    assert s.warnings == (
        "Data volume has less than 5% of free disk space",
        "2 messages in the corrupt queue need the postmaster's attention",
    )
    assert s.uptime == 4500.0


def test_json_document_has_the_interface_keys() -> None:
    """/api/stats holds at least the keys INTERFACE.md names, JSON-serialisable."""
    doc = json.loads(json.dumps(as_json(take_snapshot(sources(), now=5000.0))))
    for key in (
        "mqueue_messages",
        "mqueue_kbytes",
        "smtp_active_sessions",
        "queue",
        "totals",
        "disk_free_percent",
        "warnings",
    ):
        assert key in doc
    assert set(doc["queue"]) == {"incoming", "active", "deferred", "hold", "corrupt"}
    assert set(doc["totals"]) == {"accepted", "rejected", "delivered", "deferred", "bounced"}
    assert doc["oldest_deferred"][0]["age_seconds"] == 4000
    assert doc["oldest_deferred"][0]["arrival_time"] == "1970-01-01T00:16:40Z"


def test_empty_daemon() -> None:
    """Nothing wired yet (no store, no manager, no disk reading): zeros, no errors."""
    s = take_snapshot(Sources(Counters()), now=1.0)
    assert s.mqueue_messages == 0 and s.disk_free_percent is None and s.warnings == ()
    assert as_json(s)["disk_free_percent"] is None


def test_recent_deliveries_from_log_events() -> None:
    """Only delivery outcomes are kept, newest first."""
    recent = RecentDeliveries(size=2)
    src = Sources(Counters(), recent=recent)
    for i, status in enumerate(["sent", "deferred", "bounced"]):
        fields = {"to": f"r{i}@x", "relay": "h[1.2.3.4]:25", "status": status, "detail": "ok"}
        recent.observe(LogEvent(float(i), "mx", "smtp", 1, "t", f"Q{i}", fields))
    recent.observe(LogEvent(9.0, "mx", "smtpd", 1, "connect from x", None, {}))
    latest = take_snapshot(src, now=10.0).recent
    assert [(d.queue_id, d.status) for d in latest] == [("Q2", "bounced"), ("Q1", "deferred")]


def test_view_caches_for_a_second() -> None:
    """A burst of requests costs one snapshot a second."""
    src = sources()
    now = [100.0]
    view = StatsView(src, clock=lambda: now[0])
    first = view.snapshot()
    now[0] = 100.5
    assert view.snapshot() is first
    now[0] = 101.2
    assert view.snapshot() is not first
    assert isinstance(src.store, FakeStore) and src.store.calls == 2
