"""The PROXY protocol (HAProxy, v1 text and v2 binary) in front of SMTP.

Input: a connection from a load balancer that starts with a PROXY header
(``smtpd_upstream_proxy_protocol = haproxy``).  Output: the same connection,
handed to the wrapped factory's protocol only once the header is read, whose
``getPeer()``/``getHost()`` are the client's and the server address the
header names — so policy, logs and Received: see the real client.

Twisted's parsers (``twisted.protocols.haproxy``) read the header; this
wrapper adds what Postfix does around it: the SMTP greeting waits for the
header, a header that is not complete within ``smtpd_upstream_proxy_timeout``
or is malformed closes the connection with a logged reason, and a ``LOCAL``
(v2) or ``UNKNOWN`` (v1) header — health checks — keeps the proxy's own
address.  With ``smtpd_tls_wrappermode`` the header comes before the TLS
handshake, so this wrapper sits outside the TLS one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import protocol
from twisted.internet.interfaces import IAddress, IDelayedCall
from twisted.internet.protocol import Factory
from twisted.protocols import policies
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._info import ProxyInfo
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.python.failure import Failure
from zope.interface import directlyProvides, providedBy

#: Called with (the proxy's address as seen, the reason) when a header fails.
Warn = Callable[[str, str], None]

_V1_PREFIX = b"PROXY "
_V2_PREFIX = V2Parser.PREFIX


def header_kind(data: bytes) -> str | None:
    """ "v1", "v2", "" (not a PROXY header) or None (too short to tell)."""
    for kind, prefix in (("v1", _V1_PREFIX), ("v2", _V2_PREFIX)):
        n = min(len(data), len(prefix))
        if data[:n] == prefix[:n]:
            return kind if len(data) >= len(prefix) else None
    return ""


class ProxyHeaderProtocol(policies.ProtocolWrapper):
    """Reads the PROXY header, then connects the wrapped protocol."""

    factory: ProxyWrappingFactory

    def __init__(self, factory: ProxyWrappingFactory, wrapped: protocol.Protocol) -> None:
        super().__init__(factory, wrapped)  # type: ignore[arg-type]
        self._buf = b""
        self._parser: V1Parser | V2Parser | None = None
        self._info: ProxyInfo | None = None
        self._timer: IDelayedCall | None = None
        self._connected = False

    def makeConnection(self, transport: Any) -> None:
        directlyProvides(self, providedBy(transport))
        protocol.Protocol.makeConnection(self, transport)  # type: ignore[no-untyped-call]
        self.factory.registerProtocol(self)  # type: ignore[no-untyped-call]
        self._timer = self.factory.reactor.callLater(self.factory.timeout, self._timed_out)

    def dataReceived(self, data: bytes) -> None:
        if self._connected:
            self.wrappedProtocol.dataReceived(data)
            return
        if self._info is not None:
            return  # the connection is being closed
        try:
            if self._parser is None:
                self._buf += data
                kind = header_kind(self._buf)
                if kind is None:
                    return
                if not kind:
                    self._fail("not a PROXY protocol header")
                    return
                self._parser = V1Parser() if kind == "v1" else V2Parser()
                data, self._buf = self._buf, b""
            info, rest = self._parser.feed(data)
        except InvalidProxyHeader:
            self._fail("malformed PROXY protocol header")
            return
        if info is None:
            return
        self._info = info
        self._cancel_timer()
        self._connected = True
        self.wrappedProtocol.makeConnection(self)  # type: ignore[arg-type]
        if rest and self._connected:
            self.wrappedProtocol.dataReceived(rest)

    def _fail(self, reason: str) -> None:
        self._cancel_timer()
        self.factory.warn(_show(self.transport.getPeer()), reason)  # type: ignore[union-attr]
        self._info = ProxyInfo(b"", None, None)
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _timed_out(self) -> None:
        self._timer = None
        self._fail("timeout reading the PROXY protocol header")

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def getPeer(self) -> IAddress:
        if self._info is not None and self._info.source is not None:
            return self._info.source
        return self.transport.getPeer()  # type: ignore[union-attr]

    def getHost(self) -> IAddress:
        if self._info is not None and self._info.destination is not None:
            return self._info.destination
        return self.transport.getHost()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._cancel_timer()
        if self._connected:
            self._connected = False
            super().connectionLost(reason)  # type: ignore[no-untyped-call]
        else:
            self.factory.unregisterProtocol(self)  # type: ignore[no-untyped-call]


class ProxyWrappingFactory(policies.WrappingFactory):
    protocol = ProxyHeaderProtocol

    def __init__(self, wrapped: Factory, *, reactor: Any, timeout: float, warn: Warn) -> None:
        super().__init__(wrapped)  # type: ignore[no-untyped-call]
        self.reactor = reactor
        self.timeout = timeout
        self.warn = warn
        self.noisy = False


def _show(addr: Any) -> str:
    host = getattr(addr, "host", "")
    return f"[{host}]" if host else str(addr)
