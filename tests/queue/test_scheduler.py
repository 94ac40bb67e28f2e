"""The pure scheduler: Postfix's backoff rule, lifetimes, the delay warning,
and the heap of due times (including rescheduling and flush)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mta.queue.scheduler import RetryPolicy, Scheduler


def test_backoff_is_the_age_clamped_to_the_limits() -> None:
    """The wait after a failed attempt is the message's age, at least
    minimal_backoff_time and at most maximal_backoff_time (qmgr_active.c)."""
    p = RetryPolicy(minimal_backoff=300, maximal_backoff=4000)
    assert p.backoff(arrival=1000, now=1000) == 300
    assert p.backoff(arrival=1000, now=1600) == 600
    assert p.backoff(arrival=1000, now=1000 + 10_000) == 4000
    assert p.next_try(arrival=0, now=2400) == 4800


def test_maximal_below_minimal_backoff_uses_the_minimal() -> None:
    """A maximal_backoff_time below the minimal one cannot shorten waits."""
    p = RetryPolicy(minimal_backoff=600, maximal_backoff=100)
    assert p.backoff(arrival=0, now=10_000) == 600


@given(
    st.floats(min_value=1, max_value=1e5),
    st.floats(min_value=1, max_value=1e5),
    st.floats(min_value=0, max_value=1e7),
)
def test_backoff_stays_within_limits(low: float, high: float, age: float) -> None:
    """Whatever the settings and the age, the wait is within [min, max(min, max)]."""
    p = RetryPolicy(minimal_backoff=low, maximal_backoff=high)
    wait = p.backoff(arrival=0, now=age)
    assert low <= wait <= max(low, high)


def test_lifetimes_for_mail_and_for_notices() -> None:
    """maximal_queue_lifetime for mail, bounce_queue_lifetime for notices
    (null sender); an age equal to the lifetime has expired."""
    p = RetryPolicy(queue_lifetime=5 * 86400, bounce_lifetime=86400)
    assert not p.expired(0, 86400, null_sender=False)
    assert p.expired(0, 86400, null_sender=True)
    assert p.expired(0, 5 * 86400, null_sender=False)
    assert p.retry_until(100, null_sender=False) == 100 + 5 * 86400
    assert RetryPolicy(queue_lifetime=0).expired(50, 50, null_sender=False)


def test_delay_warning_due_once_and_never_when_zero() -> None:
    """delay_warning_time: due once the age reaches it, not again once
    warned; 0 turns warnings off."""
    p = RetryPolicy(delay_warning=4 * 3600)
    assert not p.warning_due(0, 3 * 3600, warned=False)
    assert p.warning_due(0, 4 * 3600, warned=False)
    assert not p.warning_due(0, 5 * 3600, warned=True)
    assert not RetryPolicy(delay_warning=0).warning_due(0, 10**9, warned=False)


def test_scheduler_pops_due_ids_in_time_order_up_to_a_limit() -> None:
    """pop_due returns what is due, earliest first, at most ``limit``; the
    rest stays scheduled."""
    s = Scheduler()
    s.schedule("c", 30)
    s.schedule("a", 10)
    s.schedule("b", 20)
    s.schedule("later", 100)
    assert s.pop_due(25, 10) == ["a", "b"]
    assert s.pop_due(50, 1) == ["c"]
    assert s.next_due() == 100 and len(s) == 1 and "later" in s


def test_rescheduling_replaces_and_remove_forgets() -> None:
    """A second schedule() moves the message; remove() drops it; stale heap
    entries never come out."""
    s = Scheduler()
    s.schedule("m", 10)
    s.schedule("m", 50)
    s.schedule("gone", 5)
    s.remove("gone")
    assert s.pop_due(20, 10) == []
    assert s.next_due() == 50
    assert s.pop_due(50, 10) == ["m"]
    assert s.next_due() is None


def test_make_all_due_is_flush() -> None:
    """make_all_due brings every future due time to now."""
    s = Scheduler()
    for i in range(5):
        s.schedule(f"m{i}", 1000 + i)
    assert s.make_all_due(10) == 5
    assert sorted(s.pop_due(10, 100)) == [f"m{i}" for i in range(5)]


@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 100)), max_size=200))
def test_scheduler_matches_a_dictionary(ops: list[tuple[str, int]]) -> None:
    """After any sequence of (re)schedules, popping everything yields each id
    once, at its last due time, in due-time order."""
    s = Scheduler()
    last: dict[str, int] = {}
    for qid, due in ops:
        s.schedule(qid, due)
        last[qid] = due
    popped = s.pop_due(1000, 1000)
    assert sorted(popped) == sorted(last)
    assert [last[q] for q in popped] == sorted(last.values())
    assert len(s) == 0 and s.next_due() is None
