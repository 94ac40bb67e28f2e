"""One consistent picture of the daemon's figures, for every output of the service.

Job: read the counters, the queue store's in-memory counts, the queue manager's
deferred envelopes, the disk-space reading and the recent deliveries into one
frozen ``Snapshot`` (pure data), and give its JSON form (``/api/stats``).  The
page and the Prometheus exposition render the same snapshot, so they always agree.

Inputs: ``Sources`` (things the daemon owns; nothing here touches the disk).
Outputs: ``Snapshot``; ``as_json``; ``StatsView``, which caches a snapshot for a
second so that a burst of requests cannot turn into a burst of work on the reactor.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mta.envelope import Envelope
from mta.stats.counters import TOTAL_KINDS, Counters
from mta.stats.recent import Delivery, RecentDeliveries

QUEUE_STATES = ("incoming", "active", "deferred", "hold", "corrupt")
LIVE_STATES = QUEUE_STATES[:-1]
TOP_DESTINATIONS = 20
OLDEST_DEFERRED = 10
RECENT = 20


class StoreView(Protocol):
    def counts(self) -> dict[str, int]: ...
    def total_bytes(self) -> int: ...


class ManagerView(Protocol):
    def deferred_envelopes(self) -> list[Envelope]: ...


#: The free-space reading: percent free (None: not measured yet) and warnings.
DiskReading = Callable[[], tuple[float | None, Sequence[str]]]


@dataclass
class Sources:
    """What a snapshot is made of; the daemon fills it in and keeps it current."""

    counters: Counters
    store: StoreView | None = None
    manager: ManagerView | None = None
    disk: DiskReading | None = None
    recent: RecentDeliveries = field(default_factory=RecentDeliveries)
    hostname: str = "localhost"
    version: str = ""
    started: float = field(default_factory=time.time)
    node: str = ""  # stats_node_name: the node label of every /metrics series


@dataclass(frozen=True)
class Destination:
    """Deferred mail for one recipient domain (Postfix qshape's rows)."""

    domain: str
    messages: int
    recipients: int
    oldest: float  # arrival time of its oldest message


@dataclass(frozen=True)
class DeferredRecipient:
    address: str
    reason: str


@dataclass(frozen=True)
class DeferredMessage:
    queue_id: str
    arrival_time: float
    sender: str
    size: int
    attempts: int
    next_try: float
    recipients: tuple[DeferredRecipient, ...]


@dataclass(frozen=True)
class Snapshot:
    time: float
    hostname: str
    version: str
    started: float
    queue: dict[str, int]
    mqueue_bytes: int
    smtp_active_sessions: int
    totals: dict[str, int]
    reject_reasons: dict[str, int]
    disk_free_percent: float | None
    warnings: tuple[str, ...]
    destinations: tuple[Destination, ...]
    oldest_deferred: tuple[DeferredMessage, ...]
    recent: tuple[Delivery, ...]
    node: str = ""

    @property
    def mqueue_messages(self) -> int:
        """Messages in the queue proper (corrupt ones are the operator's)."""
        return sum(self.queue.get(state, 0) for state in LIVE_STATES)

    @property
    def mqueue_kbytes(self) -> int:
        # As mailq's trailer counts them ("-- N Kbytes in M Requests.").
        return self.mqueue_bytes // 1024

    @property
    def uptime(self) -> float:
        return max(0.0, self.time - self.started)


def _domain(address: str) -> str:
    _, at, domain = address.rpartition("@")
    return domain.lower() if at and domain else "(local)"


def _reason(envelope: Envelope, address: str) -> str:
    for rcpt in envelope.recipients:
        if rcpt.address == address and rcpt.reply is not None:
            return rcpt.reply.one_line()
    return ""


def take_snapshot(sources: Sources, now: float | None = None) -> Snapshot:
    """The figures as they are now."""
    now = time.time() if now is None else now
    counts = dict.fromkeys(QUEUE_STATES, 0)
    total_bytes = 0
    if sources.store is not None:
        counts.update({k: v for k, v in sources.store.counts().items() if k in counts})
        total_bytes = sources.store.total_bytes()
    deferred = sources.manager.deferred_envelopes() if sources.manager is not None else []
    by_domain: dict[str, list[float]] = {}  # domain -> [messages, recipients, oldest]
    for envelope in deferred:
        seen: set[str] = set()
        for rcpt in envelope.pending:
            domain = _domain(rcpt.address)
            row = by_domain.setdefault(domain, [0, 0, envelope.arrival_time])
            row[1] += 1
            row[2] = min(row[2], envelope.arrival_time)
            if domain not in seen:
                seen.add(domain)
                row[0] += 1
    destinations = sorted(
        (Destination(d, int(r[0]), int(r[1]), r[2]) for d, r in by_domain.items()),
        key=lambda d: (-d.recipients, d.oldest, d.domain),
    )[:TOP_DESTINATIONS]
    oldest = sorted(deferred, key=lambda e: (e.arrival_time, e.queue_id))[:OLDEST_DEFERRED]
    oldest_rows = tuple(
        DeferredMessage(
            queue_id=e.queue_id,
            arrival_time=e.arrival_time,
            sender=e.sender,
            size=e.size,
            attempts=e.attempts,
            next_try=e.next_try,
            recipients=tuple(
                DeferredRecipient(r.address, _reason(e, r.address)) for r in e.pending
            ),
        )
        for e in oldest
    )
    percent: float | None = None
    warnings: list[str] = []
    if sources.disk is not None:
        percent, disk_warnings = sources.disk()
        warnings.extend(disk_warnings)
    if counts["corrupt"]:
        n = counts["corrupt"]
        warnings.append(
            f"{n} message{'s' if n != 1 else ''} in the corrupt queue need the postmaster's"
            " attention"
        )
    counters = sources.counters
    return Snapshot(
        time=now,
        hostname=sources.hostname,
        node=sources.node,
        version=sources.version,
        started=sources.started,
        queue=counts,
        mqueue_bytes=total_bytes,
        smtp_active_sessions=max(0, counters.active_sessions),
        totals={kind: counters.totals.get(kind, 0) for kind in TOTAL_KINDS},
        reject_reasons=dict(sorted(counters.reject_reasons.items())),
        disk_free_percent=None if percent is None else round(percent, 2),
        warnings=tuple(warnings),
        destinations=tuple(destinations),
        oldest_deferred=oldest_rows,
        recent=tuple(sources.recent.latest(RECENT)),
    )


def rfc3339(timestamp: float) -> str:
    stamp = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return stamp.isoformat(timespec="seconds").replace("+00:00", "Z")


def as_json(s: Snapshot) -> dict[str, Any]:
    """The ``/api/stats`` document (INTERFACE.md names the first keys)."""
    return {
        "mqueue_messages": s.mqueue_messages,
        "mqueue_kbytes": s.mqueue_kbytes,
        "mqueue_bytes": s.mqueue_bytes,
        "smtp_active_sessions": s.smtp_active_sessions,
        "queue": dict(s.queue),
        "totals": dict(s.totals),
        "reject_reasons": dict(s.reject_reasons),
        "disk_free_percent": s.disk_free_percent,
        "warnings": list(s.warnings),
        "deferred_by_destination": [
            {
                "domain": d.domain,
                "messages": d.messages,
                "recipients": d.recipients,
                "oldest_arrival_time": rfc3339(d.oldest),
            }
            for d in s.destinations
        ],
        "oldest_deferred": [
            {
                "id": m.queue_id,
                "arrival_time": rfc3339(m.arrival_time),
                "age_seconds": int(max(0.0, s.time - m.arrival_time)),
                "sender": m.sender,
                "size": m.size,
                "attempts": m.attempts,
                "next_try": rfc3339(m.next_try) if m.next_try else None,
                "recipients": [{"address": r.address, "reason": r.reason} for r in m.recipients],
            }
            for m in s.oldest_deferred
        ],
        "recent_deliveries": [
            {
                "time": rfc3339(d.time),
                "id": d.queue_id,
                "recipient": d.recipient,
                "relay": d.relay,
                "status": d.status,
                "dsn": d.dsn,
                "delay": d.delay,
                "detail": d.detail,
            }
            for d in s.recent
        ],
        "hostname": s.hostname,
        "version": s.version,
        "uptime_seconds": int(s.uptime),
        "time": rfc3339(s.time),
    }


class StatsView:
    """Snapshots on demand, at most one per ``max_age`` seconds."""

    def __init__(
        self, sources: Sources, clock: Callable[[], float] = time.time, max_age: float = 1.0
    ) -> None:
        self.sources = sources
        self._clock = clock
        self._max_age = max_age
        self._cached: Snapshot | None = None

    def snapshot(self) -> Snapshot:
        now = self._clock()
        cached = self._cached
        if cached is None or not 0 <= now - cached.time < self._max_age:
            cached = self._cached = take_snapshot(self.sources, now)
        return cached

    def invalidate(self) -> None:
        self._cached = None
