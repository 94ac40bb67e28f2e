"""Tests of mta.stats.web.StatsListener: binding and reloading on a real reactor."""

from __future__ import annotations

import socket

import pytest
import pytest_twisted
from twisted.internet.error import CannotListenError

from mta.stats.options import StatsOptions
from mta.stats.snapshot import StatsView
from mta.stats.web import StatsListener
from tests.integration.harness import free_port, port_open
from tests.stats.test_snapshot import sources

pytestmark = pytest.mark.timeout(30)


def listener() -> StatsListener:
    from twisted.internet import reactor

    return StatsListener(reactor, StatsView(sources()))


@pytest_twisted.ensureDeferred
async def test_reload_binds_the_new_address_before_closing_the_old() -> None:
    """A new port is bound, then the old one closed; new credentials on the same
    address are swapped in place (same port object)."""
    stats = listener()
    p1, p2 = free_port(), free_port()
    stats.start(StatsOptions("127.0.0.1", p1, "u", "p"))
    try:
        assert port_open(p1)
        first = stats.ports[0]
        await stats.reconfigure(StatsOptions("127.0.0.1", p1, "u", "new"))
        assert stats.ports[0] is first and stats.options is not None
        assert stats.options.password == "new"
        await stats.reconfigure(StatsOptions("127.0.0.1", p2, "u", "new"))
        assert port_open(p2) and not port_open(p1)
    finally:
        await stats.stop()


@pytest_twisted.ensureDeferred
async def test_reload_to_a_busy_port_keeps_the_old_one() -> None:
    """When the new address is taken, the reload raises and the old one serves on."""
    stats = listener()
    p1 = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        stats.start(StatsOptions("127.0.0.1", p1))
        try:
            with pytest.raises(CannotListenError):
                await stats.reconfigure(StatsOptions("127.0.0.1", busy))
            assert port_open(p1)
            assert stats.options == StatsOptions("127.0.0.1", p1)
        finally:
            await stats.stop()


@pytest_twisted.ensureDeferred
async def test_reload_to_off_stops_listening() -> None:
    """An empty stats_listen on reload closes the service."""
    stats = listener()
    p1 = free_port()
    stats.start(StatsOptions("127.0.0.1", p1))
    await stats.reconfigure(None)
    assert not stats.listening and not port_open(p1)
