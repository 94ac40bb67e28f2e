"""The Redis client: RESP parsing byte by byte, and the Twisted client
against a real redis-server — commands, error replies, bounded waits and
the circuit breaker when the server is down or hung."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor

from mta.redisclient import (
    ProtocolError,
    RedisClient,
    RedisConfig,
    RedisError,
    RedisUnavailable,
    RespParser,
    encode_command,
)
from tests.integration.fleetkit import RedisServer
from tests.integration.harness import free_port
from tests.policy.test_verify import sleep

pytestmark = pytest.mark.timeout(30)


def test_encode_command() -> None:
    """Every argument is a bulk string; numbers are written in decimal."""
    assert encode_command("SET", "k", b"v\r\n", 10) == (
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n$2\r\n10\r\n"
    )


def test_parse_each_type() -> None:
    """Simple strings, errors, integers, bulk (and null) strings, nested arrays."""
    p = RespParser()
    replies = p.feed(
        b"+OK\r\n-ERR wrong\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*2\r\n*1\r\n:1\r\n$0\r\n\r\n"
    )
    assert replies[0] == b"OK"
    assert isinstance(replies[1], RedisError) and str(replies[1]) == "ERR wrong"
    assert replies[2:] == [42, b"abc", None, [[1], b""]]


def test_parse_rejects_garbage() -> None:
    """A byte that starts no RESP type, or a bad length, is a protocol error."""
    with pytest.raises(ProtocolError):
        RespParser().feed(b"?what\r\n")
    with pytest.raises(ProtocolError):
        RespParser().feed(b"$x\r\n")


values = st.recursive(
    st.binary(max_size=40) | st.integers(-(2**63), 2**63 - 1) | st.none(),
    lambda children: st.lists(children, max_size=4),
    max_leaves=12,
)


def _encode(v: object) -> bytes:
    if v is None:
        return b"$-1\r\n"
    if isinstance(v, bytes):
        return b"$%d\r\n%s\r\n" % (len(v), v)
    if isinstance(v, int):
        return b":%d\r\n" % v
    assert isinstance(v, list)
    return b"*%d\r\n" % len(v) + b"".join(_encode(x) for x in v)


@given(st.lists(values, max_size=5), st.integers(1, 7))
def test_parse_any_split(replies: list[object], step: int) -> None:
    """Replies come out whole and in order however the stream is cut."""
    data = b"".join(_encode(r) for r in replies)
    p = RespParser()
    got: list[object] = []
    for i in range(0, len(data), step):
        got += p.feed(data[i : i + step])
    assert got == replies


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.resume()
    server.stop()


@pytest_twisted.ensureDeferred
async def test_commands_against_redis(redis_server: RedisServer) -> None:
    """SET with expiry, GET, INCR, an error reply returned as a value, and
    the selected database."""
    client = RedisClient(reactor, RedisConfig(port=redis_server.port, database=3))
    try:
        assert await client.execute("SET", "k", "v", "EX", 60) == b"OK"
        assert await client.execute("GET", "k") == b"v"
        assert 0 < await client.execute("TTL", "k") <= 60  # type: ignore[operator]
        assert await client.execute("INCR", "n") == 1
        assert isinstance(await client.execute("INCR", "k"), RedisError)
        other = RedisClient(reactor, RedisConfig(port=redis_server.port))
        assert await other.execute("GET", "k") is None  # database 0
        other.close()
    finally:
        client.close()


@pytest_twisted.ensureDeferred
async def test_down_server_trips_the_breaker() -> None:
    """Connection refused: RedisUnavailable, one log line, and during
    retry_after the next command fails at once without connecting."""
    lines: list[str] = []
    cfg = RedisConfig(port=free_port(), timeout=1.0, retry_after=30.0)
    client = RedisClient(reactor, cfg, log=lines.append)
    with pytest.raises(RedisUnavailable):
        await client.execute("GET", "x")
    started = reactor.seconds()  # type: ignore[attr-defined]
    with pytest.raises(RedisUnavailable, match="not retried yet"):
        await client.execute("GET", "x")
    assert reactor.seconds() - started < 0.1  # type: ignore[attr-defined]
    assert len(lines) == 1 and "using local state" in lines[0]
    client.close()


@pytest_twisted.ensureDeferred
async def test_hung_server_answers_within_timeout(redis_server: RedisServer) -> None:
    """A stopped (SIGSTOP) server accepts nothing in time: the command fails
    after about ``timeout``; after resume and retry_after it works again and
    the recovery is logged."""
    lines: list[str] = []
    cfg = RedisConfig(port=redis_server.port, timeout=0.3, retry_after=0.2)
    client = RedisClient(reactor, cfg, log=lines.append)
    try:
        assert await client.execute("PING") == b"PONG"
        redis_server.pause()
        started = reactor.seconds()  # type: ignore[attr-defined]
        with pytest.raises(RedisUnavailable):
            await client.execute("GET", "x")
        assert reactor.seconds() - started < 1.0  # type: ignore[attr-defined]
        redis_server.resume()
        await sleep(0.3)
        assert await client.execute("PING") == b"PONG"
        assert "using local state" in lines[0] and "reachable again" in lines[-1]
    finally:
        client.close()
