"""The scheduler: which queued message is due when.

Pure and in memory: no files, no reactor, no clock of its own (``now`` is
passed in).  It is rebuilt from the queue store at start, so it never needs
to be saved.  The queue manager asks it what is due, and tells it when a
message was tried and how that went.

Retry timing follows Postfix: the first retry after ``minimal_backoff_time``,
each later one twice the previous wait, capped at ``maximal_backoff_time``;
a message older than ``maximal_queue_lifetime`` (``bounce_queue_lifetime``
for notices, which have the null sender) is given up and bounced.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    minimal_backoff: float = 300.0
    maximal_backoff: float = 4000.0
    queue_lifetime: float = 5 * 86400.0
    bounce_lifetime: float = 5 * 86400.0
    delay_warning: float = 0.0  # 0: no delay warnings

    def backoff(self, attempts: int) -> float:
        """Wait before the next try after ``attempts`` failed tries (>= 1)."""
        if attempts < 1:
            return 0.0
        wait = self.minimal_backoff * (2.0 ** min(attempts - 1, 32))
        return max(self.minimal_backoff, min(wait, self.maximal_backoff))

    def expired(self, arrival: float, now: float, *, null_sender: bool) -> bool:
        lifetime = self.bounce_lifetime if null_sender else self.queue_lifetime
        return now - arrival >= lifetime

    def warning_due(self, arrival: float, now: float, *, warned: bool) -> bool:
        return bool(self.delay_warning) and not warned and now - arrival >= self.delay_warning


class Scheduler:
    """A min-heap of (due time, queue id); stale entries are skipped lazily."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self._due: dict[str, float] = {}
        self._seq = 0  # tie-breaker: equal due times keep arrival order

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, queue_id: object) -> bool:
        return queue_id in self._due

    def schedule(self, queue_id: str, due: float) -> None:
        """(Re)schedule a message; a later call replaces an earlier one."""
        self._due[queue_id] = due
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, queue_id))
        self._compact()

    def remove(self, queue_id: str) -> None:
        self._due.pop(queue_id, None)

    def next_due(self) -> float | None:
        """The earliest due time, or None when nothing is scheduled."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float, limit: int) -> list[str]:
        """Remove and return up to ``limit`` messages due at ``now``."""
        out: list[str] = []
        while self._heap and len(out) < limit:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > now:
                break
            _, _, qid = heapq.heappop(self._heap)
            del self._due[qid]
            out.append(qid)
        return out

    def make_all_due(self, now: float) -> int:
        """``mta flush``: everything is due now.  Returns how many."""
        ids = list(self._due)
        for qid in ids:
            self.schedule(qid, now)
        return len(ids)

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap:
            due, _, qid = heap[0]
            if self._due.get(qid) == due:
                return
            heapq.heappop(heap)

    def _compact(self) -> None:
        # Rescheduling leaves stale heap entries; rebuild when they dominate.
        if len(self._heap) > 64 and len(self._heap) > 4 * len(self._due):
            self._heap = [(d, i, q) for (d, i, q) in self._heap if self._due.get(q) == d]
            heapq.heapify(self._heap)
