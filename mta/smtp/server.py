"""The server side of one SMTP (or LMTP) connection, without I/O.

Input: bytes from the client (:meth:`ServerSession.receive_data`) and the
adapter's decisions (:meth:`ServerSession.respond`).  Output: events
(:meth:`ServerSession.next_event`) and reply bytes
(:meth:`ServerSession.data_to_send`).  No sockets, reactor or clock: the Twisted
adapter (``mta.smtpd``) moves bytes, asks policy and queues messages.

Shape (like h11): the adapter feeds bytes, then drains events.  An event that
needs a decision (``Helo``, ``MailFrom``, ``RcptTo``, ``DataStart``,
``MessageEnd``, ``StartTls``, ``Auth``, ``AuthResponse``) stops the parser
until ``respond()`` answers it, so replies to pipelined commands leave in order
(RFC 2920 3).  Everything else (NOOP, RSET, HELP, VRFY, syntax and sequence
errors, limits) the session answers itself.

Message content comes with DATA (dot-stuffed, up to ``<CRLF>.<CRLF>``) or with
BDAT chunks (RFC 3030: exactly the announced octets, nothing unstuffed).  The
octets of a BDAT that is refused for any reason are read and dropped, so they
are never taken for commands.

Which command is allowed in which state is one table, :data:`TRANSITIONS`;
``python -m mta.smtp.server --doc`` draws docs/smtp-states.md from it.

Limits are enforced here, as h11 does: command line length (RFC 5321
4.5.3.1.4), message size (RFC 1870), recipients per message, errors per
session (Postfix smtpd_hard_error_limit).  Message content is handled in bulk:
a few ``bytes.find``/``replace``/``count`` calls per received chunk, never a
Python call per line.
"""

from __future__ import annotations

import base64
import enum
import re
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mta.reply import Reply
from mta.smtp import commands as cmd

# -- settings -------------------------------------------------------------


@dataclass(frozen=True)
class ServerSettings:
    """What one listener's sessions offer; built by the adapter from main.cf
    (parameter names in the comments)."""

    hostname: str  # myhostname: 221/421 texts, the EHLO reply, Received
    banner: str  # full greeting text after "220 " (smtpd_banner)
    lmtp: bool = False  # LHLO instead of HELO/EHLO (RFC 2033)
    max_line_length: int = 2048  # command line limit incl. CRLF (line_length_limit)
    message_size_limit: int = 10240000  # 0 = unlimited; advertised with SIZE (RFC 1870)
    recipient_limit: int = 1000  # smtpd_recipient_limit
    recipient_overshoot_limit: int = 1000  # smtpd_recipient_overshoot_limit
    hard_error_limit: int = 20  # smtpd_hard_error_limit: 421 and close at this many
    pipelining: bool = True
    eightbitmime: bool = True
    enhanced_status_codes: bool = True  # RFC 2034; status omitted from replies when False
    dsn: bool = False  # RFC 3461 parameters accepted and passed on
    smtputf8: bool = False  # RFC 6531
    chunking: bool = True  # RFC 3030 BDAT
    helo_required: bool = False  # smtpd_helo_required
    vrfy_enabled: bool = True  # not disable_vrfy_command
    forbid_bare_newline: bool = True  # smtpd_forbid_bare_newline (Postfix 3.9)
    starttls: bool = False  # offer STARTTLS (smtpd_tls_security_level may/encrypt)
    require_tls: bool = False  # smtpd_tls_security_level = encrypt: 530 before STARTTLS
    auth: bool = False  # smtpd_sasl_auth_enable; mechanisms come from the adapter
    auth_tls_only: bool = True  # smtpd_tls_auth_only
    broken_auth_clients: bool = False  # broken_sasl_auth_clients: also "AUTH=..."
    auth_failure_limit: int = 3  # smtpd_sasl_auth_failure_limit: 421 at this many 535s

    def __post_init__(self) -> None:
        if self.max_line_length < 512:
            raise ValueError("max_line_length below the RFC 5321 minimum of 512")


# -- events ---------------------------------------------------------------


@dataclass(frozen=True)
class Helo:
    """HELO (extended=False), EHLO or LHLO.  Decision; the default answer is
    the greeting reply with the capability list."""

    name: str
    extended: bool


@dataclass(frozen=True)
class MailFrom:
    """MAIL FROM.  Decision; default ``250 2.1.0 Ok``.  ``address`` "" is <>;
    ``params`` keywords are upper-case, values raw; ``body``/``size`` are
    BODY and SIZE already checked."""

    address: str
    params: dict[str, str | None] = field(default_factory=dict)
    body: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class RcptTo:
    """RCPT TO.  Decision; default ``250 2.1.5 Ok``."""

    address: str
    params: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class DataStart:
    """DATA, or the first BDAT (``bdat``), with at least one accepted
    recipient.  Decision; the default is 354 for DATA and, for BDAT, reading
    the chunk (nothing is sent).  A refused BDAT's chunk is dropped."""

    bdat: bool = False


@dataclass(frozen=True)
class MessageData:
    """Message content: DATA dot-unstuffed, BDAT as sent; line ends as received."""

    data: bytes


@dataclass(frozen=True)
class MessageEnd:
    """End of data.  Decision; a reply is required (``250 2.0.0 Ok: queued
    as ID``).  ``size`` is the octet count of the content."""

    size: int


@dataclass(frozen=True)
class TransactionAborted:
    """The open transaction ended without a message: drop what was kept."""

    reason: str


@dataclass(frozen=True)
class Quit:
    """The client said QUIT; 221 is queued and the session is closed."""


@dataclass(frozen=True)
class ConnectionLost:
    """The client closed its side (``receive_data(b"")``)."""


@dataclass(frozen=True)
class StartTls:
    """STARTTLS (RFC 3207).  Decision; default ``220 2.0.0 Ready to start
    TLS``.  After a 220 the session forgets HELO and any input buffered
    behind the command (RFC 3207 4.2); the adapter then starts TLS."""


@dataclass(frozen=True)
class Auth:
    """AUTH (RFC 4954).  Decision, reply required: 334 (challenge; the next
    client line comes as ``AuthResponse``), 235 (authenticated) or an error."""

    mechanism: str
    initial_response: str | None


@dataclass(frozen=True)
class AuthResponse:
    """A client line in an AUTH exchange; answered like ``Auth``.  The
    cancel line "*" is answered by the session (RFC 4954 4)."""

    data: str


Event = (
    Helo
    | MailFrom
    | RcptTo
    | DataStart
    | MessageData
    | MessageEnd
    | TransactionAborted
    | Quit
    | ConnectionLost
    | StartTls
    | Auth
    | AuthResponse
)


# -- states and the transition table ---------------------------------------


class State(enum.Enum):
    CONNECT = "connect"  # greeting not sent yet; input is buffered
    GREETED = "greeted"  # 220 sent, no HELO/EHLO yet
    READY = "ready"  # after HELO/EHLO, no transaction
    MAIL = "mail"  # MAIL accepted, no recipient yet
    RCPT = "rcpt"  # at least one RCPT accepted
    DATA = "data"  # reading message content
    CHUNK = "chunk"  # reading the octets of a BDAT chunk
    BDAT = "bdat"  # between BDAT chunks of one message (RFC 3030)
    REJECTED = "rejected"  # 5xx greeting: only QUIT (RFC 5321 3.1)
    CLOSED = "closed"


@dataclass(frozen=True)
class Allow:
    """The command is handled by ``ServerSession._on_<action>``; ``to`` is the
    state after a positive answer (None: unchanged)."""

    action: str
    to: State | None = None
    needs_helo: bool = False  # 503 before HELO when smtpd_helo_required (always in LMTP)
    aborts: bool = False  # ends the open transaction first (TransactionAborted)


@dataclass(frozen=True)
class Refuse:
    """The command is answered with ``reply`` and changes nothing."""

    reply: Reply


Rule = Allow | Refuse

VERBS = (
    "HELO",
    "EHLO",
    "LHLO",
    "MAIL",
    "RCPT",
    "DATA",
    "BDAT",
    "RSET",
    "NOOP",
    "QUIT",
    "VRFY",
    "EXPN",
    "HELP",
    "STARTTLS",
    "AUTH",
)

_NEED_MAIL = Refuse(Reply(503, "5.1", "Error: need MAIL command"))
_NEED_RCPT = Refuse(Reply(503, "5.1", "Error: need RCPT command"))
_NESTED = Refuse(Reply(503, "5.1", "Error: nested MAIL command"))
# RFC 2920 3.1: DATA after only failed RCPTs gets 554 or 503; Postfix uses 554.
_NO_RCPT = Refuse(Reply(554, "5.1", "Error: no valid recipients"))
# RFC 3207 4 and RFC 4954 4: not during a mail transaction.
_IN_TX = Refuse(Reply(503, "5.1", "Error: MAIL transaction in progress"))
_NEED_EHLO = Refuse(Reply(503, "5.1", "Error: send HELO/EHLO first"))
_REJECTED = Refuse(Reply(503, "5.1", "Error: access denied, send QUIT"))
# RFC 3030 2: a message sent with BDAT ends with BDAT LAST (or RSET).
_IN_BDAT = Refuse(Reply(503, "5.1", "Error: BDAT message in progress, send BDAT or RSET"))


def _common(in_tx: bool) -> dict[str, Rule]:
    """Commands that mean the same in every command state; in a transaction
    HELO/EHLO/LHLO, RSET and QUIT also abort it (RFC 5321 4.1.1.5, 4.1.4)."""
    hello = Allow("hello", State.READY, aborts=in_tx)
    return {
        "HELO": hello,
        "EHLO": hello,
        "LHLO": hello,
        "RSET": Allow("rset", aborts=in_tx),
        "NOOP": Allow("noop"),
        "QUIT": Allow("quit", State.CLOSED, aborts=in_tx),
        "VRFY": Allow("vrfy"),
        "EXPN": Allow("expn"),
        "HELP": Allow("help"),
    }


TRANSITIONS: dict[State, dict[str, Rule]] = {
    State.CONNECT: {},
    State.GREETED: {
        **_common(in_tx=False),
        "MAIL": Allow("mail", State.MAIL, needs_helo=True),
        "RCPT": _NEED_MAIL,
        "DATA": _NEED_RCPT,
        "BDAT": _NEED_MAIL,
        "STARTTLS": Allow("starttls", State.GREETED, needs_helo=True),
        "AUTH": _NEED_EHLO,
    },
    State.READY: {
        **_common(in_tx=False),
        "MAIL": Allow("mail", State.MAIL),
        "RCPT": _NEED_MAIL,
        "DATA": _NEED_RCPT,
        "BDAT": _NEED_MAIL,
        "STARTTLS": Allow("starttls", State.GREETED),
        "AUTH": Allow("auth"),
    },
    State.MAIL: {
        **_common(in_tx=True),
        "MAIL": _NESTED,
        "RCPT": Allow("rcpt", State.RCPT),
        "DATA": _NO_RCPT,
        "BDAT": _NO_RCPT,
        "STARTTLS": _IN_TX,
        "AUTH": _IN_TX,
    },
    State.RCPT: {
        **_common(in_tx=True),
        "MAIL": _NESTED,
        "RCPT": Allow("rcpt", State.RCPT),
        "DATA": Allow("data", State.DATA),
        "BDAT": Allow("bdat", State.CHUNK),
        "STARTTLS": _IN_TX,
        "AUTH": _IN_TX,
    },
    State.DATA: {},
    State.CHUNK: {},
    State.BDAT: {
        **_common(in_tx=True),
        "MAIL": _NESTED,
        "RCPT": _IN_BDAT,
        "DATA": _IN_BDAT,
        "BDAT": Allow("bdat", State.CHUNK),
        "STARTTLS": _IN_TX,
        "AUTH": _IN_TX,
    },
    State.REJECTED: {**dict.fromkeys(VERBS, _REJECTED), "QUIT": Allow("quit", State.CLOSED)},
    State.CLOSED: {},
}

_NOT_READ = {
    State.CONNECT: "input is buffered until the greeting is sent",
    State.DATA: "message content: no commands are read until `<CRLF>.<CRLF>`",
    State.CHUNK: "the octets of a BDAT chunk, read as they are",
    State.CLOSED: "nothing is read",
}

# -- fixed replies -----------------------------------------------------------

_OK = Reply(250, "0.0", "Ok")
_MAIL_OK = Reply(250, "1.0", "Ok")
_RCPT_OK = Reply(250, "1.5", "Ok")
_GO_AHEAD = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
_TLS_GO = Reply(220, "0.0", "Ready to start TLS")
_BYE = Reply(221, "0.0", "Bye")
_UNKNOWN = Reply(500, "5.2", "Error: command not recognized")
_LINE_TOO_LONG = Reply(500, "5.2", "Error: line too long")
_TOO_MANY_RCPTS = Reply(452, "5.3", "Error: too many recipients")
_TOO_BIG = Reply(552, "3.4", "Error: message file too big")
_SIZE_EXCEEDED = Reply(552, "3.4", "Message size exceeds fixed limit")
_VRFY_DISABLED = Reply(502, "5.1", "VRFY command is disabled")
# RFC 5321 3.5.3: 252 when the server cannot verify but will try delivery.
_VRFY_OK = Reply(252, "0.0", "Cannot VRFY user, but will accept message and attempt delivery")
_EXPN_OFF = Reply(502, "5.1", "Error: command not implemented")
_TLS_ACTIVE = Reply(554, "5.1", "Error: TLS already active")
_NO_TLS = Reply(502, "5.1", "Error: command not implemented")
_NO_AUTH = Reply(503, "5.1", "Error: authentication not enabled")
_AUTHED = Reply(503, "5.1", "Error: already authenticated")
_AUTH_ABORTED = Reply(501, "7.0", "Authentication aborted")
# RFC 4954 4 would say 538 5.7.11; Postfix answers this.
_AUTH_NEEDS_TLS = Reply(504, "5.4", "Encryption required for requested authentication mechanism")
_AUTH_BAD_MECH = Reply(504, "5.4", "Error: unsupported authentication mechanism")
_AUTH_BAD_BASE64 = Reply(501, "5.2", "Error: cannot decode response")  # RFC 4954 4
_NEED_TLS = Reply(530, "7.0", "Must issue a STARTTLS command first")  # RFC 3207 4
_NO_BDAT = Reply(502, "5.1", "Error: command not implemented")
_DSN_OFF = Reply(501, "7.1", "DSN support is disabled")
# RFC 3207 4: until TLS these get 530 when TLS is required.
_TLS_GATED = frozenset({"MAIL", "RCPT", "DATA", "BDAT", "VRFY", "EXPN", "AUTH"})

_AUTH_LINE_LENGTH = 12288  # RFC 4954 4: AUTH lines may be this long
_TERMINATOR = b"\r\n.\r\n"  # RFC 5321 4.1.1.4; the first CRLF ends the last line
_CLOSING_CODES = (421, 521)  # the server closes after these (RFC 5321 3.8, RFC 7504)

# RFC 3461 4: xtext = *( xchar / "+" 2HEXDIG ), xchar = "!".."~" except "+" and "="
_XTEXT_RE = re.compile(r"^(?:[!-*,-<>-~]|\+[0-9A-F]{2})*$")
_ORCPT_RE = re.compile(r"^[A-Za-z0-9-]+;.+$")
_DIGITS_RE = re.compile(r"^[0-9]{1,20}$")


def _param_error(text: str) -> Reply:
    return Reply(501, "5.4", text)


# -- the session ---------------------------------------------------------------


@dataclass
class _Decision:
    """An event waiting for ``respond()``: its default reply and what a
    reply does to the session (``apply`` raises ValueError for a reply that
    makes no sense here, before changing anything)."""

    event: Event
    default: Reply | Callable[[], Reply] | None
    apply: Callable[[Reply], None]
    silent: bool = False  # a positive answer sends nothing (the first BDAT)


class ServerSession:
    """One SMTP/LMTP server connection as a state machine over bytes.

    ``reject_connection()`` instead of ``start()``: a 4xx reply (421) is sent
    and the session closes; a 5xx (554) greeting leaves the session in
    ``REJECTED``, answering 503 to everything but QUIT (RFC 5321 3.1).

    Input is buffered while a decision is pending; the adapter should pause
    reading when ``buffered_bytes`` grows (pipelining is bounded by RFC 2920
    but a client may not obey).
    """

    def __init__(self, settings: ServerSettings, *, tls: bool = False) -> None:
        # Public: a reload never changes them under a running session.
        self.settings = settings
        self.state = State.CONNECT
        self.closed = False
        self.error_count = 0
        self.helo_name: str | None = None
        self.esmtp = False
        self.tls = tls  # True from the start for implicit TLS (smtps)
        self.authenticated = False
        # SASL mechanisms offered now: the adapter sets them (they depend on
        # the backend and on TLS) before it answers HELO/EHLO.
        self.auth_mechanisms: tuple[str, ...] = ()
        self.auth_failures = 0
        self._in = bytearray()
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._pending: _Decision | None = None
        self._eof = False
        self._discarding_line = False  # inside an over-long command line
        self._in_auth = False  # the next line answers a 334 challenge
        # The transaction (RFC 5321 3.3).
        self._tx_open = False
        self._tx_smtputf8 = False
        self._rcpt_count = 0
        self._overshoot = 0
        self._data_size = 0
        self._data_problem: tuple[Reply, str] | None = None
        # BDAT (RFC 3030): octets of the chunk being read, or being dropped.
        self._chunk_left = 0
        self._chunk_size = 0
        self._chunk_last = False
        self._chunk_prev = b""  # the last octet kept, for the bare LF check
        self._skip_left = 0

    # -- public API ----------------------------------------------------------

    def start(self) -> None:
        """Queue the 220 greeting (RFC 5321 4.2; no enhanced code, RFC 2034)."""
        self._expect_connect()
        self._send(Reply(220, "", self.settings.banner))
        self.state = State.GREETED

    def reject_connection(self, reply: Reply) -> None:
        """Greet with a refusal instead: 4xx closes at once, 5xx waits for QUIT."""
        self._expect_connect()
        if reply.code < 400:
            raise ValueError(f"not a refusal: {reply}")
        self.state = State.REJECTED
        self._send(reply)
        if reply.code < 500:
            self._close_now()

    def receive_data(self, data: bytes) -> None:
        """Append client bytes; ``b""`` means the client closed its side."""
        if self.closed or self._eof:
            return
        if not data:
            self._eof = True
            return
        self._in += data

    def next_event(self, *, stop_after_reply: bool = False) -> Event | None:
        """The next event, or None when more input or a ``respond()`` is needed.

        With ``stop_after_reply`` no further input is parsed while replies
        wait in :meth:`data_to_send`, so that the adapter can pace its
        answers (the error tarpit) one command at a time.
        """
        while True:
            if self._events:
                return self._events.popleft()
            if self._pending is not None or self.closed:
                return None
            if stop_after_reply and self._out:
                return None
            if not self._step():
                return None

    @property
    def has_output(self) -> bool:
        """Replies are waiting in :meth:`data_to_send`."""
        return bool(self._out)

    def respond(self, reply: Reply | None) -> None:
        """Answer the pending decision; None takes the default reply."""
        decision = self._pending
        if decision is None:
            raise RuntimeError("no decision is pending")
        if reply is None:
            if decision.default is None:
                raise ValueError(f"{type(decision.event).__name__} needs an explicit reply")
            default = decision.default
            reply = default if isinstance(default, Reply) else default()
        if isinstance(decision.event, MessageEnd) and self.settings.lmtp:
            # RFC 2033 4.2: one reply per accepted recipient.
            self.respond_each([reply] * self._rcpt_count)
            return
        self._pending = None  # apply() may start the next decision (BDAT 0 LAST)
        try:
            decision.apply(reply)
        except ValueError:
            self._pending = decision
            raise
        if decision.silent and reply.code < 400:
            return
        self._reply(reply)
        if isinstance(decision.event, Auth | AuthResponse) and reply.code == 535:
            self._auth_failed()

    def respond_each(self, replies: Sequence[Reply]) -> None:
        """LMTP end of data: one reply per accepted recipient, in RCPT order
        (RFC 2033 4.2)."""
        decision = self._pending
        if not isinstance(decision, _Decision) or not isinstance(decision.event, MessageEnd):
            raise RuntimeError("no end of data is pending")
        if not self.settings.lmtp or len(replies) != self._rcpt_count:
            raise ValueError("respond_each needs LMTP and one reply per recipient")
        for reply in replies:
            _expect_code(reply, (2,))
        self._pending = None
        self._end_transaction()
        for reply in replies:
            self._reply(reply)
            if self.closed:
                break

    def data_to_send(self) -> bytes:
        """Drain the replies queued so far."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def close(self, reply: Reply) -> None:
        """Adapter-initiated shutdown (timeout, stop): queue ``reply``, close."""
        if self.closed:
            return
        self._pending = None
        self._send(reply)
        self._close_now()

    @property
    def pending(self) -> Event | None:
        """The event waiting for ``respond()``, if any."""
        return self._pending.event if self._pending else None

    @property
    def buffered_bytes(self) -> int:
        """Client bytes held but not yet consumed."""
        return len(self._in)

    @property
    def protocol(self) -> str:
        """The Received ``with`` keyword (RFC 3848)."""
        if self.settings.lmtp:
            base = "LMTP"
        elif self.esmtp:
            base = "ESMTP"
        else:
            return "SMTP"
        return base + ("S" if self.tls else "") + ("A" if self.authenticated else "")

    def ehlo_keywords(self) -> list[str]:
        """The EHLO/LHLO capability lines, in Postfix's order."""
        s = self.settings
        kw: list[str] = []
        if s.pipelining:
            kw.append("PIPELINING")
        # RFC 1870 4: "SIZE" alone means no fixed limit.
        kw.append(f"SIZE {s.message_size_limit}" if s.message_size_limit else "SIZE")
        if s.vrfy_enabled:
            kw.append("VRFY")
        if self.offers_starttls:
            kw.append("STARTTLS")
        if self.offers_auth:
            mechanisms = " ".join(self.auth_mechanisms)
            kw.append(f"AUTH {mechanisms}")
            if s.broken_auth_clients:
                kw.append(f"AUTH={mechanisms}")  # pre-RFC 2554 clients (Outlook 97)
        if s.enhanced_status_codes:
            kw.append("ENHANCEDSTATUSCODES")
        if s.eightbitmime:
            kw.append("8BITMIME")
        if s.dsn:
            kw.append("DSN")
        if s.smtputf8:
            kw.append("SMTPUTF8")
        if s.chunking:
            kw.append("CHUNKING")
        return kw

    @property
    def offers_starttls(self) -> bool:
        return self.settings.starttls and not self.tls

    @property
    def offers_auth(self) -> bool:
        """AUTH is in the EHLO reply: enabled, a mechanism to offer, and TLS
        when smtpd_tls_auth_only wants it."""
        s = self.settings
        return s.auth and bool(self.auth_mechanisms) and (self.tls or not s.auth_tls_only)

    # -- replies and closing -------------------------------------------------

    def _send(self, reply: Reply) -> None:
        self._out += reply.to_bytes(self.settings.enhanced_status_codes)

    def _reply(self, reply: Reply, *, counts: bool = True) -> None:
        """Queue a reply; errors count towards smtpd_hard_error_limit, and a
        421/521 closes the session."""
        self._send(reply)
        if reply.code in _CLOSING_CODES:
            self._close_now()
            return
        if reply.code >= 400 and counts:
            self.error_count += 1
            limit = self.settings.hard_error_limit
            if limit > 0 and self.error_count >= limit:
                # Postfix checks before reading the next command: the 421
                # follows the error that reached the limit.
                host = self.settings.hostname
                self._send(Reply(421, "7.0", f"{host} Error: too many errors"))
                self._close_now()

    def _close_now(self) -> None:
        if self._tx_open:
            self._abort("connection closed")
        self.closed = True
        self.state = State.CLOSED
        self._in.clear()

    def _expect_connect(self) -> None:
        if self.state is not State.CONNECT:
            raise RuntimeError("the session has already greeted")

    # -- transactions --------------------------------------------------------

    def _idle_state(self) -> State:
        return State.READY if self.helo_name is not None else State.GREETED

    def _end_transaction(self) -> None:
        self._tx_open = False
        self._tx_smtputf8 = False
        self._rcpt_count = 0
        self._overshoot = 0
        self._data_problem = None
        self._data_size = 0
        self._chunk_left = 0
        self._chunk_prev = b""
        self.state = self._idle_state()

    def _abort(self, reason: str) -> None:
        """End an open transaction without a message (RSET, HELO, EOF, ...)."""
        if self._tx_open:
            self._events.append(TransactionAborted(reason))
        self._end_transaction()

    def _decide(
        self,
        event: Event,
        default: Reply | Callable[[], Reply] | None,
        apply: Callable[[Reply], None],
        *,
        silent: bool = False,
    ) -> None:
        self._events.append(event)
        self._pending = _Decision(event, default, apply, silent)

    # -- input -----------------------------------------------------------------

    def _step(self) -> bool:
        """Consume some input; False when nothing more can be done now."""
        if self._skip_left:
            return self._skip_chunk()
        if self.state is State.DATA:
            return self._read_data()
        if self.state is State.CHUNK:
            return self._read_chunk()
        if self.state is State.CONNECT:
            return self._lost_connection()
        buf = self._in
        nl = buf.find(b"\n")
        if self._discarding_line:
            if nl < 0:
                buf.clear()
                return self._lost_connection()
            del buf[: nl + 1]
            self._discarding_line = False
            self._reply(_LINE_TOO_LONG)
            return True
        limit = self._line_limit()
        if nl < 0:
            if len(buf) >= limit:
                # Bounded memory: drop the line now, answer at its end.
                buf.clear()
                self._discarding_line = True
                return True
            return self._lost_connection()
        line = bytes(buf[:nl])
        del buf[: nl + 1]
        if line.endswith(b"\r"):
            line = line[:-1]  # CRLF; a bare LF is tolerated in commands, as Postfix does
        if len(line) + 2 > limit:
            self._reply(_LINE_TOO_LONG)
        elif self._in_auth:
            self._auth_line(line)
        else:
            self._command(line)
        return True

    def _line_limit(self) -> int:
        limit = self.settings.max_line_length
        if self._in_auth or (self._in[:5].upper() == b"AUTH " and self.offers_auth):
            return max(limit, _AUTH_LINE_LENGTH)
        return limit

    def _lost_connection(self) -> bool:
        if not self._eof:
            return False
        self._abort("lost connection")
        self._events.append(ConnectionLost())
        self._close_now()
        return True

    def _command(self, line: bytes) -> None:
        verb = cmd.peek_verb(line)
        rule = TRANSITIONS[self.state].get(verb)
        if verb == "BDAT":
            self._bdat_command(line, rule)
            return
        if isinstance(rule, Refuse):
            self._reply(rule.reply)
            return
        if verb in _TLS_GATED and self._tls_needed():
            self._reply(_NEED_TLS)
            return
        try:
            command = cmd.parse_command(line, smtputf8=self._tx_smtputf8)
        except cmd.CommandError as e:
            self._reply(e.reply)
            return
        if isinstance(command, cmd.Hello) and (command.verb == "LHLO") != self.settings.lmtp:
            self._reply(_UNKNOWN)  # RFC 2033 4.1: LHLO only in LMTP, HELO/EHLO never
            return
        # parse_command's verb is peek_verb's and the table knows every verb
        # that parses, so only an Allow is left here.
        assert isinstance(rule, Allow)
        if rule.needs_helo and self.helo_name is None and self._helo_required():
            hello = "LHLO" if self.settings.lmtp else "HELO/EHLO"
            self._reply(Reply(503, "5.1", f"Error: send {hello} first"))
        else:
            if rule.aborts:
                self._abort(command.verb)
            handler: Callable[[cmd.Command, Allow], None] = getattr(self, f"_on_{rule.action}")
            handler(command, rule)

    def _goto(self, rule: Allow) -> None:
        if rule.to is not None:
            self.state = rule.to

    def _helo_required(self) -> bool:
        return self.settings.helo_required or self.settings.lmtp

    def _tls_needed(self) -> bool:
        return self.settings.require_tls and not self.tls

    def _bdat_command(self, line: bytes, rule: Rule | None) -> None:
        """BDAT: whatever the answer, the chunk's octets are read (RFC 3030 2);
        those of a refused BDAT are dropped unseen."""
        try:
            command = cmd.parse_command(line)
        except cmd.CommandError as e:
            self._reply(e.reply)  # no size known: nothing can be skipped
            return
        assert isinstance(command, cmd.Bdat) and rule is not None
        refusal: Reply | None = None
        if not self.settings.chunking:
            refusal = _NO_BDAT
        elif isinstance(rule, Refuse):
            refusal = rule.reply
        elif self._tls_needed():
            refusal = _NEED_TLS
        if refusal is not None:
            self._skip_left = command.size
            self._reply(refusal)
            return
        assert isinstance(rule, Allow)
        self._on_bdat(command, rule)

    # -- command handlers (named by the table's actions) ---------------------

    def _on_hello(self, command: cmd.Command, rule: Allow) -> None:
        assert isinstance(command, cmd.Hello)
        extended = command.verb != "HELO"
        name = command.name
        default: Callable[[], Reply]
        if extended:
            # Built when answered: the adapter sets auth_mechanisms first.
            def default() -> Reply:
                return Reply(250, "", "\n".join([self.settings.hostname, *self.ehlo_keywords()]))
        else:

            def default() -> Reply:
                return Reply(250, "", self.settings.hostname)

        def apply(reply: Reply) -> None:
            _expect_code(reply, (2,))
            if reply.code < 400:
                self.helo_name = name
                self.esmtp = extended
                self._goto(rule)

        self._decide(Helo(name, extended), default, apply)

    def _on_mail(self, command: cmd.Command, rule: Allow) -> None:
        assert isinstance(command, cmd.Mail)
        problem = self._check_params(command.params, self._mail_checks())
        if problem is not None:
            self._reply(problem)
            return
        params = command.params
        body = params.get("BODY")
        size = params.get("SIZE")
        event = MailFrom(
            command.address,
            params,
            body.upper() if body else None,
            int(size) if size else None,
        )

        def apply(reply: Reply) -> None:
            _expect_code(reply, (2,))
            if reply.code < 400:
                self._tx_open = True
                self._tx_smtputf8 = "SMTPUTF8" in params
                self._rcpt_count = 0
                self._goto(rule)

        self._decide(event, _MAIL_OK, apply)

    def _on_rcpt(self, command: cmd.Command, rule: Allow) -> None:
        assert isinstance(command, cmd.Rcpt)
        if self._rcpt_count >= self.settings.recipient_limit:
            # Postfix smtpd_recipient_overshoot_limit: not an error at first,
            # then each one counts (so 100,000 RCPTs end in a 421).
            self._overshoot += 1
            counts = self._overshoot > self.settings.recipient_overshoot_limit
            self._reply(_TOO_MANY_RCPTS, counts=counts)
            return
        problem = self._check_params(command.params, self._rcpt_checks())
        if problem is not None:
            self._reply(problem)
            return

        def apply(reply: Reply) -> None:
            _expect_code(reply, (2,))
            if reply.code < 400:
                self._rcpt_count += 1
                self._goto(rule)

        self._decide(RcptTo(command.address, command.params), _RCPT_OK, apply)

    def _on_data(self, command: cmd.Command, rule: Allow) -> None:
        def apply(reply: Reply) -> None:
            _expect_code(reply, (3,), exact=354)
            if reply.code < 400:
                self._goto(rule)
                self._data_size = 0
                self._data_problem = None
                # The CRLF of the DATA line starts the first line (RFC 5321
                # 4.1.1.4); keeping it in front lets one find() catch an
                # empty message ".\r\n" as well.
                self._in[0:0] = b"\r\n"

        self._decide(DataStart(), _GO_AHEAD, apply)

    def _on_rset(self, command: cmd.Command, rule: Allow) -> None:
        self._reply(_OK)

    def _on_noop(self, command: cmd.Command, rule: Allow) -> None:
        self._reply(_OK)

    def _on_quit(self, command: cmd.Command, rule: Allow) -> None:
        self._events.append(Quit())
        self._reply(_BYE)
        self._close_now()

    def _on_vrfy(self, command: cmd.Command, rule: Allow) -> None:
        self._reply(_VRFY_OK if self.settings.vrfy_enabled else _VRFY_DISABLED)

    def _on_expn(self, command: cmd.Command, rule: Allow) -> None:
        self._reply(_EXPN_OFF)

    def _on_help(self, command: cmd.Command, rule: Allow) -> None:
        verbs = ["LHLO"] if self.settings.lmtp else ["HELO", "EHLO"]
        verbs += ["MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "HELP"]
        if self.settings.chunking:
            verbs.insert(verbs.index("DATA") + 1, "BDAT")
        if self.offers_starttls:
            verbs.append("STARTTLS")
        if self.offers_auth:
            verbs.append("AUTH")
        self._reply(Reply(214, "0.0", "Commands: " + " ".join(verbs)))

    def _on_starttls(self, command: cmd.Command, rule: Allow) -> None:
        if self.tls:
            self._reply(_TLS_ACTIVE)
            return
        if not self.settings.starttls:
            self._reply(_NO_TLS)
            return

        def apply(reply: Reply) -> None:
            _expect_code(reply, (2,), exact=220)
            if reply.code < 400:
                # RFC 3207 4.2: forget everything learnt from the client, and
                # never act on plaintext sent behind STARTTLS (CVE-2011-0411).
                self._in.clear()
                self._discarding_line = False
                self.helo_name = None
                self.esmtp = False
                self.tls = True
                self._goto(rule)

        self._decide(StartTls(), _TLS_GO, apply)

    def _on_auth(self, command: cmd.Command, rule: Allow) -> None:
        assert isinstance(command, cmd.Auth)
        response = command.initial_response
        if not self.settings.auth or not self.auth_mechanisms:
            self._reply(_NO_AUTH)
        elif not self.tls and self.settings.auth_tls_only:
            self._reply(_AUTH_NEEDS_TLS)
        elif self.authenticated:
            self._reply(_AUTHED)
        elif command.mechanism not in self.auth_mechanisms:
            self._reply(_AUTH_BAD_MECH)
        elif response is not None and response != "=" and not _is_base64(response):
            self._reply(_AUTH_BAD_BASE64)
        else:
            self._decide(Auth(command.mechanism, response), None, self._auth_apply)

    def _auth_line(self, line: bytes) -> None:
        text = line.decode("utf-8", "surrogateescape").strip(" \t")
        if text == "*":
            self._in_auth = False
            self._reply(_AUTH_ABORTED)
        elif not _is_base64(text):
            self._in_auth = False
            self._reply(_AUTH_BAD_BASE64)
        else:
            self._decide(AuthResponse(text), None, self._auth_apply)

    def _auth_failed(self) -> None:
        """A 535 was sent: a guesser is cut off at smtpd_sasl_auth_failure_limit."""
        self.auth_failures += 1
        limit = self.settings.auth_failure_limit
        if limit and self.auth_failures >= limit and not self.closed:
            host = self.settings.hostname
            self._send(Reply(421, "7.0", f"{host} Error: too many failed authentications"))
            self._close_now()

    def _auth_apply(self, reply: Reply) -> None:
        if reply.code not in (235, 334) and reply.code < 400:
            raise ValueError(f"AUTH takes 235, 334 or an error, not {reply.code}")
        self._in_auth = reply.code == 334
        if reply.code == 235:
            self.authenticated = True

    # -- ESMTP parameters ------------------------------------------------------

    def _check_params(
        self, params: dict[str, str | None], checks: dict[str, Callable[[str | None], Reply | None]]
    ) -> Reply | None:
        for keyword, value in params.items():
            check = checks.get(keyword)
            if check is None and keyword in _DSN_PARAMS:
                return _DSN_OFF  # Postfix: DSN discarded with smtpd_discard_ehlo_keywords
            if check is None:
                return Reply(555, "5.4", f"Unsupported option: {keyword}")
            problem = check(value)
            if problem is not None:
                return problem
        return None

    def _mail_checks(self) -> dict[str, Callable[[str | None], Reply | None]]:
        s = self.settings
        checks: dict[str, Callable[[str | None], Reply | None]] = {"SIZE": self._check_size}
        if s.eightbitmime:
            checks["BODY"] = _check_body
        if s.smtputf8:
            checks["SMTPUTF8"] = _check_flag
        if s.dsn:
            checks["RET"] = _check_ret
            checks["ENVID"] = _check_envid
        if s.auth:
            checks["AUTH"] = _check_auth_param
        return checks

    def _rcpt_checks(self) -> dict[str, Callable[[str | None], Reply | None]]:
        if not self.settings.dsn:
            return {}
        return {"NOTIFY": _check_notify, "ORCPT": _check_orcpt}

    def _check_size(self, value: str | None) -> Reply | None:
        if value is None or not _DIGITS_RE.match(value):
            return _param_error("Bad message size syntax")
        limit = self.settings.message_size_limit
        if limit and int(value) > limit:
            return _SIZE_EXCEEDED  # RFC 1870 6.1
        return None

    # -- message content -------------------------------------------------------

    def _read_data(self) -> bool:
        """Consume message content in bulk.

        The buffer always starts with the last two raw bytes already handled
        (at first the DATA line's CRLF), so a terminator or a "<CRLF>." split
        across reads is still seen whole; four unread bytes are held back
        because they may be the start of a terminator.
        """
        buf = self._in
        end = buf.find(_TERMINATOR)
        if end >= 0:
            self._take_content(bytes(buf[: end + 2]))
            del buf[: end + len(_TERMINATOR)]
            self._end_of_data()
            return True
        cut = len(buf) - (len(_TERMINATOR) - 1)
        if cut > 2:
            self._take_content(bytes(buf[:cut]))
            del buf[: cut - 2]
            return True
        if self._eof:
            buf.clear()
            return self._lost_connection()
        return False

    def _take_content(self, region: bytes) -> None:
        """Handle ``region[2:]``; ``region[:2]`` is context already handled."""
        s = self.settings
        # A bare LF is an LF not preceded by CR; count both in one pass each.
        # Checked even past the size limit so that the answer does not depend
        # on how the input was split: a bare LF anywhere wins.
        if s.forbid_bare_newline and region.count(b"\n", 2) != region.count(b"\r\n", 1):
            host = s.hostname
            self._data_problem = (Reply(521, "5.2", f"{host} Error: bare <LF> received"), "bare LF")
            return
        if self._data_problem is not None:
            return  # reading on to the end of data, keeping nothing
        # RFC 5321 4.5.2: drop the first "." of every line that starts with one.
        content = region.replace(b"\r\n.", b"\r\n")[2:]
        self._data_size += len(content)
        if s.message_size_limit and self._data_size > s.message_size_limit:
            self._data_problem = (_TOO_BIG, "message too big")
            return
        if content:
            self._events.append(MessageData(content))

    def _end_of_data(self) -> None:
        if self._data_problem is not None:
            reply, reason = self._data_problem
            self._abort(reason)
            self._reply(reply)  # a 521 closes (smtpd_forbid_bare_newline)
            return

        def apply(reply: Reply) -> None:
            _expect_code(reply, (2,))
            if reply.code < 400:
                # Postfix: the soft/hard error limits count errors made
                # "without delivering mail".
                self.error_count = 0
            self._end_transaction()

        self._decide(MessageEnd(self._data_size), None, apply)

    # -- BDAT (RFC 3030) -----------------------------------------------------

    def _on_bdat(self, command: cmd.Command, rule: Allow) -> None:
        assert isinstance(command, cmd.Bdat)
        size, last = command.size, command.last
        limit = self.settings.message_size_limit
        first = self.state is State.RCPT
        if limit and (0 if first else self._data_size) + size > limit:
            # Refused before a single octet is stored (RFC 1870 6.3).
            self._skip_left = size
            self._abort("message too big")
            self._reply(_TOO_BIG)
            return
        if not first:
            self._start_chunk(size, last)
            return

        def apply(reply: Reply) -> None:
            if reply.code >= 400:
                self._skip_left = size
                return
            _expect_code(reply, (2,))
            self._data_size = 0
            self._data_problem = None
            self._chunk_prev = b""
            self._start_chunk(size, last)

        self._decide(DataStart(bdat=True), _OK, apply, silent=True)

    def _start_chunk(self, size: int, last: bool) -> None:
        self.state = State.CHUNK
        self._chunk_left = self._chunk_size = size
        self._chunk_last = last
        if size == 0:
            self._chunk_done()

    def _read_chunk(self) -> bool:
        buf = self._in
        if not buf:
            return self._lost_connection()
        n = min(len(buf), self._chunk_left)
        piece = bytes(buf[:n])
        del buf[:n]
        self._chunk_left -= n
        self._take_chunk(piece)
        if self._chunk_left == 0:
            self._chunk_done()
        return True

    def _take_chunk(self, piece: bytes) -> None:
        s = self.settings
        context = self._chunk_prev + piece
        self._chunk_prev = piece[-1:]
        # A bare LF is refused in BDAT content too: relayed later with DATA it
        # could end a message early at a lenient next hop (SMTP smuggling).
        if s.forbid_bare_newline and piece.count(b"\n") != context.count(b"\r\n"):
            host = s.hostname
            self._data_problem = (Reply(521, "5.2", f"{host} Error: bare <LF> received"), "bare LF")
        if self._data_problem is not None:
            return
        self._data_size += len(piece)
        if s.message_size_limit and self._data_size > s.message_size_limit:
            self._data_problem = (_TOO_BIG, "message too big")
            return
        self._events.append(MessageData(piece))

    def _chunk_done(self) -> None:
        if self._data_problem is not None:
            reply, reason = self._data_problem
            self._abort(reason)
            self._reply(reply)
        elif self._chunk_last:
            self._end_of_data()
        else:
            self.state = State.BDAT
            self._reply(Reply(250, "0.0", f"Ok: {self._chunk_size} octets"))

    def _skip_chunk(self) -> bool:
        """Drop the octets of a refused BDAT (bounded memory: nothing kept)."""
        buf = self._in
        if not buf:
            return self._lost_connection()
        n = min(len(buf), self._skip_left)
        del buf[:n]
        self._skip_left -= n
        return True


_DSN_PARAMS = frozenset({"RET", "ENVID", "NOTIFY", "ORCPT"})


def _is_base64(text: str) -> bool:
    """A SASL response line: base64 (RFC 4648 4), possibly empty."""
    try:
        base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        return False
    return True


def _expect_code(reply: Reply, positive_classes: tuple[int, ...], exact: int | None = None) -> None:
    """Refuse a positive reply that does not fit the command (a 354 to MAIL)."""
    if reply.code >= 400:
        return
    if reply.code // 100 not in positive_classes or (exact is not None and reply.code != exact):
        raise ValueError(f"reply {reply.code} does not fit this command")


def _check_body(value: str | None) -> Reply | None:
    # RFC 6152 2; BINARYMIME needs CHUNKING (RFC 3030 3), not offered.
    if value is None or value.upper() not in ("7BIT", "8BITMIME"):
        return _param_error("Error: BODY must be 7BIT or 8BITMIME")
    return None


def _check_flag(value: str | None) -> Reply | None:
    return None if value is None else _param_error("Error: SMTPUTF8 takes no value")


def _check_ret(value: str | None) -> Reply | None:
    if value is None or value.upper() not in ("FULL", "HDRS"):
        return _param_error("Bad RET parameter syntax")  # RFC 3461 4.3
    return None


def _check_envid(value: str | None) -> Reply | None:
    # RFC 3461 4.4: xtext, at most 100 characters.
    if value is None or len(value) > 100 or not _XTEXT_RE.match(value):
        return _param_error("Bad ENVID parameter syntax")
    return None


def _check_auth_param(value: str | None) -> Reply | None:
    # RFC 4954 5: AUTH=<> or AUTH=xtext-encoded mailbox.
    if value is None or (value != "<>" and not _XTEXT_RE.match(value)):
        return _param_error("Bad AUTH parameter syntax")
    return None


def _check_notify(value: str | None) -> Reply | None:
    # RFC 3461 4.1: NEVER alone, or a list of SUCCESS, FAILURE, DELAY.
    items = value.upper().split(",") if value else []
    ok = items == ["NEVER"] or (
        bool(items)
        and len(set(items)) == len(items)
        and set(items) <= {"SUCCESS", "FAILURE", "DELAY"}
    )
    return None if ok else _param_error("Bad NOTIFY parameter syntax")


def _check_orcpt(value: str | None) -> Reply | None:
    # RFC 3461 4.2: addr-type ";" xtext, at most 500 characters.
    if value is None or len(value) > 500 or not _ORCPT_RE.match(value):
        return _param_error("Bad ORCPT parameter syntax")
    return None


# -- the state table as documentation ----------------------------------------------


def render_state_table() -> str:
    """docs/smtp-states.md, drawn from :data:`TRANSITIONS`."""
    out = [
        "# SMTP server states",
        "",
        "Generated by `python -m mta.smtp.server --doc` from `TRANSITIONS` in",
        "`mta/smtp/server.py`; do not edit by hand.",
        "",
        "A cell is either `→ state` (the command is handled; the state it leads to",
        "after a positive answer, `·` when unchanged) or the reply that refuses it.",
        "`idle`: `ready` after an accepted HELO/EHLO/LHLO, else `greeted`.",
        "`(aborts)`: an open transaction ends first (`TransactionAborted`), whatever the answer.",
        "`(HELO)`: refused with `503 5.5.1 Error: send HELO/EHLO first` until HELO/EHLO",
        "when `smtpd_helo_required = yes` (in LMTP always, with `send LHLO first`).",
        "A negative answer to a decision leaves the state as it was. LHLO is the",
        "greeting in LMTP; HELO/EHLO there (and LHLO in SMTP) get `500 5.5.2`.",
        "",
        "## States",
        "",
    ]
    for state in State:
        note = _NOT_READ.get(state)
        out.append(f"- `{state.value}`" + (f": {note}" if note else ""))
    out += ["", "## Commands by state", ""]
    shown = [s for s in State if TRANSITIONS[s]]
    out.append("| command | " + " | ".join(f"`{s.value}`" for s in shown) + " |")
    out.append("|---" * (len(shown) + 1) + "|")
    for verb in VERBS:
        cells = [_cell(TRANSITIONS[s][verb]) for s in shown]
        out.append(f"| {verb} | " + " | ".join(cells) + " |")
    out += [
        "",
        "## Also",
        "",
        "- A negative reply (4xx/5xx) counts towards `smtpd_hard_error_limit`; at the",
        "  limit the session sends `421 4.7.0 <host> Error: too many errors` and closes.",
        "- 421 and 521 replies close the session.",
        "- End of input and closing also abort an open transaction.",
        "- After the end of data (`<CRLF>.<CRLF>` or BDAT LAST) the state is `idle`;",
        "  a message over",
        "  `message_size_limit` gets `552 5.3.4`, a bare LF (with",
        "  `smtpd_forbid_bare_newline`) gets `521 5.5.2` and closes.",
        "- STARTTLS is handled when offered (`smtpd_tls_security_level` may or",
        "  encrypt), else `502 5.5.1`; with encrypt, MAIL, RCPT, DATA, BDAT, VRFY, EXPN",
        "  and AUTH get `530 5.7.0 Must issue a STARTTLS command first` until TLS.",
        "- AUTH is handled when `smtpd_sasl_auth_enable` and the backend has",
        "  mechanisms (else `503 5.5.1`), only under TLS with `smtpd_tls_auth_only`",
        "  (else `504 5.5.4`); `smtpd_sasl_auth_failure_limit` 535s end in a 421.",
        "- BDAT: the announced octets are always read; those of a refused BDAT are",
        "  dropped. A chunk that is not LAST gets `250 2.0.0 Ok: N octets`; a message",
        "  over `message_size_limit` gets `552 5.3.4` before its octets are read.",
        "  Without CHUNKING (`smtpd_discard_ehlo_keywords`) BDAT gets `502 5.5.1`.",
        "",
    ]
    return "\n".join(out)


def _cell(rule: Rule) -> str:
    if isinstance(rule, Refuse):
        return f"`{rule.reply.one_line()}`"
    if rule.to is not None:
        target = f"→ {rule.to.value}"
    else:
        target = "→ idle" if rule.aborts else "·"
    return target + (" (aborts)" if rule.aborts else "") + (" (HELO)" if rule.needs_helo else "")


def main(argv: Sequence[str]) -> int:
    if list(argv) != ["--doc"]:
        print("usage: python -m mta.smtp.server --doc", file=sys.stderr)
        return 2
    sys.stdout.buffer.write(render_state_table().encode("utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
