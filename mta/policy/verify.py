"""Address verification: reject_unverified_recipient and reject_unverified_sender.

Input: an address to verify, the :class:`VerifySettings` (Postfix's
address_verify_* parameters) and the reactor.
Output: a :class:`VerifyAnswer` — ``ok``, ``bounce`` (the next hop refused
the address), ``defer`` (it could not be asked, or answered 4xx), ``todo``
(a probe is still running), with the text to show.

Like Postfix verify(8), results are cached: a positive one for
``address_verify_positive_expire_time`` and re-probed in the background
after ``address_verify_positive_refresh_time``; a negative or temporary one
for ``address_verify_negative_expire_time`` / refresh time.  A temporary
failure never replaces a positive result that has not expired.  The cache
lives in ``address_verify_map`` — a file that survives restarts (the
postmap text format, one ``address  status:probed:updated:text`` line per
entry; changes are appended off the reactor thread and the file is
compacted at ``address_verify_cache_cleanup_interval``) — or in memory when
the parameter is empty.  With ``address_verify_map = redis:/etc/mta/redis.cf``
(:mod:`mta.tables.redis`) the nodes of a fleet share the cache: results
are kept in memory and written to Redis (``<key_prefix>verify:<address>``,
expiring with the result); a node that has no fresh result asks Redis
before it probes.  When Redis does not answer in time the node goes on
with its memory cache (:mod:`mta.redisclient` logs it and backs off).

A probe (Postfix sends it through the queue; mta makes it directly) routes
the address like delivery does (``address_verify_relayhost``, else MX),
connects, and sends ``MAIL FROM:<address_verify_sender>`` and ``RCPT
TO:<address>`` — then RSET and QUIT: no DATA, no message.  The RCPT reply
decides.  A query waits for a probe at most
``(address_verify_poll_count - 1) * address_verify_poll_delay`` seconds,
as smtpd's polling does; after that it answers ``todo`` and the probe goes on,
so the client's retry finds the result.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from twisted.internet import defer, threads

from mta.delivery import mx
from mta.delivery.route import Router
from mta.delivery.smtp import (
    ConnectFailed,
    Timeouts,
    close_connection,
    failure_reply,
    open_connection,
    run_transaction,
)
from mta.redisclient import RedisClient, RedisConfig, RedisUnavailable
from mta.reply import Reply
from mta.smtp.client import GreetingRejected, Ready, Transaction
from mta.tables.base import TableError, logical_lines, split_ws
from mta.tables.redis import open_redis

Status = Literal["ok", "defer", "bounce", "todo", "error"]

IN_PROGRESS = "Address verification in progress"

#: Table types whose file mta can keep the cache in (the text format).
FILE_TYPES = frozenset({"hash", "btree", "lmdb", "cdb", "dbm", "sdbm", "texthash"})


@dataclass(frozen=True)
class VerifyAnswer:
    status: Status
    text: str = ""


@dataclass(frozen=True)
class VerifySettings:
    """Postfix's address_verify_* parameters (times in seconds)."""

    map_spec: str = ""  # address_verify_map as written ("" = memory only)
    map_path: Path | None = None
    positive_expire: float = 31 * 86400.0
    positive_refresh: float = 7 * 86400.0
    negative_expire: float = 3 * 86400.0
    negative_refresh: float = 3 * 3600.0
    negative_cache: bool = True
    poll_count: int = 3
    poll_delay: float = 3.0
    cleanup_interval: float = 12 * 3600.0
    sender: str = "double-bounce"  # address_verify_sender, qualified
    helo_name: str = "localhost"
    router: Router = field(default_factory=Router)  # delivery's, with address_verify_relayhost
    lookup: mx.LookupOptions = field(default_factory=mx.LookupOptions)
    nameservers: tuple[str, ...] = ()
    timeouts: Timeouts = field(default_factory=Timeouts)
    shared: RedisConfig | None = None  # address_verify_map = redis:FILE


def parse_map_spec(spec: str, resolve: Callable[[str], Path]) -> Path | None:
    """The file of an address_verify_map value; None for "" (memory).
    Raises TableError for a type mta cannot write."""
    if not spec:
        return None
    kind, sep, name = spec.partition(":")
    if kind == "proxy":
        return parse_map_spec(name, resolve)
    if kind == "redis":
        return None  # shared in Redis (shared_map_config), memory locally
    if not sep or kind not in FILE_TYPES or not name:
        raise TableError(
            f'address_verify_map "{spec}": need one of {", ".join(sorted(FILE_TYPES))}:FILE '
            "(or empty for a cache in memory)"
        )
    return resolve(name)


@dataclass
class Entry:
    status: Literal["ok", "defer", "bounce"]
    updated: float
    text: str
    probed: float = 0.0

    def encode(self) -> str:
        return f"{self.status}:{self.probed:.0f}:{self.updated:.0f}:{self.text}"

    @classmethod
    def decode(cls, value: str) -> Entry | None:
        parts = value.split(":", 3)
        if len(parts) != 4 or parts[0] not in ("ok", "defer", "bounce"):
            return None
        try:
            return cls(parts[0], float(parts[2]), parts[3], float(parts[1]))  # type: ignore[arg-type]
        except ValueError:
            return None


def shared_map_config(spec: str, resolve: Callable[[str], Path]) -> RedisConfig | None:
    """The Redis settings of ``address_verify_map = redis:FILE``; None for
    other types.  Raises TableError for a bad file."""
    kind, _, name = spec.partition(":")
    if kind == "proxy":
        return shared_map_config(name, resolve)
    if kind != "redis":
        return None
    path = resolve(name)
    return open_redis(spec, str(path), path.parent).config


class SharedVerifyCache:
    """Verification results in Redis, so every node of a fleet uses them."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client

    def _rkey(self, address: str) -> str:
        return f"{self.client.config.key_prefix}verify:{_key(address)}"

    async def get(self, address: str) -> Entry | None:
        """The shared entry, or None (absent, unreadable, Redis unavailable)."""
        try:
            value = await self.client.execute("GET", self._rkey(address))
        except RedisUnavailable:
            return None
        if not isinstance(value, bytes):
            return None
        return Entry.decode(value.decode("utf-8", "replace"))

    async def put(self, address: str, entry: Entry, ttl: float) -> None:
        """Store ``entry`` for ``ttl`` seconds; Redis being down is not an error."""
        try:
            await self.client.execute(
                "SET", self._rkey(address), entry.encode(), "EX", max(1, int(ttl))
            )
        except RedisUnavailable:
            pass


def _key(address: str) -> str:
    return address.strip().lower()


def _quote(key: str) -> str:
    if any(c in key for c in ' \t"\\') or key.startswith("#"):
        return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return key


class VerifyCache:
    """The address_verify_map: entries in memory, mirrored to a file."""

    def __init__(self, reactor: Any, path: Path | None) -> None:
        self.reactor = reactor
        self.path = path
        self.entries: dict[str, Entry] = {}
        self._pending: list[str] = []
        self._flush_call: Any = None
        self._writing: defer.Deferred[None] | None = None
        self.warnings: list[str] = []
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as e:
            self.warnings.append(f"{path}: cannot read verify cache: {e.strerror}")
            return
        for line in logical_lines(data, str(path), self.warnings):
            key, value = _split_line(line.text)
            entry = Entry.decode(value) if key else None
            if key and entry is not None:
                self.entries[key] = entry  # a later line is a newer entry
            else:
                self.warnings.append(f"{path}:{line.lineno}: bad verify cache entry -- ignored")

    def get(self, address: str) -> Entry | None:
        return self.entries.get(_key(address))

    def put(self, address: str, entry: Entry) -> None:
        key = _key(address)
        self.entries[key] = entry
        if self.path is None:
            return
        self._pending.append(f"{_quote(key)}\t{entry.encode()}\n")
        if self._flush_call is None:
            self._flush_call = self.reactor.callLater(0.2, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        if not self._pending or self.path is None:
            return
        if self._writing is not None:
            self._flush_call = self.reactor.callLater(0.2, self._flush)
            return
        lines, self._pending = "".join(self._pending), []
        path = self.path
        d = threads.deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), _append, path, lines
        )
        self._writing = d

        def done(result: object) -> None:
            self._writing = None
            if isinstance(result, Exception):
                self.warnings.append(f"{path}: cannot write verify cache: {result}")

        d.addBoth(done)

    async def flush(self) -> None:
        """Write what is pending now (stop, tests)."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        while self._writing is not None:
            await self._writing
        self._flush()
        if self._writing is not None:
            await self._writing

    async def compact(self, keep: Callable[[Entry], bool]) -> None:
        """Drop entries that ``keep`` refuses and rewrite the file whole."""
        for key in [k for k, e in self.entries.items() if not keep(e)]:
            del self.entries[key]
        if self.path is None:
            return
        await self.flush()
        text = "".join(f"{_quote(k)}\t{e.encode()}\n" for k, e in self.entries.items())
        await threads.deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), _rewrite, self.path, text
        )


def _split_line(text: str) -> tuple[str, str]:
    if text.startswith('"'):
        out = []
        i = 1
        while i < len(text):
            if text[i] == "\\" and i + 1 < len(text):
                out.append(text[i + 1])
                i += 2
                continue
            if text[i] == '"':
                return "".join(out), text[i + 1 :].strip()
            out.append(text[i])
            i += 1
        return "", ""
    return split_ws(text)


def _append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def _rewrite(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class AddressVerifier:
    """Answers verification queries from the cache and runs probes."""

    def __init__(
        self,
        reactor: Any,
        settings: VerifySettings,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.reactor = reactor
        self.settings = settings
        self.cache = VerifyCache(reactor, settings.map_path)
        self._log = log
        self.shared: SharedVerifyCache | None = None
        if settings.shared is not None:
            self.shared = SharedVerifyCache(RedisClient(reactor, settings.shared, log=log))
        self._probes: dict[str, defer.Deferred[Entry]] = {}
        self._resolver = mx.make_resolver(settings.nameservers)
        self._cleanup = reactor.callLater(settings.cleanup_interval, self._periodic_cleanup)

    def reconfigure(self, settings: VerifySettings) -> None:
        """A reload: new times and next hop; the cache stays."""
        if settings.nameservers != self.settings.nameservers:
            self._resolver = mx.make_resolver(settings.nameservers)
        if settings.shared != self.settings.shared:
            if self.shared is not None:
                self.shared.client.close()
            self.shared = None
            if settings.shared is not None:
                client = RedisClient(self.reactor, settings.shared, log=self._log)
                self.shared = SharedVerifyCache(client)
        self.settings = replace(settings, map_path=self.settings.map_path)

    # -- queries -------------------------------------------------------------------
    async def query(self, address: str) -> VerifyAnswer:
        s = self.settings
        now = self.reactor.seconds()
        entry = self.cache.get(address)
        if (entry is None or self._expired(entry, now)) and self.shared is not None:
            shared = await self.shared.get(address)  # bounded by the Redis timeout
            if shared is not None and not self._expired(shared, now):
                self.cache.put(address, shared)
                entry = shared
        if entry is not None and not self._expired(entry, now):
            if self._refresh_due(entry, now):
                self._probe(address)  # in the background; answer from the cache
            return VerifyAnswer(entry.status, entry.text)
        probe = self._probe(address)
        wait = max(0.0, (s.poll_count - 1) * s.poll_delay)
        if not probe.called and wait > 0:
            await _first_of(self.reactor, probe, wait)
        entry = self.cache.get(address)
        if entry is None or self._expired(entry, self.reactor.seconds()):
            if probe.called:
                # negative_cache = no: the result was not kept; use it once.
                result = probe.result if isinstance(probe.result, Entry) else None
                if result is not None:
                    return VerifyAnswer(result.status, result.text)
            return VerifyAnswer("todo", IN_PROGRESS)
        return VerifyAnswer(entry.status, entry.text)

    def _expired(self, entry: Entry, now: float) -> bool:
        s = self.settings
        limit = s.positive_expire if entry.status == "ok" else s.negative_expire
        return entry.updated + limit < now

    def _refresh_due(self, entry: Entry, now: float) -> bool:
        s = self.settings
        limit = s.positive_refresh if entry.status == "ok" else s.negative_refresh
        return entry.updated + limit < now

    def _probe(self, address: str) -> defer.Deferred[Entry]:
        key = _key(address)
        running = self._probes.get(key)
        if running is not None:
            return running
        d = defer.Deferred.fromCoroutine(self._run_probe(address))
        self._probes[key] = d
        out: defer.Deferred[Entry] = defer.Deferred()

        def done(entry: Entry) -> Entry:
            self._probes.pop(key, None)
            self._record(address, entry)
            out.callback(entry)
            return entry

        d.addCallback(done)
        self._probes[key] = out
        return out

    def _record(self, address: str, entry: Entry) -> None:
        s = self.settings
        old = self.cache.get(address)
        now = self.reactor.seconds()
        if (
            entry.status == "defer"
            and old is not None
            and old.status == "ok"
            and not self._expired(old, now)
        ):
            return  # a temporary failure does not wipe out a positive result
        if entry.status == "bounce" and not s.negative_cache:
            return
        self.cache.put(address, entry)
        if self.shared is not None:
            ttl = s.positive_expire if entry.status == "ok" else s.negative_expire
            defer.Deferred.fromCoroutine(self.shared.put(address, entry, ttl))

    async def _run_probe(self, address: str) -> Entry:
        try:
            status, text = await self._conversation(address)
        except Exception as e:  # a bug must give an answer, not hang the query
            status, text = "defer", f"address verification error: {e!r}"
        return Entry(status, self.reactor.seconds(), text)

    async def _conversation(self, address: str) -> tuple[Literal["ok", "defer", "bounce"], str]:
        s = self.settings
        route = s.router.route(address)
        if route.command == "error":
            return "bounce", route.nexthop or "undeliverable address"
        if route.command not in ("smtp", "lmtp"):
            # Only SMTP/LMTP next hops can be asked; local and virtual
            # recipients are checked by their recipient tables instead.
            return "ok", f"delivery via {route.command or route.transport} is not probed"
        if route.unix:
            hosts = [mx.MXHost(route.host, 0, (route.host,))]
        else:
            try:
                resolution = await mx.resolve_mx(
                    self.reactor,
                    self._resolver,
                    route.host,
                    use_mx=route.use_mx,
                    options=s.lookup,
                )
            except mx.LookupFailed as e:
                return _classify(e.reply), e.reply.text
            hosts = resolution.hosts
        tx = Transaction(sender=s.sender, recipients=[address], probe=True)
        last: tuple[Literal["ok", "defer", "bounce"], str] = ("defer", "no host to verify with")
        for host in hosts:
            for ip in host.addresses:
                try:
                    conn, event = await open_connection(
                        self.reactor,
                        host=ip,
                        port=route.port,
                        helo_name=s.helo_name,
                        timeouts=s.timeouts,
                        server_name=host.name,
                        lmtp=route.command == "lmtp",
                        unix=route.unix,
                    )
                except ConnectFailed as e:
                    last = ("defer", e.reply.text)
                    continue
                peer = conn.session.peer
                try:
                    if isinstance(event, Ready):
                        replies = await run_transaction(conn, tx, io.BytesIO(b""))
                        await close_connection(conn)
                        reply = replies[0]
                        return _classify(reply), _said(peer, reply, "RCPT TO")
                    if isinstance(event, GreetingRejected):
                        last = (_classify(event.reply), _said(peer, event.reply, "greeting"))
                    else:
                        reply = failure_reply(conn, event)
                        last = ("defer", reply.text)
                    await close_connection(conn)
                finally:
                    await conn.close(abort=True)
        return last

    # -- upkeep -------------------------------------------------------------------
    def _periodic_cleanup(self) -> None:
        self._cleanup = self.reactor.callLater(
            self.settings.cleanup_interval, self._periodic_cleanup
        )
        now = self.reactor.seconds()
        d = defer.Deferred.fromCoroutine(self.cache.compact(lambda e: not self._expired(e, now)))
        d.addErrback(lambda f: self.cache.warnings.append(f"cache cleanup: {f.getErrorMessage()}"))

    async def close(self) -> None:
        if self._cleanup is not None and self._cleanup.active():
            self._cleanup.cancel()
        await self.cache.flush()
        if self.shared is not None:
            self.shared.client.close()


def _classify(reply: Reply) -> Literal["ok", "defer", "bounce"]:
    if reply.is_positive:
        return "ok"
    return "bounce" if reply.is_permanent else "defer"


def _said(peer: str, reply: Reply, command: str) -> str:
    if reply.is_positive:
        return f"host {peer} said: {reply.one_line()}"
    return f"host {peer} said: {reply.one_line()} (in reply to {command} command)"


async def _first_of(reactor: Any, d: defer.Deferred[Entry], seconds: float) -> None:
    """Wait for ``d`` or ``seconds``, whichever is first; never fails."""
    done: defer.Deferred[None] = defer.Deferred()

    def fire(result: object = None) -> object:
        if not done.called:
            done.callback(None)
        return result

    timer = reactor.callLater(seconds, fire)
    d.addBoth(fire)
    await done
    if timer.active():
        timer.cancel()
