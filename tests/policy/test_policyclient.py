"""check_policy_service: endpoint specs, the protocol, connection reuse,
timeouts and failures — against a policy server on loopback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, protocol, reactor

from mta.policy.policyclient import (
    PolicyClient,
    PolicyDefaults,
    PolicyError,
    decode_response,
    encode_request,
    parse_policy_spec,
)

pytestmark = pytest.mark.timeout(30)


def test_specs() -> None:
    """inet and unix endpoints; relative unix paths live under the queue
    directory; {...} overrides the smtpd_policy_service_* defaults."""
    defaults = PolicyDefaults(queue_directory=Path("/var/spool/mta"), timeout=100.0)
    e = parse_policy_spec("inet:127.0.0.1:10023", defaults)
    assert (e.kind, e.host, e.port, e.timeout) == ("inet", "127.0.0.1", 10023, 100.0)
    assert parse_policy_spec("inet:[::1]:9", defaults).host == "::1"
    assert (
        parse_policy_spec("unix:private/policy", defaults).path == "/var/spool/mta/private/policy"
    )
    assert parse_policy_spec("unix:/run/p.sock", defaults).path == "/run/p.sock"
    o = parse_policy_spec(
        "{ inet:localhost:1, timeout=10s, max_idle = 1m, try_limit=3, "
        "default_action = { 450 4.7.1 try later } }",
        defaults,
    )
    assert (o.name, o.timeout, o.max_idle, o.try_limit) == ("inet:localhost:1", 10.0, 60.0, 3)
    assert o.default_action == "450 4.7.1 try later"
    for bad in ("inet:host", "tcp:1:2", "{ inet:h:1, timeout=x }", "{ inet:h:1, color=red }"):
        with pytest.raises(PolicyError):
            parse_policy_spec(bad, defaults)


def test_wire_format() -> None:
    """name=value lines and an empty line; newlines in values are blanked."""
    assert encode_request({"a": "1", "b": "x\ny"}) == b"a=1\nb=x y\n\n"
    assert decode_response(b"action=DUNNO\nextra=1\n") == {"action": "DUNNO", "extra": "1"}
    with pytest.raises(PolicyError):
        decode_response(b"garbage\n")


class Server(protocol.Protocol):
    """A policy server: answers per the factory's mode."""

    def connectionMade(self) -> None:
        self.factory.connections += 1  # type: ignore[attr-defined]
        self.buf = b""

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        while b"\n\n" in self.buf:
            request, self.buf = self.buf.split(b"\n\n", 1)
            self.factory.requests.append(request)  # type: ignore[attr-defined]
            mode = self.factory.mode  # type: ignore[attr-defined]
            if mode == "ok":
                self.transport.write(b"action=DUNNO\n\n")  # type: ignore[union-attr]
            elif mode == "garbage":
                self.transport.write(b"this is not a response\n\n")  # type: ignore[union-attr]
            elif mode == "no-action":
                self.transport.write(b"other=1\n\n")  # type: ignore[union-attr]
            elif mode == "slow":
                reactor.callLater(  # type: ignore[attr-defined]
                    0.2, self.transport.write, b"action=OK\n\n"
                )


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    factory = protocol.Factory.forProtocol(Server)
    factory.connections = 0  # type: ignore[attr-defined]
    factory.requests = []  # type: ignore[attr-defined]
    factory.mode = "ok"  # type: ignore[attr-defined]
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    factory.port = port.getHost().port  # type: ignore[attr-defined]
    yield factory
    port.stopListening()


def client(port: int, spec: str = "") -> PolicyClient:
    endpoint = parse_policy_spec(
        f"{{ inet:127.0.0.1:{port}, timeout=1s, retry_delay=0s {spec} }}", PolicyDefaults()
    )
    return PolicyClient(reactor, endpoint)


@pytest_twisted.ensureDeferred
async def test_connection_is_reused(server) -> None:  # type: ignore[no-untyped-def]
    """Sequential requests share one connection; concurrent ones get their own."""
    c = client(server.port)
    assert await c.request({"request": "smtpd_access_policy"}) == "DUNNO"
    assert await c.request({"request": "smtpd_access_policy"}) == "DUNNO"
    assert server.connections == 1
    server.mode = "slow"
    both = await defer.gatherResults(
        [
            defer.Deferred.fromCoroutine(c.request({"n": "1"})),
            defer.Deferred.fromCoroutine(c.request({"n": "2"})),
        ]
    )
    assert both == ["OK", "OK"]
    assert server.connections == 2
    await c.close()


@pytest_twisted.ensureDeferred
async def test_hanging_server_costs_at_most_the_time_limit(server) -> None:  # type: ignore[no-untyped-def]
    """A server that never answers: PolicyError after try_limit * timeout."""
    server.mode = "silent"
    c = client(server.port, ", timeout=1s, try_limit=2")
    started = time.monotonic()
    with pytest.raises(PolicyError, match="timeout"):
        await c.request({"x": "1"})
    assert 1.9 < time.monotonic() - started < 5
    assert len(server.requests) == 2
    await c.close()


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("mode", ["garbage", "no-action"])
async def test_garbage_is_an_error(server, mode: str) -> None:  # type: ignore[no-untyped-def]
    """A malformed answer or one without action= fails the request."""
    server.mode = mode
    with pytest.raises(PolicyError):
        await client(server.port, ", try_limit=1").request({"x": "1"})


@pytest_twisted.ensureDeferred
async def test_refused_and_idle_close(server) -> None:  # type: ignore[no-untyped-def]
    """No server: PolicyError; an idle connection is closed after max_idle."""
    port = server.port
    c = client(port, ", max_idle=1s")
    await c.request({"x": "1"})
    conn = c._idle[0]
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(1.5, d.callback, None)  # type: ignore[attr-defined]
    await d
    assert conn.lost and not c._idle
    dead = client(1, ", try_limit=1")
    with pytest.raises(PolicyError, match="refused"):
        await dead.request({"x": "1"})


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="{}inetux:[]0123456789.=, abcdefimorstlyq/", max_size=60))
def test_spec_parser_raises_only_policy_errors(spec: str) -> None:
    """Any argument gives an endpoint or a PolicyError, nothing else."""
    try:
        parse_policy_spec(spec, PolicyDefaults())
    except PolicyError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_response_parser_raises_only_policy_errors(data: bytes) -> None:
    """Any answer decodes or is a PolicyError."""
    try:
        decode_response(data)
    except PolicyError:
        pass
