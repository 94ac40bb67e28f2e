"""The statistics service on twisted.web: three read-only resources behind Basic auth.

Job: serve ``GET /`` (the page), ``GET /api/stats`` (JSON) and ``GET /metrics``
(Prometheus) over HTTP/1.1 and 1.0, optionally over TLS; check HTTP Basic
credentials (RFC 7617) through twisted.cred with a constant-time comparison;
and refuse bad requests without telling anything: a missing or wrong password
is 401 with ``WWW-Authenticate``, a malformed Authorization header 400, an
unknown path 404, another method 405, a request line over 8 KiB 414, headers
over 16 KiB 431, a body over 64 KiB 413.  Idle connections are closed after
30 seconds and at most 64 are open at once, so the service cannot take the
reactor (and with it SMTP) away from mail.

Inputs: a ``StatsView`` (snapshots) and ``StatsOptions``.  Outputs: listening
ports (``StatsListener``), responses.  The listener re-binds when the address
or TLS on/off changes on reload, and otherwise swaps credentials and
certificates in place.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from OpenSSL import SSL
from twisted.cred import credentials, error, portal
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import defer, interfaces, protocol
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.web import http, resource, server, util
from twisted.web.resource import IResource
from zope.interface import implementer

from mta.stats.metrics import Exposition
from mta.stats.options import StatsOptions
from mta.stats.page import render_page
from mta.stats.snapshot import StatsView, as_json

log = logging.getLogger(__name__)

REALM = "mta statistics"
REQUEST_LINE_LIMIT = 8 * 1024
HEADERS_LIMIT = 16 * 1024
BODY_LIMIT = 64 * 1024
IDLE_TIMEOUT = 30
MAX_CONNECTIONS = 64
LINGER = 2.0  # seconds a refused client may go on sending before the close

_SECURITY_HEADERS = {
    b"cache-control": b"no-store",
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    b"referrer-policy": b"no-referrer",
    b"content-security-policy": (
        b"default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
        b"form-action 'none'; frame-ancestors 'none'"
    ),
}


def _respond(request: Any, code: int, body: bytes, content_type: bytes) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"server", b"mta")
    request.setHeader(b"content-type", content_type)
    for name, value in _SECURITY_HEADERS.items():
        request.setHeader(name, value)
    return body


def _plain(request: Any, code: int, text: str) -> bytes:
    return _respond(request, code, f"{code} {text}\n".encode(), b"text/plain; charset=utf-8")


# -- the resources --------------------------------------------------------------------------


class StatsResource(resource.Resource):
    """The whole API, dispatched on the exact path (query strings are ignored)."""

    isLeaf = True

    def __init__(self, view: StatsView) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.view = view
        self.exposition = Exposition(view.snapshot)

    def render(self, request: Any) -> bytes:
        path = request.path
        if path not in (b"/", b"/api/stats", b"/metrics"):
            return _plain(request, 404, "Not Found")
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return _plain(request, 405, "Method Not Allowed")
        if path == b"/api/stats":
            document = as_json(self.view.snapshot())
            body = (json.dumps(document, ensure_ascii=False, indent=1) + "\n").encode()
            return _respond(request, 200, body, b"application/json; charset=utf-8")
        if path == b"/metrics":
            accept = (request.getHeader(b"accept") or b"").decode("latin-1")
            body, content_type = self.exposition.render(accept)
            return _respond(request, 200, body, content_type.encode())
        return _respond(
            request, 200, render_page(self.view.snapshot()), b"text/html; charset=utf-8"
        )


class _Unauthorized(resource.Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setHeader(b"www-authenticate", f'Basic realm="{REALM}", charset="UTF-8"'.encode())
        return _plain(request, 401, "Unauthorized")


class _BadRequest(resource.Resource):
    isLeaf = True

    def __init__(self, reason: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.reason = reason

    def render(self, request: Any) -> bytes:
        return _plain(request, 400, f"Bad Request: {self.reason}")


@implementer(ICredentialsChecker)
class ConstantTimeChecker:
    """One user and password; both compared in constant time, always both, so that
    neither the user name nor the password leaks through timing."""

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, username: str, password: str) -> None:
        self._username = username.encode("utf-8")
        self._password = password.encode("utf-8")

    def requestAvatarId(self, creds: Any) -> defer.Deferred[bytes | tuple[()]]:
        user_ok = hmac.compare_digest(bytes(creds.username), self._username)
        password_ok = hmac.compare_digest(bytes(creds.password), self._password)
        if user_ok & password_ok:
            return defer.succeed(self._username)
        return defer.fail(error.UnauthorizedLogin())


@implementer(portal.IRealm)
class StatsRealm:
    """Every authenticated user sees the same read-only resource."""

    def __init__(self, root: resource.Resource) -> None:
        self.root = root

    def requestAvatar(self, avatar_id: Any, mind: Any, *interfaces: Any) -> Any:
        if IResource in interfaces:
            return IResource, self.root, lambda: None
        raise NotImplementedError("only IResource avatars")


_UNAUTHORIZED: resource.Resource = _Unauthorized()  # type: ignore[no-untyped-call]


def parse_basic(header: bytes) -> tuple[bytes, bytes] | str | None:
    """The user and password of a Basic Authorization header; None for another
    scheme; the reason (a str) when it is malformed (RFC 7617 section 2)."""
    scheme, _, token = header.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    token = token.strip()
    if not token:
        return "no credentials after Basic"
    try:
        decoded = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        return "credentials are not base64"
    user, colon, password = decoded.partition(b":")
    if not colon:
        return "credentials have no colon"
    return user, password


class AuthGate(resource.Resource):
    """Basic authentication in front of ``StatsResource``: a twisted.cred portal."""

    def __init__(self, gate_portal: portal.Portal) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.portal = gate_portal

    def getChildWithDefault(self, path: bytes, request: Any) -> resource.Resource:
        # The guarded resource dispatches on request.path itself: put the segment back.
        request.postpath.insert(0, path)
        request.prepath.pop()
        header = request.getHeader(b"authorization")
        if header is None:
            return _UNAUTHORIZED
        parsed = parse_basic(header)
        if parsed is None:
            return _UNAUTHORIZED
        if isinstance(parsed, str):
            return _BadRequest(parsed)
        creds = credentials.UsernamePassword(parsed[0], parsed[1])
        d = self.portal.login(creds, None, IResource)

        def granted(result: tuple[Any, resource.Resource, Callable[[], None]]) -> Any:
            return result[1]

        def refused(failure: Any) -> resource.Resource:
            failure.trap(error.UnauthorizedLogin, error.UnhandledCredentials)
            return _UNAUTHORIZED

        d.addCallbacks(granted, refused)
        deferred_resource: Any = util.DeferredResource
        return deferred_resource(d)  # type: ignore[no-any-return]

    def render(self, request: Any) -> bytes:
        child: Any = self.getChildWithDefault(b"", request)
        return child.render(request)  # type: ignore[no-any-return]


def build_root(view: StatsView, options: StatsOptions) -> resource.Resource:
    """The site's root: the API, behind the gate when a user is configured."""
    api = StatsResource(view)
    if not options.authenticated:
        return api
    checker = ConstantTimeChecker(options.username, options.password)
    return AuthGate(portal.Portal(StatsRealm(api), [checker]))


# -- HTTP limits ----------------------------------------------------------------------------


class _Request(server.Request):
    """A request that refuses a chunked body once it grows past the limit."""

    _received = 0

    def handleContentChunk(self, data: bytes) -> None:
        self._received += len(data)
        channel: Any = self.channel
        if self._received > BODY_LIMIT:
            channel.refuse(413, "Content Too Large")
            return
        base: Any = super()
        base.handleContentChunk(data)


class LimitedChannel(http.HTTPChannel):
    """HTTPChannel with the limits above, answered with the right status code."""

    MAX_LENGTH = max(REQUEST_LINE_LIMIT, HEADERS_LIMIT) + 2
    totalHeadersSize = HEADERS_LIMIT * 4  # ours below answers first, with 431
    maxHeaders = 100
    _head_bytes = 0
    _head_lines = 0
    _refused = False

    def _base(self) -> Any:
        # HTTPChannel is not annotated: its methods are reached through Any.
        return super()

    def refuse(self, code: int, reason: str) -> None:
        """Answer ``code`` and close, after letting the client finish sending (a
        close with unread data would reset the connection before it reads this)."""
        if self._refused:
            return
        self._refused = True
        body = f"{code} {reason}\n".encode()
        assert self.transport is not None
        self.transport.write(
            f"HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        self._base().setTimeout(None)
        transport: Any = self.transport
        if hasattr(transport, "loseWriteConnection"):
            transport.loseWriteConnection()
        later: Any = self.callLater  # the site's reactor, set per instance
        self._linger = later(LINGER, self.loseConnection)

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        self._base().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if self._refused:
            return
        if line == b"":
            self._head_bytes = self._head_lines = 0
        else:
            self._head_lines += 1
            if self._head_lines == 1:
                if len(line) > REQUEST_LINE_LIMIT:
                    self.refuse(414, "URI Too Long")
                    return
            else:
                self._head_bytes += len(line) + 2
                if self._head_bytes > HEADERS_LIMIT:
                    self.refuse(431, "Request Header Fields Too Large")
                    return
        self._base().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        if self._head_lines == 0:
            self.refuse(414, "URI Too Long")
        else:
            self.refuse(431, "Request Header Fields Too Large")

    def allHeadersReceived(self) -> None:
        length: int | None = self.length
        if length is not None and length > BODY_LIMIT:
            self.refuse(413, "Content Too Large")
            return
        self._base().allHeadersReceived()

    def rawDataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        self._base().rawDataReceived(data)

    def allContentReceived(self) -> None:
        if self._refused:
            return
        self._base().allContentReceived()

    def connectionMade(self) -> None:
        self._base().connectionMade()
        site: Any = getattr(self, "site", None)
        site.open_connections += 1

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        linger = getattr(self, "_linger", None)
        if linger is not None and linger.active():
            linger.cancel()
        site: Any = getattr(self, "site", None)
        site.open_connections -= 1
        self._base().connectionLost(reason)


class StatsSite(server.Site):
    """A Site with the limits, no access log and no tracebacks."""

    protocol = LimitedChannel  # type: ignore[assignment]
    displayTracebacks = False

    def __init__(self, root: resource.Resource, reactor: Any) -> None:
        base: Any = super()
        base.__init__(root, timeout=IDLE_TIMEOUT, requestFactory=_Request, reactor=reactor)
        self.open_connections = 0

    def buildProtocol(self, addr: Any) -> Any:
        if self.open_connections >= MAX_CONNECTIONS:
            return None
        base: Any = super()
        return base.buildProtocol(addr)

    def log(self, request: Any) -> None:
        """No access log: the page polls itself, and the mail log is for mail."""


# -- TLS ------------------------------------------------------------------------------------


def tls_context(cert_file: Any, key_file: Any) -> SSL.Context:
    """A server context from a PEM certificate file (with its chain) and key file;
    TLS 1.2 and later. Raises SSL.Error or OSError when they cannot be used."""
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE)
    context.use_certificate_chain_file(str(cert_file))
    context.use_privatekey_file(str(key_file))
    context.check_privatekey()
    return context


@implementer(interfaces.IOpenSSLServerConnectionCreator)
class SwappableTLS:
    """The server side of TLS with a context that a reload may replace."""

    def __init__(self, context: SSL.Context) -> None:
        self.context = context

    def serverConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:
        return SSL.Connection(self.context, None)


class _LimitedTLSFactory(TLSMemoryBIOFactory):
    """TLS around the site, refusing connections past the site's limit before the
    handshake (the wrapped factory must never be asked for a protocol it refuses)."""

    def buildProtocol(self, addr: Any) -> Any:
        site: Any = self.wrappedFactory
        if site.open_connections >= MAX_CONNECTIONS:
            return None
        return super().buildProtocol(addr)


# -- the listener ---------------------------------------------------------------------------


class StatsListener:
    """The service's listening ports, kept in step with the configuration."""

    def __init__(self, reactor: Any, view: StatsView) -> None:
        self.reactor = reactor
        self.view = view
        self.options: StatsOptions | None = None
        self.site: StatsSite | None = None
        self.ports: list[IListeningPort] = []
        self._tls: SwappableTLS | None = None

    @property
    def listening(self) -> bool:
        return bool(self.ports)

    def start(self, options: StatsOptions | None) -> None:
        """Bind (at start, before privileges are dropped); raises
        CannotListenError (or the TLS files' error) with the reason."""
        self.options = options
        if options is None:
            return
        self.site, self._tls, self.ports = self._bind(options)

    def _bind(
        self, options: StatsOptions
    ) -> tuple[StatsSite, SwappableTLS | None, list[IListeningPort]]:
        site = StatsSite(build_root(self.view, options), self.reactor)
        tls = None
        factory: Any = site
        if options.tls:
            tls = SwappableTLS(tls_context(options.cert_file, options.key_file))
            factory = _LimitedTLSFactory(tls, False, site)
        last: Exception | None = None
        for host in options.bind_hosts():
            try:
                port: IListeningPort = self.reactor.listenTCP(options.port, factory, interface=host)
                return site, tls, [port]
            except Exception as exc:  # no IPv6: "*" falls back to IPv4
                last = exc
        assert last is not None
        raise last

    async def reconfigure(self, options: StatsOptions | None) -> None:
        """Apply a reloaded configuration: swap credentials and certificates in
        place; bind a new address before letting the old one go; re-bind when only
        TLS was switched on or off.  Raises when the new address cannot be bound,
        and then keeps (or binds again) the old one."""
        old = self.options
        same = (
            old is not None
            and options is not None
            and (old.host, old.port, old.tls) == (options.host, options.port, options.tls)
        )
        if same and options is not None and self.ports:
            context = tls_context(options.cert_file, options.key_file) if options.tls else None
            assert self.site is not None
            self.site.resource = build_root(self.view, options)
            if context is not None and self._tls is not None:
                self._tls.context = context
            self.options = options
            return
        if options is None:
            await self.stop()
            self.options = None
            return
        if options.port < 1024 and os.geteuid() != 0:
            raise PermissionError(
                f"cannot bind port {options.port} after dropping privileges: restart mta"
            )
        if old is not None and self.ports and (old.host, old.port) != (options.host, options.port):
            try:
                site, swappable, ports = self._bind(options)  # the old one still serves
            except CannotListenError:
                pass  # e.g. *:P over 127.0.0.1:P: let the old one go first
            else:
                old_ports = self.ports
                self.site, self._tls, self.ports = site, swappable, ports
                self.options = options
                for port in old_ports:
                    await defer.maybeDeferred(port.stopListening)
                return
        await self.stop()
        try:
            self.start(options)
        except Exception:
            self.options = None
            if old is not None:
                try:
                    self.start(old)
                except Exception as exc:
                    log.error("statistics service: cannot bind %s again: %s", old.address, exc)
            raise

    async def stop(self) -> None:
        ports, self.ports = self.ports, []
        for port in ports:
            await defer.maybeDeferred(port.stopListening)
