"""Tests of mta.stats.web: requests as bytes into the HTTP channel, responses as bytes out.

The site runs on a ``task.Clock`` and a ``StringTransport``: every status code,
header and limit is checked without a socket.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from mta.stats.counters import Counters
from mta.stats.options import StatsOptions
from mta.stats.snapshot import Sources, StatsView
from mta.stats.web import (
    BODY_LIMIT,
    LINGER,
    MAX_CONNECTIONS,
    ConstantTimeChecker,
    StatsSite,
    SwappableTLS,
    _LimitedTLSFactory,
    build_root,
    parse_basic,
    tls_context,
)
from tests.stats.certs import make_cert
from tests.stats.test_snapshot import sources

GOOD = b"Basic " + base64.b64encode(b"admin:s3cret:with:colons")


class Client:
    def __init__(self, site: StatsSite) -> None:
        self.transport = StringTransport()
        self.protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> bytes:
        self.protocol.dataReceived(data)
        return bytes(self.transport.value())


def make_site(authenticated: bool = True) -> tuple[StatsSite, task.Clock]:
    clock = task.Clock()
    options = (
        StatsOptions("127.0.0.1", 8025, "admin", "s3cret:with:colons")
        if authenticated
        else StatsOptions("127.0.0.1", 8025)
    )
    view = StatsView(sources(), clock=lambda: 5000.0)
    return StatsSite(build_root(view, options), clock), clock


def request(
    path: bytes = b"/api/stats",
    auth: bytes | None = GOOD,
    method: bytes = b"GET",
    version: bytes = b"HTTP/1.1",
    extra: bytes = b"",
) -> bytes:
    head = method + b" " + path + b" " + version + b"\r\nHost: stats\r\n"
    if auth is not None:
        head += b"Authorization: " + auth + b"\r\n"
    return head + extra + b"\r\n"


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def headers_and_body(response: bytes) -> tuple[dict[bytes, bytes], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return headers, body


def test_no_credentials_is_401_with_a_challenge() -> None:
    """No Authorization: 401 and WWW-Authenticate: Basic with the realm (RFC 7617)."""
    site, _ = make_site()
    response = Client(site).send(request(auth=None))
    assert status(response) == 401
    headers, body = headers_and_body(response)
    assert headers[b"www-authenticate"] == b'Basic realm="mta statistics", charset="UTF-8"'
    assert body == b"401 Unauthorized\n"


@pytest.mark.parametrize(
    "auth",
    [
        b"Basic " + base64.b64encode(b"admin:wrong"),
        b"Basic " + base64.b64encode(b"root:s3cret:with:colons"),
        b"Basic " + base64.b64encode(b"admin:"),
        b"Bearer abcdef",
    ],
)
def test_wrong_credentials_are_401(auth: bytes) -> None:
    """A wrong user or password, or another scheme: 401, and the body says no more."""
    site, _ = make_site()
    response = Client(site).send(request(auth=auth))
    assert status(response) == 401
    assert headers_and_body(response)[1] == b"401 Unauthorized\n"


@pytest.mark.parametrize(
    "auth", [b"Basic", b"Basic !!!notbase64", b"Basic " + base64.b64encode(b"nocolon")]
)
def test_malformed_authorization_is_400(auth: bytes) -> None:
    """A Basic header that cannot be decoded is a bad request, not a login attempt."""
    site, _ = make_site()
    response = Client(site).send(request(auth=auth))
    assert status(response) == 400
    assert b"s3cret" not in response


def test_right_credentials_give_the_json() -> None:
    """The right user and password (colons in the password are fine): 200 JSON."""
    site, _ = make_site()
    response = Client(site).send(request())
    assert status(response) == 200
    headers, body = headers_and_body(response)
    assert headers[b"content-type"] == b"application/json; charset=utf-8"
    assert headers[b"cache-control"] == b"no-store"
    assert headers[b"server"] == b"mta"
    assert json.loads(body)["mqueue_messages"] == 5


def test_paths_methods_and_versions() -> None:
    """/ is HTML, /metrics Prometheus text, anything else 404 (even /api/stats/),
    POST 405 with Allow, HEAD has no body, HTTP/1.0 works and closes."""
    site, _ = make_site(authenticated=False)
    page = Client(site).send(request(b"/?x=1", auth=None))
    assert status(page) == 200 and b"<!DOCTYPE html>" in page
    metrics = Client(site).send(request(b"/metrics", auth=None))
    assert status(metrics) == 200 and b"# HELP mta_mqueue_messages" in metrics
    for path in (b"/api/stats/", b"/api", b"/index.html", b"/../etc/passwd", b"/metrics/x"):
        assert status(Client(site).send(request(path, auth=None))) == 404, path
    post = Client(site).send(request(method=b"POST", auth=None, extra=b"Content-Length: 0\r\n"))
    assert status(post) == 405 and headers_and_body(post)[0][b"allow"] == b"GET, HEAD"
    head = Client(site).send(request(method=b"HEAD", auth=None))
    assert status(head) == 200 and headers_and_body(head)[1] == b""
    client = Client(site)
    old = client.send(request(version=b"HTTP/1.0", auth=None))
    assert old.startswith(b"HTTP/1.0 200") and client.transport.disconnecting


def test_unknown_path_without_credentials_says_nothing_about_it() -> None:
    """Behind authentication, an unknown path is 401 like any other."""
    site, _ = make_site()
    assert status(Client(site).send(request(b"/secret", auth=None))) == 401


def test_keep_alive_serves_several_requests() -> None:
    """HTTP/1.1 persistent connection: two requests, two answers."""
    site, _ = make_site()
    client = Client(site)
    both = client.send(request() + request(b"/metrics"))
    assert both.count(b"HTTP/1.1 200 OK") == 2


def test_huge_body_is_413_and_the_connection_closes_after_a_linger() -> None:
    """A Content-Length over the limit is refused at once with 413; the daemon
    closes after letting the client finish sending."""
    site, clock = make_site()
    client = Client(site)
    extra = f"Content-Length: {BODY_LIMIT + 1}\r\n".encode()
    response = client.send(request(method=b"POST", extra=extra))
    assert status(response) == 413
    assert client.send(b"x" * 5000) == response  # ignored, no second answer
    clock.advance(LINGER + 0.1)
    assert client.transport.disconnecting


def test_huge_chunked_body_is_413() -> None:
    """A chunked body is counted as it arrives."""
    site, _ = make_site()
    client = Client(site)
    client.send(request(method=b"POST", extra=b"Transfer-Encoding: chunked\r\n"))
    chunk = b"%x\r\n" % 40000 + b"y" * 40000 + b"\r\n"
    response = client.send(chunk + chunk)
    assert status(response) == 413


def test_long_request_line_is_414_and_big_headers_431() -> None:
    """Limits on the request head, each with its own status code."""
    site, _ = make_site()
    assert status(Client(site).send(request(b"/" + b"a" * 9000))) == 414
    assert status(Client(site).send(request(b"/" + b"a" * 20000))) == 414
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(20))
    assert status(Client(site).send(request(extra=many))) == 431
    assert status(Client(site).send(request(extra=b"X-Big: " + b"v" * 20000 + b"\r\n"))) == 431


def test_garbage_is_400() -> None:
    """A request line that is not HTTP: Twisted's own 400."""
    site, _ = make_site()
    assert status(Client(site).send(b"HELLO\r\n\r\n")) == 400


def test_idle_connections_time_out() -> None:
    """A connection that sends nothing is closed after the idle timeout."""
    site, clock = make_site()
    client = Client(site)
    client.send(b"GET /api/stats HTTP/1.1\r\n")
    clock.advance(31)
    assert client.transport.disconnecting


def test_connection_limit() -> None:
    """Past MAX_CONNECTIONS open connections, new ones are not accepted."""
    site, _ = make_site()
    clients = [Client(site) for _ in range(MAX_CONNECTIONS)]
    assert site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1)) is None
    clients[0].protocol.connectionLost(None)  # type: ignore[arg-type]
    assert site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1)) is not None


def test_parse_basic() -> None:
    """RFC 7617: user-pass after the first colon; other schemes are not ours."""
    assert parse_basic(b"Basic " + base64.b64encode(b"u:p:q")) == (b"u", b"p:q")
    assert parse_basic(b"basic " + base64.b64encode(b"u:")) == (b"u", b"")
    assert parse_basic(b"Digest x") is None
    assert isinstance(parse_basic(b"Basic ===="), str)


def test_checker_compares_user_and_password() -> None:
    """The checker grants exactly the configured pair."""
    from twisted.cred.credentials import UsernamePassword
    from twisted.cred.error import UnauthorizedLogin

    checker = ConstantTimeChecker("admin", "pässword")
    ok: list[object] = []
    checker.requestAvatarId(UsernamePassword(b"admin", "pässword".encode())).addBoth(ok.append)
    assert ok == [b"admin"]
    bad: list[object] = []
    checker.requestAvatarId(UsernamePassword(b"admin", b"password")).addBoth(bad.append)
    assert bad[0].check(UnauthorizedLogin)  # type: ignore[attr-defined]


def test_empty_counters_render() -> None:
    """A daemon that has seen nothing yet still answers every path."""
    view = StatsView(Sources(Counters()))
    site = StatsSite(build_root(view, StatsOptions("127.0.0.1", 1)), task.Clock())
    for path in (b"/", b"/api/stats", b"/metrics"):
        assert status(Client(site).send(request(path, auth=None))) == 200


def test_connection_limit_applies_before_tls(tmp_path: Path) -> None:
    """With TLS in front, a connection past the limit is refused before the
    handshake, not handed to the site."""
    cert, key = make_cert(tmp_path)
    site, _ = make_site()
    factory = _LimitedTLSFactory(SwappableTLS(tls_context(cert, key)), False, site)
    addr = IPv4Address("TCP", "127.0.0.1", 1)
    assert factory.buildProtocol(addr) is not None
    site.open_connections = MAX_CONNECTIONS
    assert factory.buildProtocol(addr) is None
