"""The most recent delivery attempts, kept from the mail log as it is written.

Job: remember the last N delivery outcomes (sent, deferred, bounced, expired) so
that the statistics page can show them without reading the log file.

Input: ``LogEvent`` objects (an observer of :class:`mta.maillog.MailLog`).
Output: ``RecentDeliveries.latest()``, newest first.  Appending to a bounded
deque is atomic, so lines written from delivery threads are safe.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from mta.maillog import LogEvent

OUTCOMES = ("sent", "deferred", "bounced", "expired")


@dataclass(frozen=True)
class Delivery:
    time: float
    queue_id: str
    recipient: str  # the recipient, or the sender for "expired"
    relay: str
    status: str  # one of OUTCOMES
    dsn: str
    delay: str
    detail: str


class RecentDeliveries:
    def __init__(self, size: int = 50) -> None:
        self._events: collections.deque[Delivery] = collections.deque(maxlen=size)

    def observe(self, event: LogEvent) -> None:
        """A mail log line: kept when it reports a delivery outcome."""
        status = event.fields.get("status", "").rstrip(",")
        if status not in OUTCOMES or event.queue_id is None:
            return
        f = event.fields
        self._events.append(
            Delivery(
                time=event.time,
                queue_id=event.queue_id,
                recipient=f.get("to", f.get("from", "")),
                relay=f.get("relay", ""),
                status=status,
                dsn=f.get("dsn", ""),
                delay=f.get("delay", ""),
                detail=f.get("detail", ""),
            )
        )

    def latest(self, n: int | None = None) -> list[Delivery]:
        items = list(self._events)
        items.reverse()
        return items if n is None else items[:n]
