"""check_policy_service: the client of the Postfix policy delegation protocol.

Input: an endpoint as main.cf names it (``inet:127.0.0.1:10023``,
``unix:/run/policyd.sock``, ``unix:private/policy`` under queue_directory,
or ``{ inet:host:port, timeout=10s, default_action=DUNNO, ... }`` with
per-service overrides) and the request attributes (SMTPD_POLICY_README:
``name=value`` lines ending with an empty line).
Output: the server's ``action=`` value, which the restriction evaluates as
an access(5) result; :class:`PolicyError` when the server cannot be asked.

Connections are reused between requests, as Postfix's attr_clnt does:
idle connections wait in a pool and are closed after
``smtpd_policy_service_max_idle``; a connection older than
``smtpd_policy_service_max_ttl`` (or that has served
``smtpd_policy_service_request_limit`` requests) is not reused.  Concurrent
sessions get connections of their own.  Each attempt — connect, send,
answer — is bounded by ``smtpd_policy_service_timeout``; a failed attempt is
retried after ``smtpd_policy_service_retry_delay``, at most
``smtpd_policy_service_try_limit`` attempts in all.  A server that hangs or
answers garbage therefore costs a request at most try_limit * timeout (plus
the delays), and only that request: other sessions use other connections.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from twisted.internet import defer, error, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, UNIXClientEndpoint
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

MAX_RESPONSE = 64 * 1024  # octets of one answer

_TIME = re.compile(r"^(\d+)([smhdw]?)$")
_TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "": 1}


class PolicyError(Exception):
    """The policy server could not be asked, or answered nonsense; or a
    policy service spec is bad (at configuration time)."""


@dataclass(frozen=True)
class PolicyDefaults:
    """main.cf smtpd_policy_service_* values (seconds for times)."""

    timeout: float = 100.0
    max_idle: float = 300.0
    max_ttl: float = 1000.0
    try_limit: int = 2
    retry_delay: float = 1.0
    request_limit: int = 0
    default_action: str = "451 4.3.5 Server configuration problem"
    policy_context: str = ""
    queue_directory: Path = Path(".")


@dataclass(frozen=True)
class PolicyEndpoint:
    """One policy service with its effective settings; hashable, so equal
    specs share one connection pool across reloads."""

    name: str  # as written, without the override list: "inet:127.0.0.1:10023"
    kind: Literal["inet", "unix"]
    host: str = ""
    port: int = 0
    path: str = ""
    timeout: float = 100.0
    max_idle: float = 300.0
    max_ttl: float = 1000.0
    try_limit: int = 2
    retry_delay: float = 1.0
    request_limit: int = 0
    default_action: str = "451 4.3.5 Server configuration problem"
    policy_context: str = ""


def _seconds(name: str, value: str) -> float:
    m = _TIME.match(value.strip())
    if m is None:
        raise PolicyError(f'bad time value for {name}: "{value}"')
    return float(int(m.group(1)) * _TIME_UNITS[m.group(2)])


def _count(name: str, value: str) -> int:
    if not value.strip().isdigit():
        raise PolicyError(f'bad number for {name}: "{value}"')
    return int(value)


def parse_policy_spec(spec: str, defaults: PolicyDefaults | Mapping[str, str]) -> PolicyEndpoint:
    """Parse a check_policy_service argument; raises PolicyError."""
    if not isinstance(defaults, PolicyDefaults):
        defaults = PolicyDefaults()
    overrides: dict[str, str] = {}
    name = spec.strip()
    if name.startswith("{"):
        if not name.endswith("}"):
            raise PolicyError(f'policy service syntax error: "{spec}"')
        body = name[1:-1].strip()
        first = re.match(r"[^\s,]+", body)
        if first is None:
            raise PolicyError(f'empty policy service: "{spec}"')
        name = first.group(0)
        # Values may hold spaces: "{ inet:h:p, default_action = 451 4.3.5 x }".
        for item in _override_items(body[first.end() :]):
            key, sep, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if value.startswith("{") and value.endswith("}"):
                value = value[1:-1].strip()
            if not sep or not key:
                raise PolicyError(f'bad policy service attribute "{item}" in "{spec}"')
            overrides[key] = value
    kind, sep, address = name.partition(":")
    if not sep or kind not in ("inet", "unix") or not address:
        raise PolicyError(f'bad policy service "{name}": need inet:host:port or unix:path')
    host, port, path = "", 0, ""
    if kind == "inet":
        if address.startswith("["):
            inner, bracket, rest_port = address[1:].partition("]")
            host, port_text = inner, rest_port.removeprefix(":")
            if not bracket:
                raise PolicyError(f'bad policy service "{name}": missing "]"')
        else:
            host, _, port_text = address.rpartition(":")
        if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise PolicyError(f'bad policy service "{name}": need inet:host:port')
        port = int(port_text)
    else:
        p = Path(address)
        path = str(p if p.is_absolute() else defaults.queue_directory / p)
    known = {
        "timeout",
        "max_idle",
        "max_ttl",
        "try_limit",
        "retry_delay",
        "request_limit",
        "default_action",
        "policy_context",
    }
    for key in overrides:
        if key not in known:
            raise PolicyError(f'unknown policy service attribute "{key}" in "{spec}"')
    o = overrides
    endpoint = PolicyEndpoint(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        host=host,
        port=port,
        path=path,
        timeout=_seconds("timeout", o["timeout"]) if "timeout" in o else defaults.timeout,
        max_idle=_seconds("max_idle", o["max_idle"]) if "max_idle" in o else defaults.max_idle,
        max_ttl=_seconds("max_ttl", o["max_ttl"]) if "max_ttl" in o else defaults.max_ttl,
        try_limit=_count("try_limit", o["try_limit"]) if "try_limit" in o else defaults.try_limit,
        retry_delay=(
            _seconds("retry_delay", o["retry_delay"])
            if "retry_delay" in o
            else defaults.retry_delay
        ),
        request_limit=(
            _count("request_limit", o["request_limit"])
            if "request_limit" in o
            else defaults.request_limit
        ),
        default_action=o.get("default_action", defaults.default_action),
        policy_context=o.get("policy_context", defaults.policy_context),
    )
    if endpoint.timeout <= 0 or endpoint.try_limit < 1:
        raise PolicyError(f'policy service "{name}": timeout and try_limit must be positive')
    return endpoint


def _override_items(text: str) -> list[str]:
    """Split ``, a=b, c = { x y }`` at commas/white space outside braces,
    keeping ``name = value`` together."""
    items: list[str] = []
    depth = 0
    current = ""
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            if current.strip():
                items.append(current.strip())
            current = ""
            continue
        current += ch
    if current.strip():
        items.append(current.strip())
    # "a=1 b=2" without commas: split at white space before a "name=".
    out: list[str] = []
    for item in items:
        out.extend(p.strip() for p in re.split(r"\s+(?=[A-Za-z_]+\s*=)", item) if p.strip())
    return out


def encode_request(attributes: Mapping[str, str]) -> bytes:
    """``name=value`` lines and the empty line that ends the request."""
    lines = []
    for name, value in attributes.items():
        clean = value.replace("\n", " ").replace("\r", " ")
        lines.append(f"{name}={clean}\n")
    lines.append("\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


def decode_response(data: bytes) -> dict[str, str]:
    """The attributes of an answer (without the final empty line); raises
    PolicyError for a line that is not ``name=value`` or not UTF-8."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError("malformed UTF-8 in policy server response") from None
    attributes: dict[str, str] = {}
    for line in text.split("\n"):
        line = line.removesuffix("\r")
        if not line:
            continue
        name, sep, value = line.partition("=")
        if not sep or not name:
            raise PolicyError(f'malformed response line "{line[:60]}"')
        attributes.setdefault(name, value)
    return attributes


class _PolicyProtocol(protocol.Protocol):
    """One connection: a request out, the answer up to the empty line in."""

    def __init__(self) -> None:
        self._buffer = b""
        self._waiter: defer.Deferred[dict[str, str]] | None = None
        self.lost = False
        self.created = 0.0
        self.requests = 0
        self.idle_timer: IDelayedCall | None = None
        self.lost_notify: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if self._waiter is None:
            if self._buffer.strip():
                # An answer nobody asked for: the stream is out of step.
                self.transport.abortConnection()  # type: ignore[union-attr]
            return
        end = self._buffer.find(b"\n\n")
        if end < 0:
            if len(self._buffer) > MAX_RESPONSE:
                self._fail(PolicyError("response too long"))
                self.transport.abortConnection()  # type: ignore[union-attr]
            return
        answer, self._buffer = self._buffer[: end + 1], self._buffer[end + 2 :]
        waiter, self._waiter = self._waiter, None
        try:
            attributes = decode_response(answer)
        except PolicyError as e:
            waiter.errback(e)
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        waiter.callback(attributes)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.lost = True
        if self.idle_timer is not None and self.idle_timer.active():
            self.idle_timer.cancel()
        self._fail(PolicyError(f"lost connection ({reason.getErrorMessage()})"))
        if not self.lost_notify.called:
            self.lost_notify.callback(None)

    def _fail(self, e: Exception) -> None:
        if self._waiter is not None:
            waiter, self._waiter = self._waiter, None
            waiter.errback(e)

    def ask(self, request: bytes) -> defer.Deferred[dict[str, str]]:
        if self.lost:
            return defer.fail(PolicyError("connection closed"))
        self._waiter = defer.Deferred()
        self.requests += 1
        assert self.transport is not None
        self.transport.write(request)
        return self._waiter

    def close(self) -> None:
        if not self.lost and self.transport is not None:
            self.transport.loseConnection()


@dataclass
class PolicyClient:
    """The connection pool of one endpoint."""

    reactor: Any
    endpoint: PolicyEndpoint
    _idle: list[_PolicyProtocol] = field(default_factory=list)
    _busy: set[_PolicyProtocol] = field(default_factory=set)

    async def request(self, attributes: Mapping[str, str]) -> str:
        """The ``action`` the server answers; PolicyError after the last try."""
        request = encode_request(attributes)
        last: Exception | None = None
        for attempt in range(self.endpoint.try_limit):
            if attempt:
                await _sleep(self.reactor, self.endpoint.retry_delay)
            try:
                return await self._attempt(request)
            except PolicyError as e:
                last = e
        assert last is not None
        raise last

    async def _attempt(self, request: bytes) -> str:
        conn = self._take_idle()
        if conn is None:
            conn = await self._connect()
        self._busy.add(conn)
        answer = conn.ask(request)
        timer = self.reactor.callLater(self.endpoint.timeout, answer.cancel)
        try:
            attributes = await answer
        except defer.CancelledError:
            conn.close()
            raise PolicyError(f"timeout after {self.endpoint.timeout:g}s") from None
        except PolicyError:
            conn.close()
            raise
        finally:
            if timer.active():
                timer.cancel()
            self._busy.discard(conn)
        action = attributes.get("action")
        if action is None:
            conn.close()
            raise PolicyError("missing action attribute in response")
        self._release(conn)
        return action

    def _take_idle(self) -> _PolicyProtocol | None:
        now = self.reactor.seconds()
        while self._idle:
            conn = self._idle.pop()
            if conn.idle_timer is not None and conn.idle_timer.active():
                conn.idle_timer.cancel()
            if conn.lost or now - conn.created >= self.endpoint.max_ttl:
                conn.close()
                continue
            return conn
        return None

    def _release(self, conn: _PolicyProtocol) -> None:
        e = self.endpoint
        now = self.reactor.seconds()
        spent = e.request_limit and conn.requests >= e.request_limit
        if conn.lost or spent or now - conn.created >= e.max_ttl:
            conn.close()
            return
        conn.idle_timer = self.reactor.callLater(e.max_idle, self._expire, conn)
        self._idle.append(conn)

    def _expire(self, conn: _PolicyProtocol) -> None:
        conn.idle_timer = None
        if conn in self._idle:
            self._idle.remove(conn)
        conn.close()

    async def _connect(self) -> _PolicyProtocol:
        e = self.endpoint
        if e.kind == "unix":
            endpoint: Any = UNIXClientEndpoint(  # type: ignore[no-untyped-call]
                self.reactor, e.path, timeout=e.timeout
            )
        elif ":" in e.host:
            endpoint = TCP6ClientEndpoint(  # type: ignore[no-untyped-call]
                self.reactor, e.host, e.port, timeout=e.timeout
            )
        else:
            endpoint = TCP4ClientEndpoint(self.reactor, e.host, e.port, timeout=e.timeout)
        attempt = endpoint.connect(protocol.Factory.forProtocol(_PolicyProtocol))
        attempt.addTimeout(e.timeout, self.reactor)
        try:
            conn: _PolicyProtocol = await attempt
        except error.ConnectionRefusedError:
            raise PolicyError("Connection refused") from None
        except (defer.TimeoutError, error.TimeoutError):
            raise PolicyError("connect timeout") from None
        except (error.ConnectError, OSError) as exc:
            raise PolicyError(str(exc) or exc.__class__.__name__) from None
        conn.created = self.reactor.seconds()
        return conn

    async def close(self) -> None:
        """Close every connection (daemon stop)."""
        conns = list(self._idle) + list(self._busy)
        self._idle.clear()
        waits = []
        for conn in conns:
            if conn.idle_timer is not None and conn.idle_timer.active():
                conn.idle_timer.cancel()
            if not conn.lost:
                waits.append(conn.lost_notify)
                conn.close()
        if waits:
            await defer.DeferredList(waits, consumeErrors=True)


async def _sleep(reactor: Any, seconds: float) -> None:
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    await d
