"""Counters since start: what the statistics service and the log summarise.

Pure data, updated by the SMTP server and the queue manager on the reactor
thread.  Totals are what INTERFACE.md names (accepted, rejected, delivered,
deferred, bounced); rejects are also counted per reason.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

TOTAL_KINDS = ("accepted", "rejected", "delivered", "deferred", "bounced")


@dataclass
class Counters:
    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOTAL_KINDS, 0))
    reject_reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    active_sessions: int = 0

    def count(self, kind: str, n: int = 1) -> None:
        self.totals[kind] = self.totals.get(kind, 0) + n

    def reject(self, reason: str) -> None:
        self.count("rejected")
        self.reject_reasons[reason] += 1
