"""The SMTP server's Twisted adapter: bytes in, replies out; asks policy, queues.

Input: a TCP connection (possibly behind a PROXY header, possibly implicit
TLS).  The sans-I/O :class:`mta.smtp.server.ServerSession` parses it into
events; this module answers the events that need a decision, one method per
stage — ``_on_connect``, ``_on_helo``, ``_on_mail``, ``_on_rcpt``,
``_on_data``, ``_on_message_end``, ``_on_starttls``, ``_on_auth`` — using the
restriction lists, the per-client limits (:mod:`mta.anvil`), the SASL
backend (:mod:`mta.sasl`), TLS (:mod:`mta.tls`) and the queue.  While a
decision is pending (the queue's fsync runs in a thread, SASL asks Dovecot)
the transport is paused and the session parses nothing further, so pipelined
commands are answered in order (RFC 2920).

Output: messages committed to the queue store before their 250, handed to
the queue manager; mail log lines in Postfix's format; counters.

Hardening: ``smtpd_timeout`` (per read, or per command with
``smtpd_per_request_deadline``), the soft error limit's reply delay
(``smtpd_error_sleep_time``, a timer: the reactor never sleeps), and a pause
after a burst of pipelined commands so that one client cannot hold the
reactor.
"""

from __future__ import annotations

import email.utils
import logging
import re
import time as _time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from mta import sasl
from mta.anvil import Anvil
from mta.delivery.bcc import NOTIFY as BCC_NOTIFY
from mta.delivery.bcc import BccSettings, extra_recipients
from mta.delivery.virtual import VirtualMailboxes
from mta.envelope import Envelope, Recipient
from mta.maillog import MailLog
from mta.milter.config import MilterSettings
from mta.milter.stages import SmtpdMilters
from mta.policy.checks import Decision, SmtpdPolicy
from mta.policy.content import ContentChecks, ContentFilter, ContentResult
from mta.policy.restrictions import Domains, Facts, Note, Verdict
from mta.policy.runtime import PolicyRuntime
from mta.queue.diskspace import DiskSpace
from mta.redisclient import RedisClient, RedisConfig
from mta.redisrates import SharedRates
from mta.reply import Reply
from mta.smtp import server as smtp
from mta.stats.counters import Counters
from mta.tables import LookupTable
from mta.tables.matchlist import NetworkList
from mta.tls import ServerTls, TlsInfo, describe

log = logging.getLogger(__name__)

_MESSAGE_ID = re.compile(rb"^Message-Id:[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE)
_HEADER_SCAN_LIMIT = 64 * 1024
_BURST = 200  # events handled before the reactor gets a turn


@dataclass(frozen=True)
class TlsSettings:
    """smtpd_tls_*: ``server`` is None when no certificate is configured
    (then STARTTLS is not offered, or answered 454 with ``encrypt``)."""

    level: str = "none"  # none, may, encrypt
    server: ServerTls | None = None
    wrappermode: bool = False
    received_header: bool = True


@dataclass(frozen=True)
class SaslSettings:
    """smtpd_sasl_*; ``tables`` are the opened smtpd_sasl_password_maps."""

    enabled: bool = False
    type: str = "dovecot"
    path: str = ""
    service: str = "smtp"
    security: sasl.SecurityOptions = field(default_factory=sasl.SecurityOptions)
    tables: tuple[LookupTable, ...] = ()
    authenticated_header: bool = False


@dataclass(frozen=True)
class Limits:
    """Per-client limits (anvil) and the error tarpit; 0 means no limit."""

    connection_count: int = 50
    connection_rate: int = 0
    message_rate: int = 0
    recipient_rate: int = 0
    auth_rate: int = 0
    exceptions: NetworkList | None = None  # smtpd_client_event_limit_exceptions
    rate_time_unit: float = 60.0
    soft_error_limit: int = 10
    error_sleep: float = 1.0
    per_record_deadline: bool = False
    min_data_rate: int = 500
    rate_shared: RedisConfig | None = None  # anvil_rate_map = redis:FILE (fleet-wide rates)


@dataclass(frozen=True)
class SmtpdSettings:
    """Everything one smtpd service needs, frozen at (re)load time.  A session
    keeps the settings it started with, so a reload never changes the rules
    in the middle of a transaction."""

    service: str  # master.cf service name, e.g. "2525" or "submission"
    session: smtp.ServerSettings
    restrictions: SmtpdPolicy  # smtpd_*_restrictions, compiled (mta.policy.checks)
    domains: Domains
    mail_name: str = "mta"
    timeout: float = 300.0  # smtpd_timeout
    max_sessions: int = 100  # master.cf maxproc / default_process_limit
    local_recipients_unknown: bool = True  # no local delivery: mydestination users are unknown
    tls: TlsSettings = field(default_factory=TlsSettings)
    sasl: SaslSettings = field(default_factory=SaslSettings)
    limits: Limits = field(default_factory=Limits)
    proxy_protocol: str = ""  # smtpd_upstream_proxy_protocol
    proxy_timeout: float = 5.0
    bcc: BccSettings = field(default_factory=BccSettings)  # added recipients (cleanup)
    virtual: VirtualMailboxes | None = None  # virtual_mailbox_maps users are known
    content: ContentChecks = field(default_factory=ContentChecks)  # header/body_checks
    milters: MilterSettings = field(default_factory=MilterSettings)  # smtpd_milters


def make_sasl_backend(
    reactor: Any, s: SaslSettings, warn: Callable[[str], None] | None = None
) -> sasl.Backend:
    if s.type == "table":
        from mta.sasl.table import TableBackend

        return TableBackend(reactor, s.tables, s.security, warn)
    from mta.sasl.dovecot import DovecotBackend

    return DovecotBackend(reactor, s.path, s.service, s.security, warn)


class SmtpdFactory(protocol.Factory):
    """One per listener.  ``settings`` is swapped whole on reload; the
    per-client counters and the SASL connection outlive a reload."""

    noisy = False  # the mail log says what matters; no "Starting factory" lines

    def __init__(
        self,
        reactor: Any,
        settings: SmtpdSettings,
        *,
        store: Any,
        submit: Callable[[Envelope], None],
        maillog: MailLog,
        counters: Counters,
        sessions: set[SMTPServerProtocol],
        policy: PolicyRuntime | None = None,
    ) -> None:
        self.reactor = reactor
        self.settings = settings
        # DNS, policy servers, address verification: shared by all listeners
        # of the daemon and kept across reloads (mta.policy.runtime).
        self.policy = policy if policy is not None else PolicyRuntime(reactor)
        self.store = store
        self.submit = submit
        self.maillog = maillog
        self.counters = counters
        self.sessions = sessions  # shared by all listeners: stop waits on them
        self.count = 0
        self.diskspace: DiskSpace | None = None  # set by the daemon: queue_minfree
        self.anvil = Anvil(settings.limits.rate_time_unit)
        self._sasl: tuple[SaslSettings, sasl.Backend] | None = None

    def buildProtocol(self, addr: Any) -> SMTPServerProtocol:
        self.anvil.time_unit = self.settings.limits.rate_time_unit
        self._share_rates(self.settings.limits.rate_shared)
        return SMTPServerProtocol(self, self.settings)

    def _share_rates(self, config: RedisConfig | None) -> None:
        """anvil_rate_map: count rates fleet-wide (a reload may change it)."""
        current = self.anvil.shared
        if isinstance(current, SharedRates) and current.client.config == config:
            return
        if current is None and config is None:
            return
        if isinstance(current, SharedRates):
            current.close()
        self.anvil.shared = None
        if config is not None:
            log = self.maillog

            client = RedisClient(self.reactor, config, log=lambda t: log.line("anvil", t))
            self.anvil.shared = SharedRates(client)

    def _sasl_warning(self, text: str) -> None:
        self.maillog.line("smtpd", f"warning: {text}")

    def sasl_backend(self, s: SaslSettings) -> sasl.Backend | None:
        """The backend for these settings, kept while they stay the same."""
        if not s.enabled:
            return None
        if self._sasl is None or self._sasl[0] != s:
            self._sasl = (s, make_sasl_backend(self.reactor, s, self._sasl_warning))
        return self._sasl[1]


class SmtpdListenerFactory(protocol.Factory):
    """What a listening port serves: the SMTP factory behind implicit TLS
    (smtpd_tls_wrappermode) and a PROXY header (smtpd_upstream_proxy_protocol),
    as the service's *current* settings say, so a reload can change them
    without re-binding.  PROXY comes first on the wire, then TLS."""

    noisy = False

    def __init__(self, smtpd: SmtpdFactory) -> None:
        self.smtpd = smtpd
        self._chain: tuple[tuple[object, ...], Any] | None = None

    def buildProtocol(self, addr: Any) -> Any:
        s = self.smtpd.settings
        key = (s.tls.wrappermode, s.tls.server, s.proxy_protocol, s.proxy_timeout)
        if self._chain is None or self._chain[0] != key:
            self._chain = (key, self._build(s))
        return self._chain[1].buildProtocol(addr)

    def _build(self, s: SmtpdSettings) -> protocol.Factory:
        from twisted.protocols.tls import TLSMemoryBIOFactory

        from mta.proxy import ProxyWrappingFactory

        front: Any = self.smtpd
        if s.tls.wrappermode and s.tls.server is not None:
            front = TLSMemoryBIOFactory(s.tls.server.context_factory, False, front)
        if s.proxy_protocol == "haproxy":
            maillog = self.smtpd

            def warn(peer: str, reason: str) -> None:
                maillog.maillog.line("smtpd", f"warning: haproxy read: {reason} from {peer}")

            front = ProxyWrappingFactory(
                front, reactor=self.smtpd.reactor, timeout=s.proxy_timeout, warn=warn
            )
        factory: protocol.Factory = front
        return factory


class SMTPServerProtocol(protocol.Protocol):
    def __init__(self, factory: SmtpdFactory, settings: SmtpdSettings) -> None:
        self.factory = factory
        self.settings = settings
        self.session = smtp.ServerSession(settings.session, tls=settings.tls.wrappermode)
        self.facts = Facts(client_addr="")
        self.sasl = factory.sasl_backend(settings.sasl)
        self._exchange: sasl.Exchange | None = None
        self._auth_mechanism = ""
        self._busy = False  # a decision (or a delayed reply) is being awaited
        self._timer: IDelayedCall | None = None
        self._deadline = 0.0
        self._message: Any = None  # the queue's IncomingMessage while in DATA
        self._recipients: list[Recipient] = []
        self._mail: smtp.MailFrom | None = None
        self._header_buf = b""
        self._message_id = ""
        self._stats: dict[str, int] = {}
        self._over_limit = False
        self._closed = False
        self._anvil_counted = False
        self._client_port = 0
        self._local = ("", 0)
        self._tls_info: TlsInfo | None = None
        self._tls_started = settings.tls.wrappermode
        self._last_command = "CONNECT"
        self._content: ContentFilter | None = None  # header/body_checks of the message
        self._milters: SmtpdMilters | None = None  # smtpd_milters (mta.milter)
        self._transactions = 0
        self.in_transaction_done: defer.Deferred[None] | None = None
        self._gone: defer.Deferred[None] | None = None

    # -- connection -----------------------------------------------------------
    def connectionMade(self) -> None:
        transport: Any = self.transport
        peer = transport.getPeer()
        host = getattr(peer, "host", "")
        self._client_port = int(getattr(peer, "port", 0) or 0)
        local = transport.getHost()
        self._local = (str(getattr(local, "host", "")), int(getattr(local, "port", 0) or 0))
        self.facts.client_addr = host.removeprefix("::ffff:") if "." in host else host
        self.facts.client_name = "localhost" if host in ("127.0.0.1", "::1") else "unknown"
        f = self.factory
        f.count += 1
        f.sessions.add(self)
        f.counters.active_sessions += 1
        f.maillog.line("smtpd", f"connect from {self.facts.client}")
        if self.settings.milters.active:
            self._milters = SmtpdMilters(
                f.reactor,
                self.settings.milters,
                hostname=self.settings.session.hostname,
                log=lambda text: f.maillog.line("smtpd", text),
            )
            self._milters.set_client(
                self.facts.client_name, self.facts.client_addr, self._client_port, self._local
            )
        refusal = self._on_connect()
        if refusal is not None:
            self.session.close(refusal)
            self._flush()
            return
        r = self.settings.restrictions
        if not r.delay_reject and r.client.items:
            # smtpd_client_restrictions at connect (may wait for DNS).
            self._reset_timer()
            self._pause()
            d = defer.Deferred.fromCoroutine(self._client_check())
            d.addErrback(self._decision_failed)
            return
        self._greet()

    def _greet(self) -> None:
        self.session.start()
        self._reset_timer()
        self._flush()

    async def _client_check(self) -> None:
        self._update_facts()
        decision = await self.settings.restrictions.check_client(self.facts, self.factory.policy)
        self._busy = False
        if self._closed:
            return
        refusal = self._policy_reply(decision, "CONNECT")
        if refusal is not None:
            self.session.close(refusal)
            self._flush()
            return
        self._resume_transport()
        self._greet()
        self._run()

    def _on_connect(self) -> Reply | None:
        """Stage: connection.  Session and per-client limits, then (without
        smtpd_delay_reject) smtpd_client_restrictions."""
        host = self.settings.session.hostname
        if self.factory.count > self.settings.max_sessions:
            self._over_limit = True
            return Reply(421, "3.2", f"{host} Error: too many connections")
        addr = self.facts.client_addr
        lim = self.settings.limits
        if not self._exempt():
            self._anvil_counted = True
            count, rate = self.factory.anvil.connect(addr, self.factory.reactor.seconds())
            service = self.settings.service
            if lim.connection_count and count > lim.connection_count:
                self._warn(
                    f"Connection concurrency limit exceeded: {count} from {self.facts.client}"
                    f" for service {service}"
                )
                return Reply(421, "7.0", f"{host} Error: too many connections from {addr}")
            if lim.connection_rate and rate > lim.connection_rate:
                self._warn(
                    f"Connection rate limit exceeded: {rate} from {self.facts.client}"
                    f" for service {service}"
                )
                return Reply(421, "7.0", f"{host} Error: too many connections from {addr}")
        return None

    def _exempt(self) -> bool:
        exceptions = self.settings.limits.exceptions
        return exceptions is not None and exceptions.matches(self.facts.client_addr)

    def _warn(self, text: str) -> None:
        self.factory.maillog.line("smtpd", f"warning: {text}")

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self._closed:
            return
        self._closed = True
        self._cancel_timer()
        self._abort_message()
        if self._exchange is not None:
            self._exchange.cancel()
            self._exchange = None
        if self._milters is not None:
            self._milters.close()
        f = self.factory
        if self._anvil_counted:
            f.anvil.disconnect(self.facts.client_addr)
        f.count -= 1
        f.sessions.discard(self)
        f.counters.active_sessions -= 1
        if self._tls_started and self._tls_info is None and not self.session.closed:
            f.maillog.line(
                "smtpd",
                f"SSL_accept error from {self.facts.client}: {reason.getErrorMessage()}",
            )
        if not self.session.closed:
            f.maillog.line(
                "smtpd", f"lost connection after {self._last_command} from {self.facts.client}"
            )
        counts = " ".join(f"{k}={v}" for k, v in self._stats.items())
        total = sum(self._stats.values())
        suffix = f" {counts} commands={total}" if counts else ""
        f.maillog.line("smtpd", f"disconnect from {self.facts.client}{suffix}")
        if self.in_transaction_done is not None and not self.in_transaction_done.called:
            self.in_transaction_done.callback(None)
        if self._gone is not None and not self._gone.called:
            self._gone.callback(None)

    @property
    def in_transaction(self) -> bool:
        """Between MAIL and the reply to end of data: a stop waits for these."""
        return self._mail is not None or self._busy

    def shutdown(self) -> defer.Deferred[None]:
        """Daemon stop: close an idle session now with 421 (RFC 5321 3.8);
        the Deferred fires when the connection is closed (replies written)."""
        if self._closed:
            return defer.succeed(None)
        if self._gone is None:
            self._gone = defer.Deferred()
        gone = self._gone
        self.session.close(
            Reply(421, "3.2", f"{self.settings.session.hostname} Service shutting down")
        )
        self._write_out()
        return gone

    # -- timeouts ---------------------------------------------------------------
    def _reset_timer(self, seconds: float | None = None) -> None:
        """(Re)start the smtpd_timeout clock: ``seconds`` from now."""
        clock = self.factory.reactor
        self._deadline = clock.seconds() + (self.settings.timeout if seconds is None else seconds)
        if self._timer is None or not self._timer.active():
            self._timer = clock.callLater(self._deadline - clock.seconds(), self._check_deadline)

    def _extend_deadline(self, nbytes: int) -> None:
        """smtpd_per_request_deadline: message content at smtpd_min_data_rate
        earns time, never more than smtpd_timeout from now."""
        clock = self.factory.reactor
        earned = self._deadline + nbytes / self.settings.limits.min_data_rate
        self._deadline = min(earned, clock.seconds() + self.settings.timeout)

    def _check_deadline(self) -> None:
        clock = self.factory.reactor
        left = self._deadline - clock.seconds()
        if left > 0.001:
            self._timer = clock.callLater(left, self._check_deadline)
            return
        self._timer = None
        self._timed_out()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        if self._closed or self.session.closed:
            return
        self.factory.maillog.line(
            "smtpd", f"timeout after {self._last_command} from {self.facts.client}"
        )
        if self._tls_started and self._tls_info is None and self.transport is not None:
            # In the middle of a TLS handshake no reply can be sent: drop it.
            self.factory.maillog.line(
                "smtpd", f"SSL_accept error from {self.facts.client}: timed out"
            )
            self.session.close(Reply(421, "4.2", "timeout"))
            self.session.data_to_send()
            self._cancel_timer()
            self.transport.abortConnection()  # type: ignore[attr-defined]
            return
        self.session.close(
            Reply(421, "4.2", f"{self.settings.session.hostname} Error: timeout exceeded")
        )
        self._write_out()

    # -- input ------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        if self._tls_started and self._tls_info is None:
            self._tls_established()
        if not self.settings.limits.per_record_deadline:
            self._reset_timer()
        elif self.session.state in (smtp.State.DATA, smtp.State.CHUNK):
            self._extend_deadline(len(data))
        self.session.receive_data(data)
        if not self._busy:
            self._run()

    def _run(self) -> None:
        """Handle events until the session needs more input, a decision must
        be awaited, or a burst of pipelined commands has been handled (then
        the reactor gets a turn before the rest)."""
        handled = 0
        while not self._busy and not self._closed:
            if handled >= _BURST:
                self._flush()
                if not self._busy and not self._closed:
                    self._pause()
                    self.factory.reactor.callLater(0, self._resume_burst)
                break
            # One command at a time: its replies are written (or held by the
            # tarpit) before the next one is parsed.
            event = self.session.next_event(stop_after_reply=True)
            if event is None:
                if self.session.has_output and self.session.buffered_bytes:
                    handled += 1
                    self._flush()
                    continue
                break
            handled += 1
            try:
                self._handle(event)
            except Exception:
                log.exception("smtpd: error while handling %r", event)
                self._abort_message()
                self.session.close(
                    Reply(421, "3.0", f"{self.settings.session.hostname} Error: internal error")
                )
                break
        self._flush()

    def _resume_burst(self) -> None:
        if self._closed:
            return
        self._busy = False
        self._resume_transport()
        self._run()

    def _pause(self) -> None:
        self._busy = True
        if self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def _resume_transport(self) -> None:
        if self.transport is not None and not self._closed:
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    def _flush(self) -> None:
        """Write the replies; past smtpd_soft_error_limit each write waits
        smtpd_error_sleep_time first (on a timer, with reading paused)."""
        out = self.session.data_to_send()
        if not out:
            self._close_if_done()
            return
        lim = self.settings.limits
        errors = self.session.error_count
        if (
            lim.error_sleep > 0
            and lim.soft_error_limit >= 0
            and errors > lim.soft_error_limit
            and not self._closed
            and not self._busy
        ):
            self._pause()
            self.factory.reactor.callLater(lim.error_sleep, self._delayed_write, out)
            return
        self._write(out)
        self._close_if_done()

    def _delayed_write(self, out: bytes) -> None:
        if self._closed:
            return
        self._write(out)
        self._busy = False
        if self._close_if_done():
            return
        self._resume_transport()
        self._run()

    def _write(self, out: bytes) -> None:
        if self.transport is not None and not self._closed:
            self.transport.write(out)
            if self.settings.limits.per_record_deadline:
                self._reset_timer()  # a record was answered: the next one's deadline

    def _write_out(self) -> None:
        """Write now, whatever the tarpit (timeouts, stop)."""
        self._write(self.session.data_to_send())
        self._close_if_done()

    def _close_if_done(self) -> bool:
        if self.session.closed and self.transport is not None and not self._closed:
            self._cancel_timer()
            self.transport.loseConnection()
            return True
        return False

    def _count(self, verb: str) -> None:
        self._stats[verb] = self._stats.get(verb, 0) + 1
        self._last_command = verb.upper()

    def _await(self, work: Awaitable[None]) -> None:
        """Wait for an asynchronous decision with reading paused."""
        self._pause()

        async def run() -> None:
            await work

        d = defer.Deferred.fromCoroutine(run())
        d.addErrback(self._decision_failed)

    def _decision_failed(self, failure: Failure) -> None:
        log.error("smtpd: decision failed: %s", failure.getTraceback())
        if self._closed:
            return
        self._abort_message()
        self.session.close(
            Reply(421, "3.0", f"{self.settings.session.hostname} Error: internal error")
        )
        self._busy = False
        self._write_out()

    def _resume(self, reply: Reply | None) -> None:
        """Answer the pending decision after an asynchronous wait."""
        self._busy = False
        if self._closed:
            return
        self.session.respond(reply)
        self._resume_transport()
        self._run()

    # -- events -----------------------------------------------------------------
    def _handle(self, event: object) -> None:
        if isinstance(event, smtp.Helo):
            self._count("ehlo" if event.extended else "helo")
            self._on_helo(event)
        elif isinstance(event, smtp.MailFrom):
            self._count("mail")
            self._on_mail(event)
        elif isinstance(event, smtp.RcptTo):
            self._count("rcpt")
            self._on_rcpt(event)
        elif isinstance(event, smtp.DataStart):
            self._count("bdat" if event.bdat else "data")
            self._on_data(event)
        elif isinstance(event, smtp.MessageData):
            self._write_content(event.data)
        elif isinstance(event, smtp.MessageEnd):
            self._on_message_end(event)
        elif isinstance(event, smtp.StartTls):
            self._count("starttls")
            self._on_starttls()
        elif isinstance(event, smtp.Auth):
            self._count("auth")
            self._on_auth(event)
        elif isinstance(event, smtp.AuthResponse):
            self._on_auth_response(event)
        elif isinstance(event, smtp.TransactionAborted):
            self._abort_transaction_state()
        elif isinstance(event, smtp.Quit):
            self._count("quit")
        elif isinstance(event, smtp.ConnectionLost):
            self._abort_transaction_state()

    def _on_helo(self, event: smtp.Helo) -> None:
        """Stage: HELO/EHLO.  Without smtpd_delay_reject the client and HELO
        restrictions; then the AUTH mechanisms to announce are asked of the
        SASL backend (Dovecot may need connecting)."""
        self.facts.helo = event.name
        self._abort_transaction_state()
        where = "EHLO" if event.extended else "HELO"
        backend = self.sasl

        async def decide() -> Reply | None:
            r = self.settings.restrictions
            if not r.delay_reject:
                self._update_facts()
                decision = await r.check_helo(self.facts, self.factory.policy, where)
                refusal = self._policy_reply(decision, where)
                if refusal is not None:
                    return refusal
            if self._milters is not None:
                info = self._tls_info
                if info is not None:
                    self._milters.set(
                        tls_version=info.protocol, cipher=info.cipher, cipher_bits=str(info.bits)
                    )
                refusal = await self._milters.helo(event.name)
                if refusal is not None:
                    self._milter_log("reject", where, refusal.one_line())
                    return refusal
            if backend is not None and self.settings.session.auth:
                self.session.auth_mechanisms = await backend.mechanisms(self.session.tls)
            return None

        self._decide(decide())

    def _on_mail(self, event: smtp.MailFrom) -> None:
        """Stage: MAIL FROM.  smtpd_client_message_rate_limit, then (without
        smtpd_delay_reject) the client, HELO and sender restrictions."""
        if self._rate_refused(
            "message", self.settings.limits.message_rate,
            "Message delivery request", "too much mail from",
        ):
            return
        space = self.factory.diskspace  # Postfix smtpd_check_queue (queue_minfree)
        shortage = space.shortage(self.settings.session.message_size_limit) if space else None
        if shortage is not None:
            self._warn(shortage)
            reply = Reply(452, "3.1", "Insufficient system storage")
            self.factory.maillog.line(
                "smtpd",
                f"NOQUEUE: reject: MAIL from {self.facts.client}: {reply.one_line()}; "
                f"from=<{event.address}> proto={self.session.protocol} helo=<{self.facts.helo}>",
            )
            self.factory.counters.reject("queue_minfree")
            self.session.respond(reply)
            return
        self.facts.new_transaction()
        self.facts.sender = event.address
        self.facts.size = event.size or 0
        self._transactions += 1
        self.facts.instance = f"{id(self):x}.{self._transactions}"

        async def decide() -> Reply | None:
            r = self.settings.restrictions
            if not r.delay_reject:
                self._update_facts()
                decision = await r.check_mail(self.facts, self.factory.policy)
                refusal = self._policy_reply(decision, "MAIL")
                if refusal is not None:
                    self.facts.new_transaction()
                    return refusal
            if self._milters is not None:
                authed = bool(self.facts.sasl_username)
                self._milters.set(
                    auth_type=self._auth_mechanism if authed else "",
                    auth_authen=self.facts.sasl_username,
                )
                refusal = await self._milters.mail(event.address, _esmtp_args(event.params))
                if refusal is not None:
                    self._milter_log("reject", "MAIL", refusal.one_line())
                    self.facts.new_transaction()
                    return refusal
            self._mail = event
            self._recipients = []
            return None

        self._decide(decide())

    # -- policy -------------------------------------------------------------------
    def _decide(self, work: Coroutine[Any, Any, Reply | None]) -> None:
        """Answer the pending command with what ``work`` returns (None: the
        default reply).  A decision that needs no I/O is answered at once;
        one that waits (DNS, a policy server, a probe) pauses reading, so
        pipelined commands are answered in order and other sessions go on."""
        d = defer.Deferred.fromCoroutine(work)
        if d.called:
            outcome: list[object] = []
            d.addBoth(outcome.append)
            result = outcome[0]
            if isinstance(result, Failure):
                self._decision_failed(result)
            else:
                assert result is None or isinstance(result, Reply)
                self.session.respond(result)
            return
        self._pause()
        d.addCallbacks(self._resume, self._decision_failed)

    def _update_facts(self) -> None:
        """What the restrictions may ask about the session right now."""
        f = self.facts
        f.protocol = self.session.protocol
        f.client_port = str(self._client_port)
        f.server_addr, f.server_port = self._local[0], str(self._local[1])
        f.sasl_method = self._auth_mechanism if f.sasl_username else ""
        f.rcpt_count = len(self._recipients)
        info = self._tls_info
        if info is not None:
            f.encryption_protocol = info.protocol or "TLS"
            f.encryption_cipher = info.cipher
            f.encryption_keysize = info.bits
        if self.session.buffered_bytes > 0 and not f.illegal_pipelining:
            last = self._last_command
            if not self.session.protocol.startswith("ESMTP") or last in ("DATA", "EHLO", "HELO"):
                # RFC 2920 3.1: the client did not wait for the reply.
                f.illegal_pipelining = True
                self._warn(f"improper command pipelining after {last} from {f.client}")

    def _policy_reply(self, decision: Decision, where: str) -> Reply | None:
        """Log what the restrictions did; the reply when they refused."""
        self._log_notes(decision.notes, where)
        verdict: Verdict = decision.verdict
        if verdict.refused and verdict.reply is not None:
            self.factory.counters.reject(verdict.rule.split(" ", 1)[0] or "unknown")
            return verdict.reply
        return None

    def _log_notes(self, notes: Sequence[Note], where: str) -> None:
        """Postfix's log_whatsup lines, with the rule that made each one."""
        f = self.facts
        queue_id = self._message.queue_id if self._message is not None else "NOQUEUE"
        for note in notes:
            if note.whatsup == "warning":
                self._warn(note.text)
                continue
            parts = []
            if f.sender is not None:
                parts.append(f"from=<{f.sender}>")
            if f.recipient is not None:
                parts.append(f"to=<{f.recipient}>")
            parts.append(f"proto={self.session.protocol}")
            if f.helo:
                parts.append(f"helo=<{f.helo}>")
            rule = f" rule={note.rule}" if note.rule else ""
            self.factory.maillog.line(
                "smtpd",
                f"{queue_id}: {note.whatsup}: {where} from {f.client}: {note.text}; "
                f"{' '.join(parts)}{rule}",
            )

    def _rate_refused(self, kind: str, limit: int, what: str, refusal: str) -> bool:
        """smtpd_client_*_rate_limit (anvil): count one ``kind`` event for the
        client and answer 450 4.7.1 when it is over ``limit`` (0: no limit)."""
        if not limit or self._exempt():
            return False
        now = self.factory.reactor.seconds()
        rate = self.factory.anvil.event(self.facts.client_addr, kind, now)
        if rate <= limit:
            return False
        self._warn(
            f"{what} rate limit exceeded: {rate} from "
            f"{self.facts.client} for service {self.settings.service}"
        )
        self.session.respond(Reply(450, "7.1", f"Error: {refusal} {self.facts.client_addr}"))
        return True

    def _on_rcpt(self, event: smtp.RcptTo) -> None:
        """Stage: RCPT TO.  smtpd_client_recipient_rate_limit, then relay and
        recipient restrictions (all of them with smtpd_delay_reject)."""
        if self._rate_refused(
            "recipient", self.settings.limits.recipient_rate,
            "Recipient address", "too many recipients from",
        ):
            return
        previous = self.facts.recipient
        self.facts.recipient = event.address

        async def decide() -> Reply | None:
            self._update_facts()
            decision = await self.settings.restrictions.check_rcpt(self.facts, self.factory.policy)
            self._log_notes(decision.notes, "RCPT")
            reply = self._rcpt_verdict(event, decision.verdict)
            if reply is None and self._milters is not None:
                reply = await self._milters.rcpt(event.address, _esmtp_args(event.params))
                if reply is not None:
                    self._recipients.pop()  # added by _rcpt_verdict
                    self.facts.rcpt_count = len(self._recipients)
                    self._milter_log("reject", "RCPT", reply.one_line(), to=event.address)
            self.facts.recipient = event.address if reply is None else previous
            return reply

        self._decide(decide())

    def _rcpt_verdict(self, event: smtp.RcptTo, verdict: Verdict) -> Reply | None:
        """The restrictions' verdict, then the recipient tables."""
        if verdict.action not in ("reject", "defer") and self.settings.local_recipients_unknown:
            domain = event.address.rpartition("@")[2]
            if not domain or self.settings.domains.mydestination.matches(domain):
                # mta has no local delivery agent yet: refuse rather than
                # accept mail that could never be delivered.
                verdict = Verdict(
                    "reject",
                    Reply(
                        550,
                        "1.1",
                        f"<{event.address}>: Recipient address rejected: "
                        "User unknown in local recipient table",
                    ),
                    "local_recipient_maps",
                )
        boxes = self.settings.virtual
        if verdict.action not in ("reject", "defer") and boxes is not None:
            domain = event.address.rpartition("@")[2]
            if domain and boxes.handles(domain) and boxes.lookup(event.address) is None:
                # Postfix smtpd: reject_unlisted_recipient for virtual(8) domains.
                verdict = Verdict(
                    "reject",
                    Reply(
                        550,
                        "1.1",
                        f"<{event.address}>: Recipient address rejected: "
                        "User unknown in virtual mailbox table",
                    ),
                    "virtual_mailbox_maps",
                )
        if verdict.refused and verdict.reply is not None:
            if verdict.rule in ("local_recipient_maps", "virtual_mailbox_maps"):
                self._log_notes([Note("reject", verdict.reply.one_line(), verdict.rule)], "RCPT")
            self.factory.counters.reject(verdict.rule.split(" ", 1)[0] or "unknown")
            return verdict.reply
        notify = event.params.get("NOTIFY")
        orcpt = event.params.get("ORCPT")
        self._recipients.append(
            Recipient(
                event.address,
                notify=tuple(notify.upper().split(",")) if notify else (),
                orcpt=orcpt or "",
            )
        )
        self.facts.rcpt_count = len(self._recipients)
        return None

    def _on_data(self, event: smtp.DataStart) -> None:
        """Stage: DATA or the first BDAT.  smtpd_data_restrictions, then a
        queue file with our Received: header."""
        where = "BDAT" if event.bdat else "DATA"

        async def decide() -> Reply | None:
            self._update_facts()
            decision = await self.settings.restrictions.check_data(
                self.facts, self.factory.policy, where
            )
            refusal = self._policy_reply(decision, where)
            if refusal is not None:
                return refusal
            opened = self._open_message()
            if opened is not None or self._milters is None or self._message is None:
                return opened
            refusal = await self._milters.data(self._message.queue_id)
            if refusal is not None:
                self._milter_log("reject", where, refusal.one_line())
                self._abort_message()
            return refusal

        self._decide(decide())

    def _open_message(self) -> Reply | None:
        """A queue file, with the PREPEND headers of the access tables and
        our Received: header; header/body_checks see them too."""
        checks = self.settings.content
        self._content = ContentFilter(checks) if checks.active else None
        try:
            self._message = self.factory.store.begin()
            prepended = "".join(f"{h}\r\n" for h in self.facts.effects.prepend)
            head = prepended.encode("utf-8", "surrogateescape") + self._received_header()
            self._message.write(self._content.feed(head) if self._content else head)
        except OSError as e:
            log.error("smtpd: cannot create queue file: %s", e)
            self._abort_message()
            return Reply(451, "3.0", "Error: queue file write error")
        self.facts.queue_id = self._message.queue_id
        client = f"client={self.facts.client}"
        if self.facts.sasl_username:
            client += (
                f", sasl_method={self._auth_mechanism}, sasl_username={self.facts.sasl_username}"
            )
        self.factory.maillog.line("smtpd", f"{self._message.queue_id}: {client}")
        self._header_buf = b""
        self._message_id = ""
        return None

    def _received_header(self) -> bytes:
        s = self.settings.session
        f = self.facts
        with_proto = self.session.protocol
        rcpt = f"\r\n\tfor <{self._recipients[0].address}>" if len(self._recipients) == 1 else ""
        qid = self._message.queue_id
        date = email.utils.formatdate(_time.time(), localtime=True)
        helo = f.helo or f.client_addr
        lines = [f"Received: from {helo} ({f.client_name} [{f.client_addr}])"]
        if self._tls_info is not None and self.settings.tls.received_header:
            # Postfix smtpd_tls_received_header format.
            lines.append(f"\t(using {self._tls_info.summary()})")
            lines.append("\t(No client certificate requested)")
        if f.sasl_username and self.settings.sasl.authenticated_header:
            lines.append(f"\t(Authenticated sender: {f.sasl_username})")
        lines.append(
            f"\tby {s.hostname} ({self.settings.mail_name}) with {with_proto} id {qid}"
            f"{rcpt}; {date}"
        )
        return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")

    def _write_content(self, data: bytes) -> None:
        if self._message is None:
            return
        if not self._message_id and len(self._header_buf) < _HEADER_SCAN_LIMIT:
            self._header_buf += data[:_HEADER_SCAN_LIMIT]
            m = _MESSAGE_ID.search(self._header_buf)
            if m:
                self._message_id = m.group(1).decode("utf-8", "replace").strip()
                self._header_buf = b""
            elif b"\r\n\r\n" in self._header_buf:
                self._header_buf = b"x" * _HEADER_SCAN_LIMIT  # headers ended: stop looking
        try:
            self._message.write(self._content.feed(data) if self._content is not None else data)
        except OSError as e:
            log.error("smtpd: queue file write error: %s", e)
            self._message.failed = e  # answered at end of data

    def _on_message_end(self, event: smtp.MessageEnd) -> None:
        """Stage: end of data.  The queue's fsync, in a thread."""
        self._pause()
        d = defer.Deferred.fromCoroutine(self._commit(event.size))
        d.addErrback(self._commit_failed)

    async def _commit(self, size: int) -> None:
        msg = self._message
        mail = self._mail
        assert msg is not None and mail is not None
        if getattr(msg, "failed", None) is not None:
            raise OSError(str(msg.failed))
        content = self._finish_content(msg)
        refusal = await self._end_of_data_policy(msg.queue_id, size, content)
        if refusal is not None and self._milters is not None:
            self._milters.abort()
        milters = None
        if refusal is None and self._milters is not None:
            # Postfix cleanup: the milters see the message after
            # header/body_checks; their edits are what is queued.
            msg.flush()
            milters = await self._milters.message(msg.path, msg.replace_content)
            if milters.reply is not None:
                refusal = milters.reply
                self._milter_log("reject", "END-OF-MESSAGE", refusal.one_line(), msg.queue_id)
            elif milters.discard:
                refusal = Reply(250, "0.0", f"Ok: queued as {msg.queue_id}")
                self._milter_log(
                    "discard", "END-OF-MESSAGE", "milter triggers DISCARD action", msg.queue_id
                )
                self.factory.counters.count("discarded")
        if refusal is not None:
            self._abort_message()
            self._end_transaction(notify=False)
            self._resume(refusal)
            self._notify_done()
            return
        effects = self.facts.effects
        recipients = list(self._recipients)
        redirect = (content.redirect if content else None) or effects.redirect
        if redirect:
            recipients = [Recipient(redirect)]  # Postfix REDIRECT: all recipients
        sender = mail.address
        if milters is not None:
            edits = milters.edits
            if edits.sender is not None:
                sender = edits.sender
            dropped = {a.lower() for a in edits.delete_recipients}
            recipients = [r for r in recipients if r.address.lower() not in dropped]
            have = {r.address.lower() for r in recipients}
            for address in edits.add_recipients:
                if address.lower() not in have:
                    have.add(address.lower())
                    recipients.append(Recipient(address))
        bcc = extra_recipients(self.settings.bcc, sender, [r.address for r in recipients])
        for address in [*effects.bcc, *(content.bcc if content else [])]:
            if address not in bcc:
                bcc.append(address)
        hold = (content.hold if content else None) or effects.hold
        if milters is not None and milters.hold is not None and not hold:
            hold = milters.hold
            self._milter_log("hold", "END-OF-MESSAGE", milters.hold, msg.queue_id)
        content_filter = (content.filter if content else None) or effects.filter
        env = Envelope(
            queue_id=msg.queue_id,
            sender=sender,
            recipients=recipients + [Recipient(a, notify=BCC_NOTIFY) for a in bcc],
            arrival_time=_time.time(),
            size=msg.size,
            ret=(mail.params.get("RET") or "").upper(),
            envid=mail.params.get("ENVID") or "",
            body=(mail.body or "").upper(),
            smtputf8="SMTPUTF8" in mail.params,
            client_name=self.facts.client_name,
            client_addr=self.facts.client_addr,
            helo=self.facts.helo,
            protocol=self.session.protocol,
            sasl_username=self.facts.sasl_username,
        )
        if hold:
            # Access HOLD: the queue manager never schedules it (also after
            # a crash between the commit and the move to hold).
            env.reason = f"held: {hold}"
            env.extra["hold"] = hold
        if content_filter:
            env.extra["filter"] = content_filter
        await self.factory.store.commit(msg, env)
        self._message = None
        log_ = self.factory.maillog
        if self._message_id:
            log_.line("cleanup", f"{env.queue_id}: message-id={self._message_id}")
        if hold:
            await self.factory.store.move_durable(env.queue_id, "incoming", "hold")
        self.factory.counters.count("accepted")
        reply = Reply(250, "0.0", f"Ok: queued as {env.queue_id}")
        # The 250 goes out before a waiting stop learns that the transaction
        # is over (it then closes the session).
        self._end_transaction(notify=False)
        self._resume(reply)
        self._notify_done()
        if not hold:
            self.factory.submit(env)

    def _finish_content(self, msg: Any) -> ContentResult | None:
        """The end of header/body_checks: the rest goes to the queue file."""
        content = self._content
        self._content = None
        if content is None:
            return None
        rest = content.finish()
        if rest:
            msg.write(rest)
        return content.result

    async def _end_of_data_policy(
        self, queue_id: str, size: int, content: ContentResult | None
    ) -> Reply | None:
        """header/body_checks and smtpd_end_of_data_restrictions: a reply
        instead of queueing (reject, defer, or 250 for DISCARD), or None."""
        if content is not None:
            self._log_content(queue_id, content)
        self.facts.size = size
        self._update_facts()
        decision = await self.settings.restrictions.check_eod(self.facts, self.factory.policy)
        refusal = self._policy_reply(decision, "END-OF-MESSAGE")
        if content is not None and content.action == "reject" and content.reply is not None:
            self.factory.counters.reject(content.rule.split(":", 1)[0] or "content")
            return content.reply
        if refusal is not None:
            return refusal
        discard = self.facts.effects.discard
        if discard is not None or (content is not None and content.action == "discard"):
            # DISCARD: claim delivery, keep nothing (Postfix cleanup).
            self.factory.counters.count("discarded")
            return Reply(250, "0.0", f"Ok: queued as {queue_id}")
        return None

    def _log_content(self, queue_id: str, content: ContentResult) -> None:
        """cleanup's lines for header/body_checks actions."""
        f = self.facts
        parts = [f"from=<{f.sender or ''}>"]
        if len(self._recipients) == 1:
            parts.append(f"to=<{self._recipients[0].address}>")
        parts.append(f"proto={self.session.protocol}")
        if f.helo:
            parts.append(f"helo=<{f.helo}>")
        for note in content.notes:
            text = f": {note.text}" if note.text else ""
            self.factory.maillog.line(
                "cleanup",
                f"{queue_id}: {note.whatsup}: {note.what} from {f.client}; "
                f"{' '.join(parts)}{text} rule={note.table}",
            )

    def _milter_log(
        self, action: str, where: str, text: str, queue_id: str = "NOQUEUE", to: str = ""
    ) -> None:
        """Postfix's ``milter-reject``/``milter-hold``/``milter-discard`` line."""
        f = self.facts
        parts = [f"from=<{f.sender or ''}>"]
        if to or len(self._recipients) == 1:
            parts.append(f"to=<{to or self._recipients[0].address}>")
        parts.append(f"proto={self.session.protocol}")
        if f.helo:
            parts.append(f"helo=<{f.helo}>")
        self.factory.maillog.line(
            "smtpd" if queue_id == "NOQUEUE" else "cleanup",
            f"{queue_id}: milter-{action}: {where} from {f.client}: {text}; {' '.join(parts)}",
        )
        if action == "reject":
            self.factory.counters.reject("milter")

    def _commit_failed(self, failure: Failure) -> None:
        log.error("smtpd: queue commit failed: %s", failure.getErrorMessage())
        self._abort_message()
        self._end_transaction(notify=False)
        self._resume(Reply(451, "3.0", "Error: queue file write error"))
        self._notify_done()

    # -- STARTTLS -----------------------------------------------------------------
    def _on_starttls(self) -> None:
        """Stage: STARTTLS (RFC 3207).  The 220 goes out in plaintext, then
        the handshake; input sent behind STARTTLS was dropped by the session."""
        server = self.settings.tls.server
        if server is None:
            self.session.respond(Reply(454, "7.0", "TLS not available due to local problem"))
            return
        self.session.respond(None)
        self._write(self.session.data_to_send())
        self._tls_started = True
        self._tls_info = None
        self.transport.startTLS(server.context_factory)  # type: ignore[union-attr]

    def _tls_established(self) -> None:
        """The first application data after a handshake: note the cipher."""
        info = describe(self.transport.getHandle())  # type: ignore[union-attr]
        if info is None:
            return
        self._tls_info = info
        self.factory.maillog.line(
            "smtpd",
            f"Anonymous TLS connection established from {self.facts.client}: {info.summary()}",
        )

    # -- AUTH -----------------------------------------------------------------------
    def _on_auth(self, event: smtp.Auth) -> None:
        """Stage: AUTH (RFC 4954).  smtpd_client_auth_rate_limit, then the
        SASL backend's exchange."""
        if self._rate_refused(
            "auth", self.settings.limits.auth_rate, "AUTH command", "too many AUTH commands from"
        ):
            return
        if self.sasl is None:
            self.session.respond(Reply(503, "5.1", "Error: authentication not enabled"))
            return
        client = sasl.ClientInfo(
            service=self.settings.sasl.service,
            client_addr=self.facts.client_addr,
            client_port=self._client_port,
            local_addr=self._local[0],
            local_port=self._local[1],
            tls=self.session.tls,
        )
        self._auth_mechanism = event.mechanism
        self._exchange = self.sasl.start(event.mechanism, client)
        response = event.initial_response
        self._auth_step("" if response == "=" else response)

    def _on_auth_response(self, event: smtp.AuthResponse) -> None:
        self._auth_step(event.data)

    def _auth_step(self, response: str | None) -> None:
        exchange = self._exchange
        if exchange is None:
            self.session.respond(Reply(503, "5.1", "Error: no authentication in progress"))
            return

        async def step() -> None:
            result = await exchange.step(response)
            self._resume(self._auth_reply(result))

        self._await(step())

    def _auth_reply(self, result: sasl.Step) -> Reply:
        mech = self._auth_mechanism
        if isinstance(result, sasl.Challenge):
            return Reply(334, "", result.data)
        self._exchange = None
        if isinstance(result, sasl.Success):
            self.facts.sasl_username = result.username
            return Reply(235, "7.0", "Authentication successful")
        if isinstance(result, sasl.TempFailure):
            self._warn(f"{self.facts.client}: SASL {mech} authentication aborted")
            return Reply(454, "7.0", "Temporary authentication failure")
        reason = result.reason or "authentication failure"
        self._warn(f"{self.facts.client}: SASL {mech} authentication failed: {reason}")
        return Reply(535, "7.8", "Error: authentication failed: authentication failure")

    # -- transactions -------------------------------------------------------------
    def _end_transaction(self, *, notify: bool = True) -> None:
        self._mail = None
        self._recipients = []
        self._content = None
        self.facts.new_transaction()
        if notify:
            self._notify_done()

    def _notify_done(self) -> None:
        if self.in_transaction_done is not None and not self.in_transaction_done.called:
            self.in_transaction_done.callback(None)

    def _abort_message(self) -> None:
        if self._message is not None:
            try:
                self._message.abort()
            except OSError:
                pass
            self._message = None

    def _abort_transaction_state(self) -> None:
        if self._milters is not None and self._mail is not None and not self._busy:
            self._milters.abort()  # SMFIC_ABORT: the transaction ended unfinished
        self._abort_message()
        if not self._busy:
            self._end_transaction()

    def wait_transaction(self) -> defer.Deferred[None]:
        """A Deferred that fires when the current transaction is over."""
        if not self.in_transaction or self._closed:
            return defer.succeed(None)
        if self.in_transaction_done is None or self.in_transaction_done.called:
            self.in_transaction_done = defer.Deferred()
        return self.in_transaction_done


def _esmtp_args(params: dict[str, str | None]) -> list[str]:
    """MAIL/RCPT parameters as the milter protocol carries them."""
    return [k if v is None else f"{k}={v}" for k, v in params.items()]
