"""The Twisted side of one milter connection.

Job: open the filter's socket (``inet:host:port`` or ``unix:/path``) within
``milter_connect_timeout``, negotiate, then send one command at a time and
collect the filter's replies within the command or content timeout.
Inputs: a ``MilterSpec`` and the reactor.  Outputs: lists of
``protocol.Response`` per command; any fault (refused, closed, timed out,
broken packet) raises ``MilterError`` with a reason for the log.  The
protocol itself lives in ``mta.milter.protocol``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, UNIXClientEndpoint
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from mta.milter.protocol import COMMAND_NAMES, MilterConnection, MilterError, Response

DEFAULT_ACTIONS = ("accept", "tempfail", "reject", "quarantine", "abort")


@dataclass(frozen=True)
class MilterSpec:
    """One entry of smtpd_milters / non_smtpd_milters, with its settings
    (Postfix 3 per-milter ``{ address, name=value ... }`` overrides)."""

    address: str  # "inet:host:port" or "unix:/path"
    connect_timeout: float = 30.0
    command_timeout: float = 30.0
    content_timeout: float = 300.0
    default_action: str = "tempfail"
    protocol: int = 6


def parse_milters(
    value: str,
    *,
    connect_timeout: float = 30.0,
    command_timeout: float = 30.0,
    content_timeout: float = 300.0,
    default_action: str = "tempfail",
    protocol: int = 6,
) -> list[MilterSpec]:
    """The filters of a milter list, in order.  ``{ inet:h:p, default_action
    = accept, command_timeout = 5s }`` overrides the global settings for one
    filter (Postfix 3.0 syntax).  Raises ValueError on a bad entry."""
    specs: list[MilterSpec] = []
    for item in _items(value):
        if item.startswith("{"):
            parts = [p.strip() for p in item.strip("{}").split(",") if p.strip()]
        else:
            parts = [item]
        if not parts:
            raise ValueError(f"empty milter entry: {item!r}")
        address, options = parts[0], parts[1:]
        _check_address(address)
        opts: dict[str, Any] = {
            "connect_timeout": connect_timeout,
            "command_timeout": command_timeout,
            "content_timeout": content_timeout,
            "default_action": default_action,
            "protocol": protocol,
        }
        for option in options:
            name, sep, raw = option.partition("=")
            name, raw = name.strip(), raw.strip()
            if not sep or name not in opts:
                raise ValueError(f"unknown milter option: {option!r}")
            if name.endswith("_timeout"):
                opts[name] = _seconds(raw)
            elif name == "protocol":
                opts[name] = int(raw)
            else:
                if raw not in DEFAULT_ACTIONS:
                    raise ValueError(f"bad milter default_action: {raw!r}")
                opts[name] = raw
        specs.append(MilterSpec(address, **opts))
    return specs


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _seconds(raw: str) -> float:
    """A Postfix time value ("10s", "2m", "30": seconds)."""
    unit = raw[-1:] if raw[-1:] in _UNITS else "s"
    number = raw[:-1] if raw[-1:] in _UNITS else raw
    if not number.isdigit():
        raise ValueError(f"bad time value: {raw!r}")
    return float(int(number) * _UNITS[unit])


def _items(value: str) -> list[str]:
    """Split on commas/white space outside braces."""
    items: list[str] = []
    depth = 0
    current = ""
    for ch in value:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if depth == 0 and (ch.isspace() or ch == ","):
            if current:
                items.append(current)
            current = ""
            continue
        current += ch
    if current:
        items.append(current)
    return items


def _check_address(address: str) -> None:
    kind, _, rest = address.partition(":")
    if kind == "unix" and rest:
        return
    if kind in ("inet", "inet6") and rest:
        host, _, port = rest.rpartition(":")
        if host and port.isdigit():
            return
    raise ValueError(f"bad milter address: {address!r} (inet:host:port or unix:/path)")


def endpoint(reactor: Any, address: str, timeout: float) -> Any:
    """A client endpoint for a milter address."""
    kind, _, rest = address.partition(":")
    if kind == "unix":
        return UNIXClientEndpoint(reactor, rest, timeout=timeout)  # type: ignore[no-untyped-call]
    host, _, port = rest.rpartition(":")
    host = host.strip("[]")
    if ":" in host:
        return TCP6ClientEndpoint(reactor, host, int(port), timeout=timeout)  # type: ignore[no-untyped-call]
    return TCP4ClientEndpoint(reactor, host, int(port), timeout=timeout)


class _MilterProtocol(protocol.Protocol):
    """Bytes to and from the filter; one pending command at a time."""

    def __init__(self, conn: MilterConnection) -> None:
        self.conn = conn
        self.pending: defer.Deferred[list[Response]] | None = None
        self.collected: list[Response] = []
        self.lost = False
        self.on_progress: Callable[[], None] | None = None

    def dataReceived(self, data: bytes) -> None:
        try:
            responses = self.conn.receive(data)
        except MilterError as e:
            self._fail(e)
            if self.transport is not None:
                self.transport.loseConnection()
            return
        self.collected += responses
        if self.on_progress is not None and any(r.kind == "progress" for r in responses):
            self.on_progress()  # SMFIR_PROGRESS: the filter is alive, restart the clock
        if self.conn.awaiting is None and self.pending is not None and self.collected:
            d, self.pending = self.pending, None
            out, self.collected = self.collected, []
            d.callback(out)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.lost = True
        self._fail(MilterError("connection closed by the filter"))

    def _fail(self, error: MilterError) -> None:
        if self.pending is not None:
            d, self.pending = self.pending, None
            d.errback(error)


class MilterClient:
    """One open connection to one filter."""

    def __init__(self, reactor: Any, spec: MilterSpec) -> None:
        self.reactor = reactor
        self.spec = spec
        self.conn = MilterConnection(version=spec.protocol)
        self._proto: _MilterProtocol | None = None

    async def open(self) -> None:
        """Connect and negotiate (SMFIC_OPTNEG)."""
        factory = protocol.Factory.forProtocol(lambda: _MilterProtocol(self.conn))
        ep = endpoint(self.reactor, self.spec.address, self.spec.connect_timeout)
        try:
            proto = await ep.connect(factory)
        except Exception as e:  # refused, no such socket, connect timeout
            raise MilterError(f"connect: {_reason(e)}") from e
        assert isinstance(proto, _MilterProtocol)
        self._proto = proto
        self.conn.negotiate()
        await self._exchange(self.spec.command_timeout, b"O")

    async def command(
        self, command: bytes, data: bytes = b"", *, content: bool = False
    ) -> list[Response]:
        """Send one command; its replies (none when the filter said it wants
        no reply).  The content timeout applies to message data."""
        expect = self.conn.command(command, data)
        timeout = self.spec.content_timeout if content else self.spec.command_timeout
        if not expect:
            self._flush()
            return []
        return await self._exchange(timeout, command)

    def send_only(self, command: bytes, data: bytes = b"") -> None:
        """A command that has no reply (macros, abort, quit)."""
        if command not in (b"D",):
            self.conn.command(command, data)
        self._flush()

    def _flush(self) -> None:
        proto = self._proto
        out = self.conn.data_to_send()
        if proto is None or proto.lost or proto.transport is None:
            raise MilterError("connection closed by the filter")
        if out:
            proto.transport.write(out)

    async def _exchange(self, timeout: float, command: bytes) -> list[Response]:
        proto = self._proto
        assert proto is not None
        self._flush()
        d: defer.Deferred[list[Response]] = defer.Deferred()
        proto.pending = d
        name = COMMAND_NAMES.get(command, "command")
        timer: IDelayedCall = self.reactor.callLater(
            timeout, self._timeout, d, f"{name}: timeout after {timeout:g}s"
        )

        def progress() -> None:
            if timer.active():
                timer.reset(timeout)

        proto.on_progress = progress
        try:
            return await d
        finally:
            proto.on_progress = None
            if timer.active():
                timer.cancel()

    def _timeout(self, d: defer.Deferred[list[Response]], text: str) -> None:
        proto = self._proto
        if proto is not None and proto.pending is d:
            proto.pending = None
            d.errback(MilterError(text))
            self.close()

    def close(self) -> None:
        """Drop the connection (after SMFIC_QUIT, or on a fault)."""
        proto = self._proto
        self._proto = None
        if proto is not None and proto.transport is not None and not proto.lost:
            proto.transport.loseConnection()


def _reason(e: BaseException) -> str:
    text = str(e).strip()
    return text or type(e).__name__
