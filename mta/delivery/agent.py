"""The delivery agents: one route, a group of recipients → a reply each.

Input: a :class:`mta.delivery.route.Route`, the message's envelope, the
recipients to try and the queue file.  Output: an ``Attempt`` (a reply per
recipient, the relay that gave them, the transport that logs them).  The
route's command picks the agent, as master.cf does in Postfix:

- ``smtp``/``lmtp``: look up the next hop's hosts (MX, or the host itself
  for ``[host]``; a ``unix:`` socket for LMTP), then try them in order: a
  host that cannot be reached, greets with 4xx, or fails the TLS/SASL
  policy passes the mail to the next one (RFC 5321 5.1), within
  ``smtp_mx_address_limit`` addresses and ``smtp_mx_session_limit``
  sessions; the first host that takes part in a transaction decides.  TLS
  per ``smtp_tls_security_level``/``smtp_tls_policy_maps``, DANE, MTA-STS;
  SASL per ``smtp_sasl_password_maps``; a next hop without 8BITMIME gets a
  7-bit copy.  After a transaction the connection may wait in a cache for
  the next message to the same destination
  (``smtp_connection_cache_on_demand``).
- ``virtual``: :mod:`mta.delivery.virtual` (in a thread: it fsyncs).
- ``error``/``retry``: bounce/defer with the next hop's text; ``discard``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from twisted.internet import defer, threads
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from mta import settings
from mta.config import Config
from mta.delivery import dane, mtasts, mx
from mta.delivery.options import DeliverySettings
from mta.delivery.route import Route
from mta.delivery.smtp import (
    ClientConnection,
    ConnectFailed,
    Established,
    SessionPolicy,
    close_connection,
    connection_relay,
    establish,
    open_connection,
    run_transaction,
    transaction_for,
)
from mta.delivery.tls import Policy, TlsPlan, find_policy, make_plan, policy_keys
from mta.delivery.virtual import deliver_blocking
from mta.envelope import Envelope, Recipient
from mta.queue.manager import Attempt
from mta.reply import Reply
from mta.smtp.client import Transaction
from mta.smtp.downgrade import DowngradeError, downgrade
from mta.tables.search import lookup_domain

_log = Logger()

LogLine = Callable[[str, str], None]  # (service, text) → the mail log


@dataclass
class _Cached:
    connection: ClientConnection
    relay: str
    timer: IDelayedCall


class ConnectionCache:
    """Idle connections by destination, each for at most a time limit."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self._idle: dict[str, list[_Cached]] = {}

    def take(self, key: str) -> _Cached | None:
        entries = self._idle.get(key, [])
        while entries:
            entry = entries.pop()
            if entry.timer.active():
                entry.timer.cancel()
            if entry.connection.connected and entry.connection.session.reusable:
                return entry
            entry.connection.close(abort=True)
        return None

    def put(self, key: str, connection: ClientConnection, relay: str, limit: float) -> None:
        entry: _Cached

        def expire() -> None:
            entries = self._idle.get(key, [])
            if entry in entries:
                entries.remove(entry)
            defer.Deferred.fromCoroutine(close_connection(entry.connection))

        entry = _Cached(connection, relay, self.reactor.callLater(limit, expire))
        self._idle.setdefault(key, []).append(entry)

    def close_all(self) -> None:
        idle, self._idle = self._idle, {}
        for entries in idle.values():
            for entry in entries:
                if entry.timer.active():
                    entry.timer.cancel()
                defer.Deferred.fromCoroutine(close_connection(entry.connection))


@dataclass(frozen=True)
class _Target:
    """One address to connect to, and what to demand of it."""

    host: str  # an address, or a socket path
    name: str  # the host name to show and to check certificates against
    plan: TlsPlan | None
    sts_names: tuple[str, ...] = ()


class DeliveryAgent:
    def __init__(self, reactor: Any, cfg: Config, log: LogLine | None = None) -> None:
        self.reactor = reactor
        self.log: LogLine = log or (lambda service, text: _log.info(text))
        self.cache = ConnectionCache(reactor)
        self.https_port = 443  # MTA-STS policy host port (tests change it)
        self.reconfigure(cfg)

    def reconfigure(self, cfg: Config) -> None:
        self.default = settings.delivery(cfg)
        self.by_transport = settings.delivery_by_transport(cfg)
        s = self.default
        self.resolver = mx.make_resolver(s.nameservers, dnssec=s.dnssec)
        self.sts = mtasts.PolicyCache(
            self.reactor,
            self.resolver,
            mtasts.PolicyFetcher(self.reactor, self.resolver, s.trust.cafile, self.https_port),
        )
        self.cache.close_all()

    def settings_for(self, transport: str) -> DeliverySettings:
        return self.by_transport.get(transport, self.default)

    async def __call__(
        self, route: Route, envelope: Envelope, recipients: list[Recipient], message_path: Path
    ) -> Attempt:
        service = route.transport or "smtp"
        count = len(recipients)
        command = route.command
        if command in ("smtp", "lmtp"):
            return await self._smtp(route, envelope, recipients, message_path)
        if command == "virtual":
            s = self.settings_for(route.transport)
            replies: list[Reply] = await threads.deferToThreadPool(
                self.reactor,
                self.reactor.getThreadPool(),
                deliver_blocking,
                s.virtual,
                envelope,
                recipients,
                message_path,
                s.myhostname,
            )
            return Attempt(replies, "virtual", service, [False] * count)
        if command == "error":
            reply = _error_reply(route.nexthop, retry=route.transport == "retry")
            return Attempt([reply] * count, "none", service, [False] * count)
        if command == "discard":
            reply = Reply(250, "0.0", route.nexthop or "discarded")
            return Attempt([reply] * count, "none", service, [False] * count)
        if command == "invalid":
            reply = Reply(451, "3.5", f"bad next hop: {route.nexthop}")
            return Attempt([reply] * count, "none", service, [False] * count)
        if command == "local":
            reply = Reply(
                451,
                "3.0",
                "mail transport unavailable: mta has no local(8) delivery agent; "
                "set local_transport (virtual, lmtp:..., error:...)",
            )
            return Attempt([reply] * count, "none", service, [False] * count)
        reply = Reply(
            451, "3.0", f"mail transport unavailable: unknown transport {route.transport}"
        )
        return Attempt([reply] * count, "none", service, [False] * count)

    # -- SMTP and LMTP -----------------------------------------------------------------
    async def _smtp(
        self, route: Route, envelope: Envelope, recipients: list[Recipient], path: Path
    ) -> Attempt:
        s = self.settings_for(route.transport)
        service = route.transport
        count = len(recipients)
        lmtp = route.command == "lmtp"
        try:
            body = path.open("rb")
        except OSError as e:
            reply = Reply(451, "3.0", f"error reading queue file {path}: {e.strerror}")
            return Attempt([reply] * count, "none", service, [False] * count)
        with body:
            tx = transaction_for(envelope, recipients, _size(body))
            try:
                targets = await self._targets(route, s, lmtp)
            except mx.LookupFailed as e:
                return Attempt([e.reply] * count, "none", service, [False] * count)
            return await self._try_targets(route, s, targets, tx, body, lmtp)

    async def _targets(self, route: Route, s: DeliverySettings, lmtp: bool) -> list[_Target]:
        """The addresses to try, in order, with their TLS plans."""
        if route.unix:
            return [_Target(route.host, route.host, None)]
        domain = route.host
        policy, source = self._tls_policy(route, s, lmtp)
        sts: mtasts.StsPolicy | None = None
        if (
            s.mta_sts
            and not lmtp
            and route.use_mx
            and source == "default"
            and policy.level not in ("none", "dane-only")
        ):
            sts = await self.sts.get(domain)
            if sts is not None and sts.mode == "none":
                sts = None
        use_mx = route.use_mx and not s.dns_disabled
        loop = route.command == "smtp" and route.port == 25
        options = replace(s.lookup, self_addresses=s.lookup.self_addresses if loop else frozenset())
        resolution = await mx.resolve_mx(
            self.reactor, self.resolver, domain, use_mx=use_mx, options=options
        )
        hosts = resolution.hosts
        if sts is not None and sts.mode == "enforce":
            allowed = [h for h in hosts if mtasts.mx_allowed(sts, h.name)]
            if not allowed:
                raise mx.LookupFailed(
                    Reply(
                        451,
                        "7.5",
                        f"MTA-STS policy of {domain} matches none of its MX hosts",
                    )
                )
            hosts = allowed
        nexthop = domain
        targets: list[_Target] = []
        for host in hosts:
            plan: TlsPlan | None = None
            if not lmtp and policy.level != "none":
                level_policy = policy
                if sts is not None and sts.mode == "enforce" and policy.level in ("may", "encrypt"):
                    # RFC 8461 4.2: TLS with a valid certificate for the MX name.
                    level_policy = Policy("verify", ("hostname",), policy.protocols)
                plan = make_plan(
                    level_policy,
                    hostname=host.name,
                    nexthop=nexthop,
                    verify_match=s.tls_verify_match,
                    secure_match=s.tls_secure_match,
                    protocols=s.tls_protocols,
                    mandatory_protocols=s.tls_mandatory_protocols,
                    trust=s.trust,
                )
                if sts is not None and sts.mode == "enforce":
                    plan = replace(plan, source="mta-sts")
                if policy.level in ("dane", "dane-only"):
                    if not s.dnssec:
                        plan = replace(plan, level="may" if policy.level == "dane" else "encrypt")
                    else:
                        lookup = await mx.lookup_tlsa(
                            self.reactor, self.resolver, host.name, route.port
                        )
                        decided = dane.plan_for(
                            plan,
                            lookup,
                            host_secure=host.secure and (resolution.secure or not use_mx),
                        )
                        if isinstance(decided, str):
                            raise mx.LookupFailed(Reply(451, "7.5", decided))
                        plan = decided
            for address in host.addresses:
                targets.append(_Target(address, host.name, plan))
        return targets

    def _tls_policy(self, route: Route, s: DeliverySettings, lmtp: bool) -> tuple[Policy, str]:
        """The destination's policy and where it came from ("policy" table
        or "default")."""
        if lmtp:
            return Policy("none"), "default"
        nexthop = route.nexthop or route.host
        if route.use_mx:
            nexthop = route.host
        found = find_policy(s.tls_policy_maps, policy_keys(nexthop, route.host, route.use_mx))
        if found is not None:
            return found, "policy"
        return Policy(s.tls_level), "default"

    async def _try_targets(
        self,
        route: Route,
        s: DeliverySettings,
        targets: list[_Target],
        tx: Transaction,
        body: IO[bytes],
        lmtp: bool,
    ) -> Attempt:
        service = route.transport
        count = len(tx.recipients)
        cached = self.cache.take(route.key) if s.cache_on_demand else None
        if cached is not None:
            attempt = await self._transaction(route, s, cached.connection, cached.relay, tx, body)
            if attempt is not None:
                return attempt
        last = Attempt(
            [Reply(451, "4.4", f"no address to deliver to for {route.host}")] * count,
            "none",
            service,
            [False] * count,
        )
        sessions = 0
        limit = s.mx_address_limit if not route.unix else 1
        for n, target in enumerate(targets):
            if limit and n >= limit:
                break
            if s.mx_session_limit and sessions >= s.mx_session_limit:
                break
            result, greeted = await self._session(route, s, target, tx, body, lmtp)
            sessions += greeted
            if result is not None:
                if isinstance(result, Attempt):
                    return result
                last = result.attempt
                if not result.next_host:
                    return last
        return last

    async def _session(
        self,
        route: Route,
        s: DeliverySettings,
        target: _Target,
        tx: Transaction,
        body: IO[bytes],
        lmtp: bool,
    ) -> tuple[Attempt | _Failed | None, int]:
        """One connection to ``target``: returns the attempt when a
        transaction took place, a _Failed when this server was no good, and
        how many sessions (greetings) it cost."""
        plan = target.plan
        count = len(tx.recipients)
        for plaintext_retry in (False, True):
            try:
                connection, event = await open_connection(
                    self.reactor,
                    host=target.host,
                    port=route.port,
                    helo_name=s.helo_name,
                    timeouts=s.timeouts,
                    lmtp=lmtp,
                    server_name=target.name,
                    unix=route.unix,
                )
            except ConnectFailed as e:
                return _Failed(
                    Attempt([e.reply] * count, "none", route.transport, [False] * count)
                ), 0
            relay = connection_relay(connection, route.port, unix=route.unix)
            policy = self._session_policy(route, s, target, plan)
            try:
                ready = await establish(connection, event, policy)
            except Exception:
                await connection.close(abort=True)
                raise
            self._log_tls(route.transport, relay, ready, plan, s)
            if ready.failure is None:
                attempt = await self._transaction(route, s, connection, relay, tx, body)
                if attempt is None:  # the connection died before anything was said
                    return _Failed(
                        Attempt(
                            [Reply(451, "4.2", f"lost connection with {connection.session.peer}")]
                            * count,
                            relay,
                            route.transport,
                            [False] * count,
                        )
                    ), 1
                return attempt, 1
            await close_connection(connection)
            await connection.close(abort=True)
            failure = ready.failure
            if (
                ready.tls_failed
                and plan is not None
                and plan.level == "may"
                and not plaintext_retry
            ):
                # Opportunistic TLS: a failed handshake retries in plaintext.
                self.log(route.transport, f"{relay}: {failure.text}; retrying in plaintext")
                plan = None
                continue
            remote = ready.remote  # a refused greeting or EHLO
            if remote and failure.is_permanent and not s.skip_5xx_greeting:
                return Attempt([failure] * count, relay, route.transport, [True] * count), 1
            return _Failed(
                Attempt([failure] * count, relay, route.transport, [remote] * count),
                next_host=ready.try_next_host,
            ), 1
        raise AssertionError("unreachable")

    def _session_policy(
        self, route: Route, s: DeliverySettings, target: _Target, plan: TlsPlan | None
    ) -> SessionPolicy:
        credentials = None
        if s.sasl_enabled and s.sasl_password_maps and route.command != "lmtp":
            credentials = self._password(route, target, s)
        return SessionPolicy(
            tls=plan,
            credentials=credentials,
            mechanisms=s.sasl_mechanisms,
            plaintext_mechs_in_clear=s.sasl_plaintext_in_clear,
            plaintext_mechs_over_tls=s.sasl_plaintext_over_tls,
            auth_soft_bounce=s.sasl_soft_bounce,
        )

    @staticmethod
    def _password(route: Route, target: _Target, s: DeliverySettings) -> tuple[str, str] | None:
        """smtp_sasl_password_maps: the server's host name, then the next
        hop as written (``[relay.example]:587``), then its domain."""
        keys = [target.name, route.nexthop]
        if route.nexthop.startswith("["):
            keys.append(route.nexthop.split("]", 1)[0] + "]")
        for key in dict.fromkeys(k for k in keys if k):
            for table in s.sasl_password_maps:
                value = table.lookup(key)
                if value is None and not key.startswith("["):
                    value = lookup_domain(table, key, False)
                if value is not None:
                    user, _, password = value.strip().partition(":")
                    return user, password
        return None

    def _log_tls(
        self,
        service: str,
        relay: str,
        ready: Established,
        plan: TlsPlan | None,
        s: DeliverySettings,
    ) -> None:
        if ready.tls is None or not ready.tls.established or plan is None or s.tls_loglevel < 1:
            return
        outcome = ready.tls
        self.log(
            service,
            f"{outcome.grade(plan)} TLS connection established to {outcome.describe(relay)}",
        )

    async def _transaction(
        self,
        route: Route,
        s: DeliverySettings,
        connection: ClientConnection,
        relay: str,
        tx: Transaction,
        body: IO[bytes],
    ) -> Attempt | None:
        """One message on a ready connection; None when a cached connection
        turned out dead before the server said anything about it."""
        count = len(tx.recipients)
        session = connection.session
        send_body: IO[bytes] = body
        if tx.needs_8bit and "8BITMIME" not in session.extensions and not session.lmtp:
            try:
                send_body = await self._downgraded(body)
            except DowngradeError as e:
                reply = Reply(
                    554,
                    "6.3",
                    f"host {session.peer} does not support 8BITMIME and the message "
                    f"cannot be converted to 7 bits: {e}",
                )
                self._release(route, s, connection, relay)
                return Attempt([reply] * count, relay, route.transport, [False] * count)
            tx = replace(tx, needs_8bit=False)
        reused = connection.transactions > 0
        replies = await run_transaction(connection, tx, send_body)
        remote = list(connection.remote)
        if reused and not any(remote) and not connection.body_started and not connection.connected:
            # A cached connection the server had closed: nothing was sent,
            # so a fresh connection cannot deliver anything twice.
            await connection.close(abort=True)
            return None
        self._release(route, s, connection, relay)
        return Attempt(replies, relay, route.transport, remote)

    def _release(
        self, route: Route, s: DeliverySettings, connection: ClientConnection, relay: str
    ) -> None:
        """Cache the connection for the next message, or say QUIT."""
        age = self.reactor.seconds() - connection.opened_at
        reusable = (
            s.cache_on_demand
            and connection.connected
            and connection.session.reusable
            and age < s.reuse_time_limit
            and (not s.reuse_count_limit or connection.transactions < s.reuse_count_limit)
        )
        if reusable:
            self.cache.put(route.key, connection, relay, s.cache_time_limit)
            return

        async def close() -> None:
            await close_connection(connection)
            await connection.close(abort=True)

        defer.Deferred.fromCoroutine(close())

    async def _downgraded(self, body: IO[bytes]) -> IO[bytes]:
        def convert() -> bytes:
            body.seek(0)
            return downgrade(body.read())

        data: bytes = await threads.deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), convert
        )
        return io.BytesIO(data)


@dataclass(frozen=True)
class _Failed:
    """A server that did not take part in a transaction."""

    attempt: Attempt
    next_host: bool = True


def _size(body: IO[bytes]) -> int:
    import os

    return os.fstat(body.fileno()).st_size


def _error_reply(text: str, *, retry: bool) -> Reply:
    """error(8)/retry: the next hop is the reason, optionally led by an
    enhanced status (``5.1.1 no such user``)."""
    head, _, rest = text.partition(" ")
    parts = head.split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts) and head[0] in "45":
        kind, detail, reason = head[0], ".".join(parts[1:]), rest or "delivery failed"
    else:
        kind, detail, reason = ("4" if retry else "5"), "0.0", text or "delivery failed"
    if retry:
        kind = "4"
    return Reply(450 if kind == "4" else 550, detail, reason)
