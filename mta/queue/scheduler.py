"""The scheduler: which queued message is due when.

Pure and in memory: no files, no reactor, no clock of its own (``now`` is
passed in).  It is rebuilt from the queue store at start, so it never needs
to be saved.  The queue manager asks it what is due, and tells it when a
message was tried and how that went.

Inputs: arrival times, the time of the attempt that just ended, the
retry parameters.  Outputs: ``RetryPolicy`` (when to try again, when a
message has expired, when its sender is owed a delay warning) and
``Scheduler`` (a heap of due times keyed by queue id).

Retry timing is Postfix's (qmgr_active.c): after a failed attempt the next
one waits as long as the message is old, but at least
``minimal_backoff_time`` and at most ``maximal_backoff_time`` — so the waits
double (300 s, 300 s, 600 s, 1200 s, ...) up to the cap, and a restart does
not reset them.  A message whose age has reached ``maximal_queue_lifetime``
(``bounce_queue_lifetime`` for notices, which have the null sender) when an
attempt fails is returned to its sender; 0 means "try once".

``queue_run_delay`` is, in Postfix, how often qmgr scans the deferred queue
for messages whose time has come.  Here every deferred message has an exact
timer, so nothing waits for a scan; the queue manager instead rescans the
queue directories every ``queue_run_delay`` to learn of changes that the
``mta`` tools made behind its back when their wake-up message was lost.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    minimal_backoff: float = 300.0  # minimal_backoff_time
    maximal_backoff: float = 4000.0  # maximal_backoff_time
    queue_lifetime: float = 5 * 86400.0  # maximal_queue_lifetime
    bounce_lifetime: float = 5 * 86400.0  # bounce_queue_lifetime
    delay_warning: float = 0.0  # delay_warning_time; 0: no delay warnings
    queue_run_delay: float = 300.0  # how often the queue directories are rescanned

    def backoff(self, arrival: float, now: float) -> float:
        """The wait before the next attempt, after one failed at ``now``:
        the message's age, clamped to [minimal, maximal] backoff."""
        low = self.minimal_backoff
        high = max(low, self.maximal_backoff)
        return min(max(now - arrival, low), high)

    def next_try(self, arrival: float, now: float) -> float:
        return now + self.backoff(arrival, now)

    def lifetime(self, *, null_sender: bool) -> float:
        return self.bounce_lifetime if null_sender else self.queue_lifetime

    def expired(self, arrival: float, now: float, *, null_sender: bool) -> bool:
        """True when a message of this age is to be returned, not retried."""
        return now - arrival >= self.lifetime(null_sender=null_sender)

    def retry_until(self, arrival: float, *, null_sender: bool) -> float:
        """Until when a deferred message is retried (RFC 3464 Will-Retry-Until)."""
        return arrival + self.lifetime(null_sender=null_sender)

    def warning_due(self, arrival: float, now: float, *, warned: bool) -> bool:
        """A delay warning is owed once, when the message is this old."""
        return self.delay_warning > 0 and not warned and now - arrival >= self.delay_warning


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

    def ids(self) -> list[str]:
        return list(self._due)

    def due_time(self, queue_id: str) -> float | None:
        return self._due.get(queue_id)

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
        """Remove and return up to ``limit`` messages due at ``now``, earliest first."""
        out: list[str] = []
        while len(out) < limit:
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
            if self._due[qid] > now:
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
