"""Tests for mta.anvil: per-client counts and fixed-window rates."""

from __future__ import annotations

from mta.anvil import Anvil


def test_connection_count_and_rate() -> None:
    """Concurrent connections go up and down; the rate counts every
    connection in the window and starts again after anvil_rate_time_unit."""
    a = Anvil(time_unit=60)
    assert a.connect("192.0.2.1", 0) == (1, 1)
    assert a.connect("192.0.2.1", 1) == (2, 2)
    assert a.connect("192.0.2.2", 1) == (1, 1)
    a.disconnect("192.0.2.1")
    assert a.connections("192.0.2.1") == 1
    assert a.connect("192.0.2.1", 59) == (2, 3)
    assert a.connect("192.0.2.1", 60) == (3, 1)  # a new window


def test_event_rates_are_separate() -> None:
    """MAIL, RCPT and AUTH rates are counted apart."""
    a = Anvil(time_unit=10)
    assert [a.event("c", "message", t) for t in (0, 1, 2)] == [1, 2, 3]
    assert a.event("c", "recipient", 3) == 1
    assert a.event("c", "message", 10) == 1
    a.disconnect("unknown")  # harmless


def test_memory_is_bounded() -> None:
    """Idle clients are swept after their window; a flood of addresses
    never keeps more than max_clients entries."""
    a = Anvil(time_unit=10, max_clients=100)
    for i in range(1000):
        a.event(f"10.0.{i // 256}.{i % 256}", "message", 0)
    assert len(a) <= 100
    a.connect("keep", 0)
    a.event("gone", "message", 0)
    a.event("other", "message", 20)
    assert a.connections("keep") == 1 and "gone" not in a._clients
