"""The Dovecot SASL backend: the Dovecot authentication protocol (version 1.1).

Input: ``smtpd_sasl_path`` (a UNIX socket path, or ``inet:host:port``), the
mechanism and the client's base64 responses.  Output: challenges, success
with the user name Dovecot returns, or failure — as Postfix's
``xsasl_dovecot`` client does.

One connection per smtpd service, opened when first needed and shared by its
sessions; requests are told apart by their id.  The handshake (``VERSION``,
``CPID`` -> ``MECH`` lines, ``DONE``) gives the mechanisms to offer.  If
Dovecot is unreachable no mechanism is offered (AUTH disappears from EHLO) and
an AUTH in progress gets a temporary failure; the next session tries again.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint, connectProtocol
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure as TxFailure

from mta.sasl import (
    Challenge,
    ClientInfo,
    Failure,
    SecurityOptions,
    Step,
    Success,
    TempFailure,
    acceptable,
)

log = logging.getLogger(__name__)

_TIMEOUT = 30.0  # seconds for the handshake and for each answer


class DovecotError(Exception):
    pass


def _escape(value: str) -> str:
    """Dovecot's str_tabescape(): the field separators cannot occur raw."""
    return (
        value.replace("\x01", "\x011")
        .replace("\t", "\x01t")
        .replace("\r", "\x01r")
        .replace("\n", "\x01n")
    )


def _unescape(value: str) -> str:
    out = []
    it = iter(value)
    for c in it:
        if c == "\x01":
            nxt = next(it, "")
            out.append({"1": "\x01", "t": "\t", "r": "\r", "n": "\n"}.get(nxt, nxt))
        else:
            out.append(c)
    return "".join(out)


class _AuthLineProtocol(protocol.Protocol):
    """Lines separated by LF, as the auth server speaks them."""

    MAX_LENGTH = 65536

    def __init__(self, on_line: Callable[[str], None], on_lost: Callable[[str], None]) -> None:
        self.on_line = on_line
        self.on_lost = on_lost
        self._buf = b""

    def connectionMade(self) -> None:
        self.send_line(b"VERSION\t1\t1")
        self.send_line(f"CPID\t{os.getpid()}".encode())

    def send_line(self, line: bytes) -> None:
        assert self.transport is not None
        self.transport.write(line + b"\n")

    def dataReceived(self, data: bytes) -> None:
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        if len(self._buf) > self.MAX_LENGTH:
            assert self.transport is not None
            self.transport.loseConnection()
            return
        for line in lines:
            self.on_line(line.decode("utf-8", "replace").rstrip("\r"))

    def connectionLost(self, reason: TxFailure = protocol.connectionDone) -> None:
        self.on_lost(reason.getErrorMessage())


class DovecotBackend:
    """``smtpd_sasl_type = dovecot``."""

    def __init__(
        self,
        reactor: Any,
        path: str,
        service: str,
        security: SecurityOptions,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.reactor = reactor
        self.warn = warn or (lambda text: log.warning("%s", text))
        self.path = path
        self.service = service
        self.security = security
        self._proto: _AuthLineProtocol | None = None
        self._ready: defer.Deferred[None] | None = None
        self._handshake: list[str] = []
        self._mechs: dict[str, frozenset[str]] = {}
        self._waiters: dict[int, defer.Deferred[list[str]]] = {}
        self._ids = itertools.count(1)
        self._failed_warned = False

    # -- connection ---------------------------------------------------------------
    def _endpoint(self) -> Any:
        if self.path.startswith("inet:"):
            host, _, port = self.path[5:].rpartition(":")
            return TCP4ClientEndpoint(self.reactor, host.strip("[]"), int(port), timeout=10)
        return UNIXClientEndpoint(self.reactor, self.path, timeout=10)  # type: ignore[no-untyped-call]

    async def _connected(self) -> _AuthLineProtocol:
        if self._proto is not None and self._ready is None:
            return self._proto
        if self._ready is None:
            self._ready = defer.Deferred()
            ready = self._ready
            self._handshake = []
            proto = _AuthLineProtocol(self._line, self._lost)
            self._proto = proto
            d = connectProtocol(self._endpoint(), proto)  # type: ignore[no-untyped-call]
            d.addErrback(self._connect_failed, ready)
            timer = self.reactor.callLater(_TIMEOUT, self._handshake_timeout, ready)
            ready.addBoth(_cancel_timer, timer)
        await self._ready
        assert self._proto is not None
        return self._proto

    def _connect_failed(self, failure: TxFailure, ready: defer.Deferred[None]) -> None:
        self._proto = None
        if self._ready is ready:
            self._ready = None
        if not ready.called:
            ready.errback(DovecotError(f"connect to {self.path}: {failure.getErrorMessage()}"))

    def _handshake_timeout(self, ready: defer.Deferred[None]) -> None:
        if not ready.called:
            if self._proto is not None and self._proto.transport is not None:
                self._proto.transport.loseConnection()
            self._proto = None
            self._ready = None
            ready.errback(DovecotError(f"{self.path}: no handshake from the auth server"))

    def _lost(self, reason: str) -> None:
        self._proto = None
        ready, self._ready = self._ready, None
        if ready is not None and not ready.called:
            ready.errback(DovecotError(f"{self.path}: connection lost during handshake"))
        waiters, self._waiters = self._waiters, {}
        for d in waiters.values():
            if not d.called:
                d.errback(DovecotError(f"{self.path}: connection lost: {reason}"))

    def _line(self, line: str) -> None:
        fields = line.split("\t")
        if self._ready is not None:
            self._on_handshake(fields)
            return
        if len(fields) < 2 or not fields[1].isdigit():
            return
        d = self._waiters.pop(int(fields[1]), None)
        if d is not None and not d.called:
            d.callback([_unescape(f) for f in fields])

    def _on_handshake(self, fields: list[str]) -> None:
        assert self._ready is not None
        kind = fields[0]
        if kind == "VERSION" and (len(fields) < 2 or fields[1] != "1"):
            self._fail_handshake(f"unsupported auth protocol version {fields[1:]}")
        elif kind == "MECH" and len(fields) >= 2:
            self._handshake.append("\t".join(fields[1:]))
        elif kind == "DONE":
            mechs: dict[str, frozenset[str]] = {}
            for entry in self._handshake:
                name, *props = entry.split("\t")
                mechs[name.upper()] = frozenset(props)
            self._mechs = mechs
            self._failed_warned = False
            ready, self._ready = self._ready, None
            ready.callback(None)

    def _fail_handshake(self, why: str) -> None:
        ready, self._ready = self._ready, None
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.loseConnection()
        self._proto = None
        if ready is not None and not ready.called:
            ready.errback(DovecotError(f"{self.path}: {why}"))

    # -- the Backend interface ------------------------------------------------------
    async def mechanisms(self, tls: bool) -> tuple[str, ...]:
        try:
            await self._connected()
        except DovecotError as e:
            if not self._failed_warned:
                self.warn(f"SASL: {e}")
                self._failed_warned = True
            return ()
        options = self.security.select(tls)
        return tuple(m for m, props in self._mechs.items() if acceptable(props, options))

    def start(self, mechanism: str, client: ClientInfo) -> _DovecotExchange:
        return _DovecotExchange(self, mechanism, client)

    def new_id(self) -> int:
        return next(self._ids)

    async def request(self, request_id: int, line: str) -> list[str]:
        proto = await self._connected()
        d: defer.Deferred[list[str]] = defer.Deferred()
        self._waiters[request_id] = d
        timer = self.reactor.callLater(_TIMEOUT, self._request_timeout, request_id)
        d.addBoth(_cancel_timer, timer)
        proto.send_line(line.encode("utf-8", "surrogateescape"))
        return await d

    def forget(self, request_id: int) -> None:
        self._waiters.pop(request_id, None)

    def _request_timeout(self, request_id: int) -> None:
        d = self._waiters.pop(request_id, None)
        if d is not None and not d.called:
            d.errback(DovecotError(f"{self.path}: no answer to request {request_id}"))


def _cancel_timer(result: Any, timer: IDelayedCall) -> Any:
    if timer.active():
        timer.cancel()
    return result


class _DovecotExchange:
    def __init__(self, backend: DovecotBackend, mechanism: str, client: ClientInfo) -> None:
        self.backend = backend
        self.mechanism = mechanism
        self.client = client
        self._id: int | None = None

    async def step(self, response: str | None) -> Step:
        b = self.backend
        try:
            if self._id is None:
                self._id = b.new_id()
                c = self.client
                fields = [
                    "AUTH",
                    str(self._id),
                    self.mechanism,
                    f"service={_escape(b.service)}",
                    "nologin",  # Postfix: Dovecot must not log the user in anywhere
                ]
                if c.local_addr:
                    fields.append(f"lip={_escape(c.local_addr)}")
                if c.client_addr:
                    fields.append(f"rip={_escape(c.client_addr)}")
                if c.local_port:
                    fields.append(f"lport={c.local_port}")
                if c.client_port:
                    fields.append(f"rport={c.client_port}")
                if c.tls:
                    fields.append("secured")
                if response is not None:
                    fields.append(f"resp={_escape(response)}")
                answer = await b.request(self._id, "\t".join(fields))
            else:
                line = f"CONT\t{self._id}\t{_escape(response or '')}"
                answer = await b.request(self._id, line)
        except DovecotError as e:
            b.warn(f"SASL: {e}")
            return TempFailure(str(e))
        return _result(answer)

    def cancel(self) -> None:
        if self._id is not None:
            self.backend.forget(self._id)


def _result(fields: list[str]) -> Step:
    kind = fields[0]
    params = dict(f.partition("=")[::2] for f in fields[2:])
    if kind == "OK":
        user = params.get("user", "")
        return Success(user) if user else Failure("no user name from the auth server")
    if kind == "CONT":
        return Challenge(fields[2] if len(fields) > 2 else "")
    reason = params.get("reason", "")
    if "temp" in params:
        return TempFailure(reason)
    return Failure(reason)
