"""A small Redis client: the RESP2 protocol without I/O, and a Twisted adapter
with bounded waits and a circuit breaker.

Job: let shared state (the address verification cache, ...) live in Redis
without ever stalling an SMTP session.

Inputs: commands as argument lists; bytes from the server; a
:class:`RedisConfig` (from a ``redis:`` table file, see
:mod:`mta.tables.redis`) and the reactor.
Outputs: :func:`encode_command` (the bytes of one command),
:class:`RespParser` (bytes in, replies out: ``bytes``, ``int``, ``None``,
``list`` or :class:`RedisError`), and :class:`RedisClient`, whose
``execute`` answers within ``timeout`` seconds or raises
:class:`RedisUnavailable`.

The breaker: when a command fails for want of a server (refused, timed
out, connection lost), the client logs one line, answers every command at
once with RedisUnavailable for ``retry_after`` seconds, then tries again;
the first success logs that Redis is back.  Callers fall back to their
local behaviour meanwhile.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, UNIXClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

_log = Logger()

RespValue = Union[bytes, int, None, "RedisError", list["RespValue"]]


class RedisError(Exception):
    """An error reply (``-ERR ...``) from the server."""


class RedisUnavailable(Exception):
    """No answer from Redis: down, too slow, or the breaker is open."""


class ProtocolError(Exception):
    """Bytes that are not RESP."""


@dataclass(frozen=True)
class RedisConfig:
    """Where Redis is and how long to wait for it."""

    host: str = "127.0.0.1"
    port: int = 6379
    unix: str = ""  # a socket path instead of host:port
    database: int = 0
    password: str = ""
    username: str = ""
    key_prefix: str = ""
    timeout: float = 1.0  # connect and per-command, seconds
    retry_after: float = 10.0  # circuit breaker: seconds before trying again

    @property
    def address(self) -> str:
        if self.unix:
            return f"unix:{self.unix}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def encode_command(*args: bytes | str | int | float) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode("utf-8")
        else:
            data = str(arg).encode("ascii")
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


MAX_BULK = 512 * 1024 * 1024


class RespParser:
    """RESP2 replies from a byte stream, fed in any pieces."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[RespValue]:
        """Append ``data``; return every reply now complete, in order."""
        self._buf += data
        replies: list[RespValue] = []
        while True:
            parsed = self._parse(0)
            if parsed is None:
                break
            reply, end = parsed
            del self._buf[:end]
            replies.append(reply)
        return replies

    def _line(self, pos: int) -> tuple[bytes, int] | None:
        end = self._buf.find(b"\r\n", pos)
        if end < 0:
            return None
        return bytes(self._buf[pos:end]), end + 2

    def _parse(self, pos: int) -> tuple[RespValue, int] | None:
        if pos >= len(self._buf):
            return None
        kind = self._buf[pos : pos + 1]
        got = self._line(pos + 1)
        if got is None:
            return None
        line, pos = got
        if kind == b"+":
            return line, pos
        if kind == b"-":
            return RedisError(line.decode("utf-8", "replace")), pos
        if kind == b":":
            return _int(line), pos
        if kind == b"$":
            n = _int(line)
            if n == -1:
                return None, pos
            if n < 0 or n > MAX_BULK:
                raise ProtocolError(f"bad bulk length {n}")
            if len(self._buf) < pos + n + 2:
                return None
            if self._buf[pos + n : pos + n + 2] != b"\r\n":
                raise ProtocolError("bulk string not followed by CRLF")
            return bytes(self._buf[pos : pos + n]), pos + n + 2
        if kind == b"*":
            n = _int(line)
            if n == -1:
                return None, pos
            if n < 0:
                raise ProtocolError(f"bad array length {n}")
            items: list[RespValue] = []
            for _ in range(n):
                sub = self._parse(pos)
                if sub is None:
                    return None
                item, pos = sub
                items.append(item)
            return items, pos
        raise ProtocolError(f"unknown reply type {bytes(kind)!r}")


def _int(line: bytes) -> int:
    try:
        return int(line)
    except ValueError:
        raise ProtocolError(f"bad integer {line!r}") from None


class _RedisProtocol(Protocol):
    """Sends commands and matches replies to them in order (pipelining)."""

    def __init__(self) -> None:
        self.parser = RespParser()
        self.waiting: deque[defer.Deferred[RespValue]] = deque()
        self.lost = False

    def send(self, data: bytes) -> defer.Deferred[RespValue]:
        d: defer.Deferred[RespValue] = defer.Deferred()
        self.waiting.append(d)
        assert self.transport is not None
        self.transport.write(data)
        return d

    def dataReceived(self, data: bytes) -> None:
        try:
            replies = self.parser.feed(data)
        except ProtocolError as e:
            self._fail(RedisUnavailable(f"protocol error: {e}"))
            assert self.transport is not None
            self.transport.loseConnection()
            return
        for reply in replies:
            if self.waiting:
                self.waiting.popleft().callback(reply)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True
        self._fail(RedisUnavailable("connection lost"))

    def _fail(self, exc: Exception) -> None:
        while self.waiting:
            d = self.waiting.popleft()
            if not d.called:
                d.errback(exc)


class RedisClient:
    """One lazily opened connection to Redis, bounded waits, a breaker."""

    def __init__(
        self,
        reactor: Any,
        config: RedisConfig,
        *,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.reactor = reactor
        self.config = config
        self.log = log or (lambda text: _log.warn(text))
        self._proto: _RedisProtocol | None = None
        self._conn_waiters: list[defer.Deferred[_RedisProtocol]] = []
        self._down_until = 0.0
        self._down = False

    @property
    def available(self) -> bool:
        """False while the breaker is open."""
        return bool(self.reactor.seconds() >= self._down_until)

    async def execute(self, *args: bytes | str | int | float) -> RespValue:
        """Run one command; its reply (an error reply is returned as a
        RedisError value, not raised).  Raises RedisUnavailable."""
        if not self.available:
            raise RedisUnavailable(f"redis {self.config.address}: down, not retried yet")
        try:
            proto = await self._connection()
            reply: RespValue = await self._bounded(proto.send(encode_command(*args)), proto)
        except RedisUnavailable as e:
            self._trip(str(e))
            raise
        if self._down:
            self._down = False
            self.log(f"redis {self.config.address}: reachable again")
        return reply

    def _trip(self, reason: str) -> None:
        self._down_until = self.reactor.seconds() + self.config.retry_after
        self._drop()
        if not self._down:
            self._down = True
            self.log(
                f"warning: redis {self.config.address}: {reason}; using local state"
                f" for {self.config.retry_after:g}s"
            )

    def _drop(self) -> None:
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None and not proto.lost:
            proto.transport.abortConnection()  # type: ignore[attr-defined]

    async def _bounded(self, d: defer.Deferred[Any], proto: _RedisProtocol | None) -> Any:
        """``d``'s result, or RedisUnavailable after ``timeout`` seconds."""
        timed_out = []

        def on_timeout() -> None:
            timed_out.append(True)
            d.cancel()

        timer = self.reactor.callLater(self.config.timeout, on_timeout)
        try:
            return await d
        except defer.CancelledError:
            raise RedisUnavailable(f"no answer within {self.config.timeout:g}s") from None
        except RedisUnavailable:
            raise
        except Exception as e:  # connection refused, DNS, ...
            raise RedisUnavailable(str(e) or type(e).__name__) from None
        finally:
            if timer.active():
                timer.cancel()
            if timed_out and proto is not None:
                self._drop()

    async def _connection(self) -> _RedisProtocol:
        if self._proto is not None and not self._proto.lost:
            return self._proto
        waiter: defer.Deferred[_RedisProtocol] = defer.Deferred()
        self._conn_waiters.append(waiter)
        if len(self._conn_waiters) == 1:  # the first one starts the connect
            connect = defer.Deferred.fromCoroutine(self._connect())
            connect.addBoth(self._connected)
        result: _RedisProtocol = await self._bounded(waiter, None)
        return result

    def _connected(self, result: _RedisProtocol | Failure) -> None:
        waiters, self._conn_waiters = self._conn_waiters, []
        for w in waiters:
            if w.called:
                continue  # timed out already
            if isinstance(result, Failure):
                w.errback(result)
            else:
                w.callback(result)

    async def _connect(self) -> _RedisProtocol:
        c = self.config
        if c.unix:
            endpoint: Any = UNIXClientEndpoint(  # type: ignore[no-untyped-call]
                self.reactor, c.unix, timeout=c.timeout
            )
        elif ":" in c.host:
            endpoint = TCP6ClientEndpoint(  # type: ignore[no-untyped-call]
                self.reactor, c.host, c.port, timeout=c.timeout
            )
        else:
            endpoint = TCP4ClientEndpoint(self.reactor, c.host, c.port, timeout=c.timeout)
        proto: _RedisProtocol = await endpoint.connect(Factory.forProtocol(_RedisProtocol))
        try:
            if c.password:
                auth = (c.username, c.password) if c.username else (c.password,)
                _check(await self._bounded(proto.send(encode_command("AUTH", *auth)), proto))
            if c.database:
                _check(await self._bounded(proto.send(encode_command("SELECT", c.database)), proto))
        except BaseException:
            if proto.transport is not None:
                proto.transport.abortConnection()  # type: ignore[attr-defined]
            raise
        self._proto = proto
        return proto

    def close(self) -> None:
        """Close the connection (stop, reload)."""
        self._drop()


def _check(reply: RespValue) -> None:
    if isinstance(reply, RedisError):
        raise RedisUnavailable(f"refused: {reply}")
