"""Fleet-wide anvil rates: two nodes' Anvils counting one client in a real
redis-server add up; without Redis each counts alone and nothing waits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from mta.anvil import Anvil
from mta.redisclient import RedisClient, RedisConfig
from mta.redisrates import SharedRates
from tests.integration.fleetkit import RedisServer
from tests.integration.harness import free_port
from tests.policy.test_verify import sleep

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def node(config: RedisConfig, lines: list[str] | None = None) -> Anvil:
    anvil = Anvil(time_unit=3600.0)
    log = lines.append if lines is not None else None
    anvil.shared = SharedRates(RedisClient(reactor, config, log=log))
    return anvil


@pytest_twisted.ensureDeferred
async def test_two_nodes_add_up(redis_server: RedisServer) -> None:
    """Events alternate between two nodes: each answer is the fleet's count as
    the node learnt it from its previous increment, plus this event (the other
    node's events since then are seen at the next one); Redis holds the exact
    total, which expires after two windows."""
    cfg = RedisConfig(port=redis_server.port, key_prefix="t:")
    a, b = node(cfg), node(cfg)
    now = 7200.0 * 1000
    seen = []
    for i in range(6):
        seen.append((a if i % 2 == 0 else b).event("192.0.2.1", "message", now))
        await sleep(0.05)  # the INCR's answer arrives
    assert seen == [1, 1, 2, 3, 4, 5]  # a single node would say 1, 1, 2, 2, 3, 3
    assert await a.shared.client.execute("GET", "t:anvil:message:192.0.2.1:2000") == b"6"  # type: ignore[union-attr]
    assert b.event("192.0.2.2", "message", now) == 1  # another client counts apart
    ttl = await a.shared.client.execute("TTL", "t:anvil:message:192.0.2.1:2000")  # type: ignore[union-attr]
    assert isinstance(ttl, int) and 3600 < ttl <= 7200
    for x in (a, b):
        x.shared.close()  # type: ignore[union-attr]


@pytest_twisted.ensureDeferred
async def test_burst_is_not_undercounted(redis_server: RedisServer) -> None:
    """Events faster than Redis answers still count one each."""
    a = node(RedisConfig(port=redis_server.port))
    assert [a.event("192.0.2.9", "recipient", 0.0) for _ in range(4)] == [1, 2, 3, 4]
    await sleep(0.1)
    a.shared.close()  # type: ignore[union-attr]


@pytest_twisted.ensureDeferred
async def test_redis_down_counts_locally() -> None:
    """No Redis: the local count decides at once, and the failure is logged once."""
    lines: list[str] = []
    a = node(RedisConfig(port=free_port(), timeout=0.5, retry_after=60.0), lines)
    assert a.event("192.0.2.1", "message", 0.0) == 1
    await sleep(0.2)
    assert [a.event("192.0.2.1", "message", 0.0) for _ in range(3)] == [2, 3, 4]
    assert len(lines) == 1 and "using local state" in lines[0]
    a.shared.close()  # type: ignore[union-attr]
