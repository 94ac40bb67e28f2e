"""The SMTP server's Twisted adapter: bytes in, replies out; asks policy, queues.

Input: a TCP connection.  The sans-I/O :class:`mta.smtp.server.ServerSession`
parses it into events; this module answers the events that need a decision
(restriction lists at HELO/MAIL/RCPT/DATA, the queue at end of data) and
writes the session's replies.  While a decision is pending (the queue's
fsync runs in a thread) the transport is paused and the session parses
nothing further, so pipelined commands are answered in order (RFC 2920).

Output: messages committed to the queue store before their 250, handed to
the queue manager; mail log lines in Postfix's format; counters.
"""

from __future__ import annotations

import email.utils
import logging
import re
import time as _time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from mta.envelope import Envelope, Recipient
from mta.maillog import MailLog
from mta.policy.restrictions import DUNNO, Domains, Facts, RestrictionList, Stage, Verdict
from mta.reply import Reply
from mta.smtp import server as smtp
from mta.stats.counters import Counters

log = logging.getLogger(__name__)

_MESSAGE_ID = re.compile(rb"^Message-Id:[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE)
_HEADER_SCAN_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Restrictions:
    """The restriction lists of one smtpd service (after its -o overrides)."""

    client: RestrictionList
    helo: RestrictionList
    sender: RestrictionList
    relay: RestrictionList
    recipient: RestrictionList
    data: RestrictionList
    delay_reject: bool = True


@dataclass(frozen=True)
class SmtpdSettings:
    """Everything one smtpd service needs, frozen at (re)load time.  A session
    keeps the settings it started with, so a reload never changes the rules
    in the middle of a transaction."""

    service: str  # master.cf service name, e.g. "2525" or "submission"
    session: smtp.ServerSettings
    restrictions: Restrictions
    domains: Domains
    mail_name: str = "mta"
    timeout: float = 300.0  # smtpd_timeout
    max_sessions: int = 100  # master.cf maxproc / default_process_limit
    local_recipients_unknown: bool = True  # no local delivery: mydestination users are unknown


class SmtpdFactory(protocol.Factory):
    """One per listener.  ``settings`` is swapped whole on reload."""

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
    ) -> None:
        self.reactor = reactor
        self.settings = settings
        self.store = store
        self.submit = submit
        self.maillog = maillog
        self.counters = counters
        self.sessions = sessions  # shared by all listeners: stop waits on them
        self.count = 0

    def buildProtocol(self, addr: Any) -> SMTPServerProtocol:
        return SMTPServerProtocol(self, self.settings)


class SMTPServerProtocol(protocol.Protocol):
    def __init__(self, factory: SmtpdFactory, settings: SmtpdSettings) -> None:
        self.factory = factory
        self.settings = settings
        self.session = smtp.ServerSession(settings.session)
        self.facts = Facts(client_addr="")
        self._busy = False  # a decision is being awaited
        self._timer: IDelayedCall | None = None
        self._message: Any = None  # the queue's IncomingMessage while in DATA
        self._recipients: list[Recipient] = []
        self._mail: smtp.MailFrom | None = None
        self._header_buf = b""
        self._message_id = ""
        self._stats: dict[str, int] = {}
        self._over_limit = False
        self._closed = False
        self.in_transaction_done: defer.Deferred[None] | None = None

    # -- connection -----------------------------------------------------------
    def connectionMade(self) -> None:
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        host = getattr(peer, "host", "")
        self.facts.client_addr = host.removeprefix("::ffff:") if "." in host else host
        self.facts.client_name = "localhost" if host in ("127.0.0.1", "::1") else "unknown"
        f = self.factory
        f.count += 1
        f.sessions.add(self)
        f.counters.active_sessions += 1
        f.maillog.line("smtpd", f"connect from {self.facts.client}")
        if f.count > self.settings.max_sessions:
            self._over_limit = True
            self.session.close(
                Reply(421, "4.3.2", f"{self.settings.session.hostname} Error: too many connections")
            )
            self._flush()
            return
        verdict = DUNNO
        if not self.settings.restrictions.delay_reject:
            verdict = self._check(("client",))
        if verdict.action in ("reject", "defer") and verdict.reply is not None:
            self._log_reject("CONNECT", verdict)
            self.session.close(verdict.reply)
            self._flush()
            return
        self.session.start()
        self._reset_timer()
        self._flush()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self._closed:
            return
        self._closed = True
        self._cancel_timer()
        self._abort_message()
        f = self.factory
        f.count -= 1
        f.sessions.discard(self)
        f.counters.active_sessions -= 1
        counts = " ".join(f"{k}={v}" for k, v in self._stats.items())
        total = sum(self._stats.values())
        suffix = f" {counts} commands={total}" if counts else ""
        f.maillog.line("smtpd", f"disconnect from {self.facts.client}{suffix}")
        if self.in_transaction_done is not None and not self.in_transaction_done.called:
            self.in_transaction_done.callback(None)

    @property
    def in_transaction(self) -> bool:
        """Between MAIL and the reply to end of data: a stop waits for these."""
        return self._mail is not None or self._busy

    def shutdown(self) -> None:
        """Daemon stop: close an idle session now with 421 (RFC 5321 3.8)."""
        if self._closed:
            return
        self.session.close(
            Reply(421, "4.3.2", f"{self.settings.session.hostname} Service shutting down")
        )
        self._flush()

    # -- timeouts ---------------------------------------------------------------
    def _reset_timer(self) -> None:
        self._cancel_timer()
        self._timer = self.factory.reactor.callLater(self.settings.timeout, self._timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        self.factory.maillog.line(
            "smtpd", f"timeout after {self.session.state.name} from {self.facts.client}"
        )
        self.session.close(
            Reply(421, "4.4.2", f"{self.settings.session.hostname} Error: timeout exceeded")
        )
        self._flush()

    # -- input ------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        self._reset_timer()
        self.session.receive_data(data)
        if not self._busy:
            self._run()

    def _run(self) -> None:
        """Handle events until the session needs more input or a decision
        must be awaited."""
        while not self._busy and not self._closed:
            event = self.session.next_event()
            if event is None:
                break
            try:
                self._handle(event)
            except Exception:
                log.exception("smtpd: error while handling %r", event)
                self._abort_message()
                self.session.close(
                    Reply(421, "4.3.0", f"{self.settings.session.hostname} Error: internal error")
                )
                break
        self._flush()

    def _flush(self) -> None:
        out = self.session.data_to_send()
        if out and self.transport is not None:
            self.transport.write(out)
        if self.session.closed and self.transport is not None and not self._closed:
            self._cancel_timer()
            self.transport.loseConnection()

    def _count(self, verb: str) -> None:
        self._stats[verb] = self._stats.get(verb, 0) + 1

    # -- events -----------------------------------------------------------------
    def _handle(self, event: object) -> None:
        if isinstance(event, smtp.Helo):
            self._count("ehlo" if event.extended else "helo")
            self.facts.helo = event.name
            self._abort_transaction_state()
            verdict = DUNNO
            if not self.settings.restrictions.delay_reject:
                verdict = self._check(("client", "helo"))
            self._respond_verdict(verdict, "HELO")
        elif isinstance(event, smtp.MailFrom):
            self._count("mail")
            self.facts.sender = event.address
            verdict = DUNNO
            if not self.settings.restrictions.delay_reject:
                verdict = self._check(("client", "helo", "sender"))
            if verdict.action in ("reject", "defer"):
                self.facts.sender = None
                self._respond_verdict(verdict, "MAIL")
            else:
                self._mail = event
                self._recipients = []
                self.session.respond(None)
        elif isinstance(event, smtp.RcptTo):
            self._count("rcpt")
            self._handle_rcpt(event)
        elif isinstance(event, smtp.DataStart):
            self._count("data")
            self._handle_data_start()
        elif isinstance(event, smtp.MessageData):
            self._write(event.data)
        elif isinstance(event, smtp.MessageEnd):
            self._busy = True
            self.transport.pauseProducing()  # type: ignore[union-attr]
            d = defer.Deferred.fromCoroutine(self._commit(event.size))
            d.addErrback(self._commit_failed)
        elif isinstance(event, smtp.TransactionAborted):
            self._abort_transaction_state()
        elif isinstance(event, smtp.Quit):
            self._count("quit")
        elif isinstance(event, smtp.ConnectionLost):
            self._abort_transaction_state()

    def _check(self, stages: tuple[str, ...]) -> Verdict:
        r = self.settings.restrictions
        lists: dict[str, tuple[Stage, RestrictionList]] = {
            "client": ("client", r.client),
            "helo": ("helo", r.helo),
            "sender": ("sender", r.sender),
            "relay": ("recipient", r.relay),
            "recipient": ("recipient", r.recipient),
            "data": ("data", r.data),
        }
        for name in stages:
            stage, rlist = lists[name]
            verdict = rlist.evaluate(stage, self.facts)
            # Postfix: each list must pass on its own; a permit ends only
            # its own list, a reject or defer ends the check.
            if verdict.action in ("reject", "defer"):
                return verdict
        return DUNNO

    def _respond_verdict(self, verdict: Verdict, stage_word: str) -> None:
        if verdict.action in ("reject", "defer") and verdict.reply is not None:
            self._log_reject(stage_word, verdict)
            self.session.respond(verdict.reply)
        else:
            self.session.respond(None)

    def _log_reject(self, stage_word: str, verdict: Verdict) -> None:
        assert verdict.reply is not None
        f = self.facts
        parts = []
        if f.sender is not None:
            parts.append(f"from=<{f.sender}>")
        if f.recipient is not None and stage_word == "RCPT":
            parts.append(f"to=<{f.recipient}>")
        parts.append(f"proto={self.session.protocol}")
        if f.helo:
            parts.append(f"helo=<{f.helo}>")
        queue_id = self._message.queue_id if self._message is not None else "NOQUEUE"
        self.factory.maillog.line(
            "smtpd",
            f"{queue_id}: reject: {stage_word} from {f.client}: "
            f"{verdict.reply.one_line()}; {' '.join(parts)} rule={verdict.rule or '-'}",
        )
        self.factory.counters.reject(verdict.rule.split(" ", 1)[0] or "unknown")

    def _handle_rcpt(self, event: smtp.RcptTo) -> None:
        self.facts.recipient = event.address
        verdict = DUNNO
        r = self.settings.restrictions
        stages: tuple[str, ...] = ("relay", "recipient")
        if r.delay_reject:
            stages = ("client", "helo", "sender", "relay", "recipient")
        verdict = self._check(stages)
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
        if verdict.action in ("reject", "defer"):
            self._log_reject("RCPT", verdict)
            self.session.respond(verdict.reply)
        else:
            notify = event.params.get("NOTIFY")
            orcpt = event.params.get("ORCPT")
            self._recipients.append(
                Recipient(
                    event.address,
                    notify=tuple(notify.upper().split(",")) if notify else (),
                    orcpt=orcpt or "",
                )
            )
            self.session.respond(None)
        self.facts.recipient = None

    def _handle_data_start(self) -> None:
        verdict = self._check(("data",))
        if verdict.action in ("reject", "defer"):
            self._respond_verdict(verdict, "DATA")
            return
        try:
            self._message = self.factory.store.begin()
            self._message.write(self._received_header())
        except OSError as e:
            log.error("smtpd: cannot create queue file: %s", e)
            self._abort_message()
            self.session.respond(Reply(451, "3.0", "Error: queue file write error"))
            return
        self.factory.maillog.line("smtpd", f"{self._message.queue_id}: client={self.facts.client}")
        self._header_buf = b""
        self._message_id = ""
        self.session.respond(None)

    def _received_header(self) -> bytes:
        s = self.settings.session
        f = self.facts
        with_proto = self.session.protocol
        rcpt = f"\r\n\tfor <{self._recipients[0].address}>" if len(self._recipients) == 1 else ""
        qid = self._message.queue_id
        date = email.utils.formatdate(_time.time(), localtime=True)
        helo = f.helo or f.client_addr
        header = (
            f"Received: from {helo} ({f.client_name} [{f.client_addr}])\r\n"
            f"\tby {s.hostname} ({self.settings.mail_name}) with {with_proto} id {qid}"
            f"{rcpt}; {date}\r\n"
        )
        return header.encode("utf-8", "surrogateescape")

    def _write(self, data: bytes) -> None:
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
            self._message.write(data)
        except OSError as e:
            log.error("smtpd: queue file write error: %s", e)
            self._message.failed = e  # answered at end of data

    async def _commit(self, size: int) -> None:
        msg = self._message
        mail = self._mail
        assert msg is not None and mail is not None
        if getattr(msg, "failed", None) is not None:
            raise OSError(str(msg.failed))
        env = Envelope(
            queue_id=msg.queue_id,
            sender=mail.address,
            recipients=self._recipients,
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
        await self.factory.store.commit(msg, env)
        self._message = None
        log_ = self.factory.maillog
        if self._message_id:
            log_.line("cleanup", f"{env.queue_id}: message-id={self._message_id}")
        self.factory.counters.count("accepted")
        reply = Reply(250, "0.0", f"Ok: queued as {env.queue_id}")
        self._end_transaction()
        self._resume(reply)
        self.factory.submit(env)

    def _commit_failed(self, failure: Failure) -> None:
        log.error("smtpd: queue commit failed: %s", failure.getErrorMessage())
        self._abort_message()
        self._end_transaction()
        self._resume(Reply(451, "3.0", "Error: queue file write error"))

    def _resume(self, reply: Reply) -> None:
        self._busy = False
        if self._closed:
            return
        self.session.respond(reply)
        self.transport.resumeProducing()  # type: ignore[union-attr]
        self._run()

    def _end_transaction(self) -> None:
        self._mail = None
        self._recipients = []
        self.facts.sender = None
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
