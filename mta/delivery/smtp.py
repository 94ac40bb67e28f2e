"""SMTP/LMTP delivery of one message over Twisted: a Reply per recipient.

Inputs: the next hop (host, port), the envelope and the recipients to try,
the queue file holding the message (CRLF lines), the smtp_*_timeout values.
Output: :class:`DeliveryResult`, one final :class:`Reply` per recipient in
the order given, and the relay as Postfix logs it (``host[ip]:port``).
Every failure is a per-recipient reply; no exception leaves :func:`deliver`.

The protocol work is done by the sans-I/O :class:`ClientSession`;
:class:`ClientConnection` only moves bytes and events between it and a
transport, runs the timer for the stage the session is in (Postfix's
per-stage timeouts, reset on progress), and streams the body from the file
with a pull producer, so a large message is never held in memory and the
peer's TCP window sets the pace.

The steps are separate (:func:`open_connection`, :func:`establish`,
:func:`run_transaction`, :func:`close_connection`) so that a connection
cache can run several transactions on one connection; :func:`deliver` does
one of each.  :func:`establish` runs STARTTLS and AUTH as a
:class:`SessionPolicy` says (TLS plan of :mod:`mta.delivery.tls`, DANE of
:mod:`mta.delivery.dane`, SASL PLAIN/LOGIN) and says why a server that
does not meet it is skipped, in Postfix's words.
"""

from __future__ import annotations

import ipaddress
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from twisted.internet import defer
from twisted.internet import error as neterror
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.interfaces import (
    IDelayedCall,
    IHandshakeListener,
    IPullProducer,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mta.delivery import dane
from mta.delivery.tls import ClientTLS, TlsOutcome, TlsPlan, check_outcome
from mta.envelope import Envelope, Recipient
from mta.reply import Reply
from mta.smtp.client import (
    Authenticated,
    AuthFailed,
    ClientSession,
    Closed,
    DataAccepted,
    Event,
    GreetingRejected,
    MessageDone,
    ProtocolError,
    Ready,
    RecipientReply,
    Stage,
    TLSReady,
    TLSRefused,
    Transaction,
    TransactionFailed,
)

BODY_CHUNK = 64 * 1024  # octets read from the queue file at a time

_log = Logger()


@dataclass(frozen=True)
class Timeouts:
    """Seconds allowed per stage; the defaults are Postfix's
    (smtp_connect_timeout, smtp_helo_timeout, ..., smtp_rset_timeout)."""

    connect: float = 30.0
    helo: float = 300.0  # the greeting and EHLO/HELO/LHLO
    mail: float = 300.0
    rcpt: float = 300.0
    data_init: float = 120.0  # the reply to DATA
    data_xfer: float = 180.0  # each write of the body
    data_done: float = 600.0  # the reply to the final dot
    quit: float = 300.0
    rset: float = 20.0

    def for_stage(self, stage: Stage) -> float | None:
        """The timeout while waiting in ``stage``; None when not waiting."""
        return stage_timeout(self, stage)


class TimeoutSettings(typing.Protocol):
    """What the driver needs of a timeouts object: Timeouts' fields (so that
    another frozen settings class with the same fields will do; ``rset`` is
    optional)."""

    @property
    def connect(self) -> float: ...
    @property
    def helo(self) -> float: ...
    @property
    def mail(self) -> float: ...
    @property
    def rcpt(self) -> float: ...
    @property
    def data_init(self) -> float: ...
    @property
    def data_xfer(self) -> float: ...
    @property
    def data_done(self) -> float: ...
    @property
    def quit(self) -> float: ...


# The Timeouts field for each stage the session can wait in.
_STAGE_TIMEOUT = {
    Stage.GREETING: "helo",
    Stage.EHLO: "helo",
    Stage.HELO: "helo",
    Stage.LHLO: "helo",
    Stage.MAIL: "mail",
    Stage.RCPT: "rcpt",
    Stage.DATA: "data_init",
    Stage.BODY: "data_xfer",
    Stage.DOT: "data_done",
    Stage.RSET: "rset",
    Stage.QUIT: "quit",
}


def stage_timeout(timeouts: TimeoutSettings, stage: Stage) -> float | None:
    """The timeout for ``stage`` from any object with Timeouts' fields (a
    missing ``rset`` means Postfix's default, 20 s)."""
    name = _STAGE_TIMEOUT.get(stage)
    if name is None:
        return None
    return float(getattr(timeouts, name, Timeouts.rset))


@dataclass(frozen=True)
class DeliveryResult:
    """One final reply per recipient (same order as given), the relay
    ("host[ip]:port", "" when no connection was made), the last commands
    and replies of the session for diagnostics, and ``try_next_host``: True
    when this server never got as far as a transaction (no connection, a
    refused or failed greeting/EHLO), so another MX host may do better
    (RFC 5321 5.1; Postfix smtp_skip_5xx_greeting = yes)."""

    replies: list[Reply]
    relay: str
    protocol_log: str = ""
    try_next_host: bool = False
    tls: TlsOutcome | None = None
    tls_failed: bool = False  # the TLS handshake failed (level may: retry in plaintext)


@implementer(IHandshakeListener)
class ClientConnection(Protocol):
    """Moves bytes between a transport and a :class:`ClientSession`, and
    hands the session's events to :meth:`next_event`."""

    def __init__(
        self, session: ClientSession, clock: IReactorTime, timeouts: TimeoutSettings
    ) -> None:
        self.session = session
        self.timeouts = timeouts
        self._clock = clock
        self._events: list[Event] = []
        self._waiter: Deferred[Event] | None = None
        self._timer: IDelayedCall | None = None
        self._lost_waiters: list[Deferred[None]] = []
        self.connected = False
        self.peer_ip = ""
        self.timed_out = False
        self.local_error = ""  # set when the failure was ours (queue file)
        # The stage the session last waited in: what a failure interrupted.
        self.stage = Stage.GREETING
        self.tls: ClientTLS | None = None  # set by start_tls()
        self.tls_done = False  # the handshake completed
        self.tls_error = ""  # why the handshake failed
        self.opened_at = clock.seconds()
        self.transactions = 0  # messages sent on this connection
        self.remote: list[bool] = []  # per reply of the last transaction: from the server
        self.body_started = False  # the last transaction got as far as sending the body

    @property
    def _tcp(self) -> Any:
        """The TCP transport (ITCPTransport and IConsumer, which Twisted's
        ITransport annotation does not say)."""
        assert self.transport is not None
        return self.transport

    # -- Twisted -------------------------------------------------------------
    def connectionMade(self) -> None:
        self.connected = True
        self.peer_ip = str(getattr(self._tcp.getPeer(), "host", ""))
        self.pump()

    def dataReceived(self, data: bytes) -> None:
        self.session.receive_data(data)
        self.pump()

    def handshakeCompleted(self) -> None:
        self.tls_done = True

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.tls is not None and not self.tls_done and reason is not None:
            self.tls_error = _tls_reason(reason)
        self.connected = False
        self.session.receive_data(b"")
        self.pump()
        waiters, self._lost_waiters = self._lost_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    # -- driver side ---------------------------------------------------------
    def pump(self) -> None:
        """Write what the session has to send, collect its events, and set
        the timer for the stage it is now in.  Call after each command."""
        out = self.session.data_to_send()
        if out and self.connected:
            self._tcp.write(out)
        while (event := self.session.next_event()) is not None:
            self._events.append(event)
        self._arm()
        if self._events and self._waiter is not None:
            waiter, self._waiter = self._waiter, None
            waiter.callback(self._events.pop(0))

    def next_event(self) -> Deferred[Event]:
        """The next session event.  A timeout or a lost connection shows as
        :class:`Closed` (see :attr:`timed_out`, :attr:`stage`)."""
        if self._events:
            return succeed(self._events.pop(0))
        if self._waiter is not None:
            raise RuntimeError("next_event() while another wait is pending")
        self._waiter = Deferred()
        return self._waiter

    def start_tls(self, creator: ClientTLS) -> None:
        """Start TLS on the transport (after TLSReady)."""
        self.tls = creator
        self._tcp.startTLS(creator)

    def stream_body(self, body: IO[bytes]) -> None:
        """Send the message in ``body`` (from its start) after DataAccepted."""
        body.seek(0)
        self._tcp.registerProducer(_BodyProducer(self, body), False)

    def close(self, *, abort: bool = False) -> Deferred[None]:
        """Drop the connection; fires when it is gone."""
        if not self.connected:
            return succeed(None)
        gone: Deferred[None] = Deferred()
        self._lost_waiters.append(gone)
        if abort:
            self._tcp.abortConnection()
        else:
            self._tcp.loseConnection()
        return gone

    def body_finished(self) -> None:
        if self.connected:
            self._tcp.unregisterProducer()

    def fail_locally(self, reason: str) -> None:
        """Give up on the connection for a reason of our own."""
        self.local_error = reason
        if self.connected:
            self._tcp.abortConnection()

    # -- timer ---------------------------------------------------------------
    def _arm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        stage = self.session.stage
        if stage is not Stage.CLOSED:
            self.stage = stage
        timeout = stage_timeout(self.timeouts, stage) if self.connected else None
        if timeout is not None:
            self._timer = self._clock.callLater(timeout, self._time_out)

    def _time_out(self) -> None:
        self._timer = None
        self.timed_out = True
        self._tcp.abortConnection()


@implementer(IPullProducer)
class _BodyProducer:
    """Feeds the message to the session a chunk at a time, each time the
    transport has written out the previous one."""

    def __init__(self, connection: ClientConnection, body: IO[bytes]) -> None:
        self._connection = connection
        self._body = body
        self._stopped = False

    def resumeProducing(self) -> None:
        if self._stopped:
            return
        session = self._connection.session
        if not session.sending_body:
            # The server answered before the end (or the session ended).
            self._finish()
            return
        try:
            chunk = self._body.read(BODY_CHUNK)
        except OSError as e:
            self._finish()
            self._connection.fail_locally(f"error reading queue file: {e.strerror}")
            return
        if chunk:
            session.send_data(chunk)
        else:
            session.end_data()
            self._finish()
        self._connection.pump()

    def stopProducing(self) -> None:
        self._stopped = True

    def _finish(self) -> None:
        self._stopped = True
        self._connection.body_finished()


# -- the steps ------------------------------------------------------------------


class ConnectFailed(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.one_line())
        self.reply = reply


async def open_connection(
    reactor: Any,
    *,
    host: str,
    port: int,
    helo_name: str,
    timeouts: TimeoutSettings,
    lmtp: bool = False,
    bind_address: str | None = None,
    server_name: str | None = None,
    unix: bool = False,
    chunking: bool = True,
) -> tuple[ClientConnection, Event]:
    """Connect and wait for the handshake.  Returns the connection and the
    event that ended the handshake (Ready, GreetingRejected, Closed or
    ProtocolError).  Raises :class:`ConnectFailed` when no connection.
    With ``unix`` the host is a UNIX-domain socket path (LMTP)."""
    name = server_name or host
    literal = _ip(host)
    bind = (bind_address, 0) if bind_address else None
    endpoint: Any
    if unix:
        endpoint = UNIXClientEndpoint(reactor, host, timeout=timeouts.connect)  # type: ignore[no-untyped-call]
    elif literal is None:
        endpoint = HostnameEndpoint(reactor, host, port, timeout=timeouts.connect, bindAddress=bind)
    elif literal.version == 4:
        endpoint = TCP4ClientEndpoint(
            reactor, host, port, timeout=timeouts.connect, bindAddress=bind
        )
    else:
        endpoint = TCP6ClientEndpoint(  # type: ignore[no-untyped-call]
            reactor, host, port, timeout=timeouts.connect, bindAddress=bind
        )
    shown_ip = host if (literal or unix) else ""
    session = ClientSession(helo_name, lmtp=lmtp, peer=_peer(name, shown_ip), chunking=chunking)
    factory = Factory.forProtocol(lambda: ClientConnection(session, reactor, timeouts))
    attempt = endpoint.connect(factory)
    # Bound name resolution too, not only each TCP attempt.
    attempt.addTimeout(timeouts.connect, reactor)
    try:
        connection: ClientConnection = await attempt
    except Exception as e:
        raise ConnectFailed(_connect_reply(e, name, shown_ip, port, unix=unix))
    session.peer = _peer(name, host if unix else connection.peer_ip)
    return connection, await connection.next_event()


@dataclass(frozen=True)
class SessionPolicy:
    """What :func:`establish` demands of a server.  ``tls``: the TLS plan
    (None or level none: no STARTTLS).  ``credentials``: SASL username and
    password (None: no AUTH); ``mechanisms``: those allowed by
    smtp_sasl_mechanism_filter (empty: PLAIN and LOGIN);
    ``plaintext_mechs_in_clear``/``plaintext_mechs_over_tls``: whether
    PLAIN/LOGIN pass smtp_sasl_security_options /
    smtp_sasl_tls_security_options (no ``noplaintext``)."""

    tls: TlsPlan | None = None
    credentials: tuple[str, str] | None = None
    mechanisms: tuple[str, ...] = ()
    plaintext_mechs_in_clear: bool = False
    plaintext_mechs_over_tls: bool = True
    auth_soft_bounce: bool = True


@dataclass(frozen=True)
class Established:
    """The result of :func:`establish`: ``failure`` is None when the
    connection may carry mail; otherwise the reply for every recipient.
    ``tls`` is the handshake's outcome (None: plaintext);
    ``tls_failed``: the handshake itself failed (``may`` retries in
    plaintext); ``try_next_host``: another server may do better."""

    failure: Reply | None = None
    tls: TlsOutcome | None = None
    tls_failed: bool = False
    try_next_host: bool = True
    authenticated: str = ""  # the SASL username that was accepted
    remote: bool = False  # ``failure`` is the server's own reply (greeting, EHLO)


async def establish(
    connection: ClientConnection, event: Event, policy: SessionPolicy
) -> Established:
    """STARTTLS and AUTH after the EHLO ``event``, as ``policy`` says."""
    peer = connection.session.peer
    if not isinstance(event, Ready):
        if isinstance(event, GreetingRejected):
            return Established(event.reply, try_next_host=True, remote=True)
        return Established(failure_reply(connection, event))
    session = connection.session
    plan = policy.tls
    outcome: TlsOutcome | None = None
    if plan is not None and plan.wants_tls and not session.lmtp:
        if "STARTTLS" in session.extensions:
            session.starttls()
            connection.pump()
            event = await connection.next_event()
            if isinstance(event, TLSReady):
                creator = ClientTLS(plan)
                connection.start_tls(creator)
                session.tls_started()
                connection.pump()
                event = await connection.next_event()
                if not isinstance(event, Ready):
                    if connection.tls_error or (
                        isinstance(event, Closed) and not connection.tls_done
                    ):
                        why = connection.tls_error or "handshake failure"
                        reply = Reply(
                            454 if plan.mandatory else 451, "7.5", f"Cannot start TLS: {why}"
                        )
                        return Established(reply, tls_failed=True)
                    return Established(failure_reply(connection, event))
                outcome = creator.outcome()
                reason = dane.check(plan, outcome) if plan.tlsa else check_outcome(plan, outcome)
                if plan.tlsa and reason is None:
                    outcome = TlsOutcome(**{**outcome.__dict__, "dane": True})
                if reason is not None:
                    return Established(Reply(454, "7.5", reason), tls=outcome)
            elif isinstance(event, TLSRefused):
                if plan.mandatory:
                    return Established(
                        Reply(
                            454,
                            "7.5",
                            f"TLS is required, but host {peer} refused to start TLS: "
                            f"{event.reply.one_line()}",
                        )
                    )
            else:
                return Established(failure_reply(connection, event))
        elif plan.mandatory:
            return Established(
                Reply(454, "7.4", f"TLS is required, but was not offered by host {peer}")
            )
    authenticated = ""
    if policy.credentials is not None and "AUTH" in session.extensions:
        offered = session.extensions["AUTH"].upper().split()
        allowed = policy.mechanisms or ("PLAIN", "LOGIN")
        plaintext_ok = (
            policy.plaintext_mechs_over_tls if session.tls else policy.plaintext_mechs_in_clear
        )
        usable = [m for m in ("PLAIN", "LOGIN") if m in offered and m in allowed]
        if not plaintext_ok:
            usable = []
        if not usable:
            return Established(
                Reply(
                    451,
                    "7.0",
                    f"SASL authentication failed; cannot authenticate to server {peer}: "
                    "no mechanism available",
                ),
                tls=outcome,
            )
        username, password = policy.credentials
        session.authenticate(usable[0], username, password)
        connection.pump()
        event = await connection.next_event()
        if isinstance(event, AuthFailed):
            reply = event.reply
            code = reply.code
            if code >= 500 and policy.auth_soft_bounce:
                code -= 100
            return Established(
                Reply(
                    code,
                    reply.detail or "7.0",
                    f"SASL authentication failed; server {peer} said: {reply.one_line()}",
                ),
                tls=outcome,
            )
        if not isinstance(event, Authenticated):
            return Established(failure_reply(connection, event), tls=outcome)
        authenticated = username
    return Established(None, tls=outcome, try_next_host=False, authenticated=authenticated)


async def run_transaction(
    connection: ClientConnection, tx: Transaction, body: IO[bytes]
) -> list[Reply]:
    """Send one message on a connection that is Ready; one final reply per
    recipient.  Failures (timeout, lost connection, protocol error) become
    temporary replies for the recipients that have no final reply yet.
    Afterwards :attr:`ClientConnection.remote` tells, per reply, whether
    the server gave it (False: made up here)."""
    finals: list[Reply | None] = [None] * len(tx.recipients)
    connection.transactions += 1
    connection.body_started = False
    connection.session.start_transaction(tx)
    connection.pump()
    while True:
        event = await connection.next_event()
        if isinstance(event, RecipientReply):
            if not event.reply.is_positive:
                finals[event.index] = event.reply
        elif isinstance(event, DataAccepted):
            connection.body_started = True
            connection.stream_body(body)
        elif isinstance(event, MessageDone | TransactionFailed):
            local = isinstance(event, TransactionFailed) and event.local
            connection.remote = [not local] * len(event.replies)
            return event.replies
        else:
            failure = failure_reply(connection, event)
            connection.remote = [reply is not None for reply in finals]
            return [reply or failure for reply in finals]


async def close_connection(connection: ClientConnection) -> None:
    """QUIT (RFC 5321 4.1.1.10) and drop the connection; waits no longer
    than the quit timeout."""
    session = connection.session
    clean = False
    if connection.connected and session.stage is not Stage.CLOSED:
        try:
            session.quit()
        except RuntimeError:
            pass  # mid-handshake or mid-transaction: nothing polite to say
        else:
            connection.pump()
            # Only a QUIT that was sent can be answered; after the server
            # gave up mid-body the session ends without one.
            clean = session.stage is Stage.QUIT
            while not isinstance(event := await connection.next_event(), Closed | ProtocolError):
                _log.debug("ignored after QUIT: {event!r}", event=event)
            clean = clean and isinstance(event, Closed) and not connection.timed_out
    await connection.close(abort=not clean)


def failure_reply(connection: ClientConnection, event: Event) -> Reply:
    """The temporary reply for a session that ended without an answer."""
    peer = connection.session.peer or "the server"
    stage = connection.stage.value
    if connection.local_error:
        return Reply(451, "3.0", connection.local_error)
    if connection.timed_out:
        return Reply(451, "4.2", f"conversation with {peer} timed out while {stage}")
    if isinstance(event, ProtocolError):
        stage = event.stage.value
        return Reply(451, "5.0", f"protocol error with {peer} while {stage}: {event.reason}")
    if isinstance(event, Closed):
        return Reply(451, "4.2", f"lost connection with {peer} while {stage}")
    return Reply(451, "5.0", f"unexpected event from {peer} while {stage}: {event!r}")


async def deliver(
    reactor: Any,
    *,
    host: str,
    port: int,
    helo_name: str,
    envelope: Envelope,
    recipients: list[Recipient],
    message_path: Path,
    timeouts: TimeoutSettings,
    lmtp: bool = False,
    bind_address: str | None = None,
    server_name: str | None = None,
    policy: SessionPolicy | None = None,
    unix: bool = False,
    chunking: bool = True,
) -> DeliveryResult:
    """Deliver the message in ``message_path`` to ``recipients`` through
    host:port with one transaction, then QUIT.  ``host`` is a name or an
    address (a socket path with ``unix``); ``server_name`` is the name to
    show for it when the caller has already resolved it (an MX host).
    Never raises."""
    count = len(recipients)
    try:
        body = message_path.open("rb")
    except OSError as e:
        reply = Reply(451, "3.0", f"error reading queue file {message_path}: {e.strerror}")
        return DeliveryResult([reply] * count, "")
    with body:
        try:
            return await _deliver(
                reactor,
                host=host,
                port=port,
                helo_name=helo_name,
                tx=transaction_for(envelope, recipients, os.fstat(body.fileno()).st_size),
                body=body,
                timeouts=timeouts,
                lmtp=lmtp,
                bind_address=bind_address,
                server_name=server_name,
                policy=policy or SessionPolicy(),
                unix=unix,
                chunking=chunking,
            )
        except Exception as e:
            # A bug must defer the mail, not lose it or stop the queue.
            _log.failure("delivery to {host}:{port} failed", host=host, port=port)
            reply = Reply(451, "3.0", f"internal error in SMTP delivery: {e!r}")
            return DeliveryResult([reply] * count, "")


async def _deliver(
    reactor: Any,
    *,
    host: str,
    port: int,
    helo_name: str,
    tx: Transaction,
    body: IO[bytes],
    timeouts: TimeoutSettings,
    lmtp: bool,
    bind_address: str | None,
    server_name: str | None,
    policy: SessionPolicy,
    unix: bool,
    chunking: bool,
) -> DeliveryResult:
    count = len(tx.recipients)
    try:
        connection, event = await open_connection(
            reactor,
            host=host,
            port=port,
            helo_name=helo_name,
            timeouts=timeouts,
            lmtp=lmtp,
            bind_address=bind_address,
            server_name=server_name,
            unix=unix,
            chunking=chunking,
        )
    except ConnectFailed as e:
        return DeliveryResult([e.reply] * count, "", try_next_host=True)
    relay = connection_relay(connection, port, unix=unix)
    ready = Established(failure=Reply(451, "4.0", "no session"))
    try:
        ready = await establish(connection, event, policy)
        if ready.failure is None:
            replies = await run_transaction(connection, tx, body)
        else:
            replies = [ready.failure] * count
        await close_connection(connection)
    finally:
        await connection.close(abort=True)
    log = "\n".join(connection.session.transcript)
    return DeliveryResult(
        replies,
        relay,
        log,
        try_next_host=ready.failure is not None and ready.try_next_host,
        tls=ready.tls,
        tls_failed=ready.tls_failed,
    )


def connection_relay(connection: ClientConnection, port: int, *, unix: bool = False) -> str:
    """The relay as Postfix logs it: ``host[ip]:port`` (``host[path]`` for
    a UNIX-domain socket)."""
    return connection.session.peer if unix else f"{connection.session.peer}:{port}"


def transaction_for(envelope: Envelope, recipients: list[Recipient], size: int) -> Transaction:
    """The SMTP transaction for ``recipients`` of ``envelope``; ``size`` is
    the queue file's, used when the envelope does not record one."""
    mail_params: dict[str, str | None] = {}
    if envelope.ret:
        mail_params["RET"] = envelope.ret  # RFC 3461 4.3
    if envelope.envid:
        mail_params["ENVID"] = envelope.envid  # RFC 3461 4.4
    rcpt_params: list[dict[str, str | None]] = []
    for rcpt in recipients:
        params: dict[str, str | None] = {}
        if rcpt.notify:
            params["NOTIFY"] = ",".join(rcpt.notify)  # RFC 3461 4.1
        if rcpt.orcpt:
            params["ORCPT"] = rcpt.orcpt  # RFC 3461 4.2
        rcpt_params.append(params)
    return Transaction(
        sender=envelope.sender,
        recipients=[rcpt.address for rcpt in recipients],
        mail_params=mail_params,
        rcpt_params=rcpt_params,
        size=envelope.size or size,
        # BINARYMIME needs BDAT (RFC 3030), which is not used: send as 8bit.
        needs_8bit=envelope.body.upper() in ("8BITMIME", "BINARYMIME"),
        needs_smtputf8=envelope.smtputf8,
    )


def _connect_reply(e: BaseException, name: str, ip: str, port: int, *, unix: bool = False) -> Reply:
    where = f"connect to {_peer(name, ip)}" if unix else f"connect to {_peer(name, ip)}:{port}"
    if isinstance(e, neterror.ConnectionRefusedError):
        return Reply(451, "4.1", f"{where}: Connection refused")
    if isinstance(e, TimeoutError | defer.TimeoutError | neterror.TimeoutError):
        return Reply(451, "4.1", f"{where}: Connection timed out")
    if isinstance(e, neterror.DNSLookupError):
        return Reply(451, "4.3", f"Host or domain name not found: {name}")
    if unix:
        text = str(e).lower()
        if "no such file" in text or "errno 2]" in text:
            return Reply(451, "4.1", f"{where}: No such file or directory")
        if "refused" in text:
            return Reply(451, "4.1", f"{where}: Connection refused")
        if "permission" in text:
            return Reply(451, "4.1", f"{where}: Permission denied")
    reason = e.__class__.__name__ if not str(e) else str(e)
    return Reply(451, "4.1", f"{where}: {reason}")


def _tls_reason(reason: Failure) -> str:
    """A short text for a failed TLS handshake."""
    from OpenSSL import SSL

    value = reason.value
    if isinstance(value, SSL.Error) and value.args and isinstance(value.args[0], list):
        parts = [str(item[-1]) for item in value.args[0] if item]
        if parts:
            return ", ".join(parts)
    if isinstance(value, neterror.ConnectionDone | neterror.ConnectionLost):
        return "lost connection during the handshake"
    return str(value) or value.__class__.__name__


def _peer(name: str, ip: str) -> str:
    """Postfix's ``name[ip]``."""
    return f"{name}[{ip}]" if ip else name


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
