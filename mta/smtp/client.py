"""SMTP/LMTP client session: a sans-I/O state machine, used by delivery.

Inputs: bytes from the server (:meth:`ClientSession.receive_data`, ``b""``
for end of file) and the driver's commands (:meth:`start_transaction`,
:meth:`send_data`, :meth:`end_data`, :meth:`quit`).  Outputs: bytes to write
(:meth:`data_to_send`) and events (:meth:`next_event`).  No sockets, no
reactor, no clock: timeouts belong to the driver, which can ask
:attr:`stage` what it is waiting for (the phrases are Postfix's, for logs
such as "conversation with X timed out while sending RCPT TO").

Flow: the greeting, then EHLO (RFC 5321 4.1.1.1; HELO when EHLO draws a
5xx; LHLO and no fallback for LMTP, RFC 2033 4.1), then :class:`Ready`.
Each transaction is MAIL, RCPT..., DATA; with PIPELINING (RFC 2920) they
go out in one write, otherwise one at a time.  The same code does both: a
command goes out at once when pipelining allows it, else it is held until
the replies before it are in (:meth:`_issue`).

Body: after :class:`DataAccepted` the driver passes the *raw* message in
chunks to :meth:`send_data`; the session owns a :class:`DotStuffer`, so the
framing (dot-stuffing, CRLF, the final ".") can't be got wrong by a driver.
When the server offers CHUNKING (RFC 3030) and the session may use it, the
body goes out as BDAT chunks instead of DATA (no dot-stuffing, no 354):
each chunk is one ``BDAT n``, the end ``BDAT 0 LAST``.

Between transactions the driver may ask for STARTTLS (RFC 3207:
:meth:`starttls`, then :class:`TLSReady` — start TLS on the transport and
call :meth:`tls_started`, which sends EHLO again and forgets what the
plaintext EHLO said — or :class:`TLSRefused`) and for AUTH (RFC 4954:
:meth:`authenticate` with PLAIN or LOGIN; :class:`Authenticated` or
:class:`AuthFailed`).  Credentials never reach the transcript.

Results: one final :class:`Reply` per recipient, in the order given, in
:class:`MessageDone` or :class:`TransactionFailed`.  After either, the
session can run another transaction (several messages per connection).

Replies are parsed with bounded memory: a line over 4096 octets or a
reply over 100 lines is a :class:`ProtocolError`, as is anything that is
not ``ddd[ -]text``.
"""

from __future__ import annotations

import base64
import enum
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from mta.reply import Reply
from mta.smtp.dataenc import DotStuffer, LineEndings

MAX_LINE = 4096  # octets in one reply line, without CRLF (RFC 5321 4.5.3.1.5 says 512)
MAX_REPLY_LINES = 100  # lines in one multi-line reply (EHLO lists are ~20)
MAX_TRANSCRIPT = 200  # lines of protocol log kept for diagnostics

_REPLY_LINE = re.compile(rb"^([2-5][0-9][0-9])(?:([ -])(.*))?$", re.DOTALL)


class Stage(enum.Enum):
    """What the session waits for; values are Postfix's log phrases."""

    GREETING = "receiving the initial server greeting"
    EHLO = "performing the EHLO handshake"
    HELO = "performing the HELO handshake"
    LHLO = "performing the LHLO handshake"
    MAIL = "sending MAIL FROM"
    RCPT = "sending RCPT TO"
    DATA = "sending DATA command"
    BODY = "sending message body"
    BDAT = "sending message body"  # an intermediate BDAT chunk (RFC 3030)
    DOT = "sending end of data -- message may be sent more than once"
    STARTTLS = "sending STARTTLS"
    AUTH = "performing the AUTH handshake"
    RSET = "sending RSET"
    QUIT = "sending QUIT"
    IDLE = "idle"
    CLOSED = "closed"


# Commands after which RFC 2920 3.1 lets no other command follow before the
# reply is in (they end a pipelined group); the greeting is not a command
# but nothing may be sent before it either (RFC 5321 3.1).
_GROUP_END = frozenset(
    {
        Stage.GREETING,
        Stage.EHLO,
        Stage.HELO,
        Stage.LHLO,
        Stage.DATA,
        Stage.QUIT,
        Stage.STARTTLS,  # RFC 3207 4: nothing may follow before the handshake
        Stage.AUTH,
    }
)

# The service extension that must be offered before an ESMTP parameter may
# be sent; a keyword not listed needs an extension of its own name.
_PARAM_EXTENSION = {
    "RET": "DSN",  # RFC 3461
    "ENVID": "DSN",
    "NOTIFY": "DSN",
    "ORCPT": "DSN",
    "HOLDFOR": "FUTURERELEASE",  # RFC 4865
    "HOLDUNTIL": "FUTURERELEASE",
    "BY": "DELIVERBY",  # RFC 2852
}
# Parameters the session computes itself from the Transaction.
_MANAGED_PARAMS = frozenset({"SIZE", "BODY", "SMTPUTF8"})


@dataclass(frozen=True)
class Transaction:
    """One message to send: the envelope as the next hop should see it.

    ``mail_params`` and ``rcpt_params`` (one dict per recipient) hold ESMTP
    parameters as ``{"KEYWORD": "value" or None}``; a parameter goes out only
    when the server offers its extension.  SIZE, BODY and SMTPUTF8 come from
    ``size``, ``needs_8bit`` and ``needs_smtputf8`` instead."""

    sender: str
    recipients: list[str]
    mail_params: dict[str, str | None] = field(default_factory=dict)
    rcpt_params: list[dict[str, str | None]] = field(default_factory=list)
    size: int | None = None
    needs_8bit: bool = False
    needs_smtputf8: bool = False
    # An address verification probe (Postfix verify(8)): MAIL and RCPT only,
    # then RSET; no DATA, no message.  MessageDone carries the RCPT replies.
    probe: bool = False


# -- events ------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    """The handshake is done; ``extensions`` maps EHLO keywords (upper case)
    to their parameters ("" when none); empty after a HELO fallback."""

    extensions: Mapping[str, str]


@dataclass(frozen=True)
class GreetingRejected:
    """The server refused the session: a non-2xx greeting or a refused
    EHLO/HELO/LHLO.  Only :meth:`ClientSession.quit` is allowed now."""

    reply: Reply
    stage: Stage


@dataclass(frozen=True)
class RecipientReply:
    """The RCPT reply for ``recipients[index]``."""

    index: int
    reply: Reply


@dataclass(frozen=True)
class TransactionFailed:
    """The message was not sent: ``reply`` is the one that ended the
    transaction (to ``stage``), ``replies`` the final reply per recipient: its
    own negative RCPT reply when it had one, else ``reply``."""

    reply: Reply
    replies: list[Reply]
    stage: Stage
    local: bool = False  # refused by the session itself, before sending (SIZE, SMTPUTF8)


@dataclass(frozen=True)
class DataAccepted:
    """354: stream the message with send_data() and end_data()."""


@dataclass(frozen=True)
class MessageDone:
    """The end of data was answered: one final reply per recipient (its RCPT
    reply if that was negative; for LMTP each accepted recipient's own reply
    after the dot, RFC 2033 4.2)."""

    replies: list[Reply]


@dataclass(frozen=True)
class TLSReady:
    """220 to STARTTLS: start TLS on the transport, then call
    :meth:`ClientSession.tls_started`."""


@dataclass(frozen=True)
class TLSRefused:
    """STARTTLS was refused; the session is still usable in plaintext."""

    reply: Reply


@dataclass(frozen=True)
class Authenticated:
    """235: the server accepted the credentials."""

    reply: Reply


@dataclass(frozen=True)
class AuthFailed:
    """The server refused the AUTH exchange; the session is still usable."""

    reply: Reply


@dataclass(frozen=True)
class Closed:
    """The session is over: QUIT was answered, or the server closed."""


@dataclass(frozen=True)
class ProtocolError:
    """The server sent something that is not a valid reply; the session is
    dead and the driver should drop the connection.  ``stage`` is what the
    session was waiting for then."""

    reason: str
    stage: Stage = Stage.IDLE


Event = (
    Ready
    | TLSReady
    | TLSRefused
    | Authenticated
    | AuthFailed
    | GreetingRejected
    | RecipientReply
    | TransactionFailed
    | DataAccepted
    | MessageDone
    | Closed
    | ProtocolError
)


class _Conn(enum.Enum):
    """Connection state, apart from the transaction state."""

    HANDSHAKE = enum.auto()  # greeting and EHLO/HELO/LHLO
    READY = enum.auto()  # may start a transaction
    TLS = enum.auto()  # STARTTLS or AUTH under way (or TLS being negotiated)
    TRANSACTION = enum.auto()  # MAIL..DATA, body, end of data
    REJECTED = enum.auto()  # the server refused us: only QUIT is allowed
    ABORTED = enum.auto()  # the server answered mid-body: not even QUIT makes sense
    QUITTING = enum.auto()
    CLOSED = enum.auto()
    ERROR = enum.auto()


class _ReplyReader:
    """Reassembles replies from bytes, bounded in memory."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._scanned = 0  # octets of _buf known to hold no LF
        self._lines: list[tuple[int, str]] = []

    def feed(self, data: bytes) -> list[Reply]:
        """Parse what is complete; raises ValueError on a malformed or
        oversized reply."""
        self._buf += data
        replies: list[Reply] = []
        start = 0
        while (end := self._buf.find(b"\n", max(start, self._scanned))) >= 0:
            line = bytes(self._buf[start:end])
            start = end + 1
            self._scanned = 0
            reply = self._line(line[:-1] if line.endswith(b"\r") else line)
            if reply is not None:
                replies.append(reply)
        del self._buf[:start]
        self._scanned = len(self._buf)
        if len(self._buf) > MAX_LINE + 1:  # +1: a CR waiting for its LF
            raise ValueError(f"reply line longer than {MAX_LINE} octets")
        return replies

    @property
    def pending(self) -> bool:
        """Whether bytes of an unfinished reply are buffered."""
        return bool(self._buf) or bool(self._lines)

    def _line(self, line: bytes) -> Reply | None:
        if len(line) > MAX_LINE:
            raise ValueError(f"reply line longer than {MAX_LINE} octets")
        m = _REPLY_LINE.match(line)
        if m is None:
            raise ValueError(f"malformed reply line: {line[:80]!r}")
        code = int(m.group(1))
        if self._lines and self._lines[0][0] != code:
            raise ValueError(f"reply code changed within a reply: {line[:80]!r}")
        text = (m.group(3) or b"").decode("utf-8", "surrogateescape")
        self._lines.append((code, text))
        if len(self._lines) > MAX_REPLY_LINES:
            raise ValueError(f"reply longer than {MAX_REPLY_LINES} lines")
        if m.group(2) == b"-":
            return None
        lines, self._lines = self._lines, []
        return _make_reply(code, [t for _, t in lines])


def _make_reply(code: int, texts: list[str]) -> Reply:
    """Build one Reply; the enhanced status (RFC 2034: repeated on every
    line) is taken from the first line and stripped from the others."""
    first = Reply.parse_text(code, texts[0])
    if not first.detail:
        return Reply(code, "", "\n".join(texts))
    prefix = first.status + " "
    rest = [t[len(prefix) :] if t.startswith(prefix) else t for t in texts[1:]]
    return Reply(code, first.detail, "\n".join([first.text, *rest]))


@dataclass
class _Tx:
    """Transaction state: what was asked and what came back."""

    tx: Transaction
    rcpt_replies: list[Reply | None]
    rcpt_seen: int = 0
    accepted: list[int] = field(default_factory=list)
    failure: tuple[Reply, Stage] | None = None  # the reply that ended it, and to what
    in_body: bool = False
    dot_replies: list[Reply] = field(default_factory=list)
    bdat: bool = False  # the body goes out as BDAT chunks (RFC 3030)


class ClientSession:
    """Client side of one SMTP or LMTP connection (see the module doc).

    ``helo_name`` is sent in EHLO/HELO/LHLO; ``peer`` only names the server
    in texts the session makes up itself (SIZE and SMTPUTF8 refusals)."""

    def __init__(
        self, helo_name: str, *, lmtp: bool = False, peer: str = "", chunking: bool = True
    ) -> None:
        _check_line_safe(helo_name, "helo name")
        self.helo_name = helo_name
        self.lmtp = lmtp
        self.peer = peer
        self.chunking = chunking  # use BDAT when the server offers CHUNKING
        self.extensions: dict[str, str] = {}
        self.tls = False  # TLS is on (after tls_started())
        self._auth_steps: deque[bytes] = deque()  # LOGIN answers still to give
        self._conn = _Conn.HANDSHAKE
        self._reader = _ReplyReader()
        self._events: deque[Event] = deque()
        self._out = bytearray()
        # Replies still due, oldest first, named by what they answer.
        self._expect: deque[Stage] = deque([Stage.GREETING])
        # Commands not sent yet because pipelining doesn't allow it now.
        self._held: deque[tuple[Stage, bytes]] = deque()
        self._tx: _Tx | None = None
        self._stuffer: DotStuffer | None = None
        self._chunker: LineEndings | None = None
        self._transcript: deque[str] = deque(maxlen=MAX_TRANSCRIPT)

    # -- I/O ---------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Bytes from the server; ``b""`` means it closed the connection."""
        if self._conn in (_Conn.CLOSED, _Conn.ERROR):
            return
        if not data:
            self._close()
            return
        try:
            replies = self._reader.feed(data)
        except ValueError as e:
            self._protocol_error(str(e))
            return
        for n, reply in enumerate(replies):
            if self._conn in (_Conn.CLOSED, _Conn.ERROR):
                break
            self._transcript.append(f"S: {reply.one_line()}")
            self._on_reply(reply)
            if self._events and isinstance(self._events[-1], TLSReady) and n + 1 < len(replies):
                # Plaintext after the 220 to STARTTLS would be read as if it
                # came over TLS: a command injection (CVE-2011-0411 class).
                self._events.pop()
                self._protocol_error("data after the STARTTLS reply", Stage.STARTTLS)
                break

    def data_to_send(self) -> bytes:
        """Bytes to write to the server (and forget)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    @property
    def stage(self) -> Stage:
        """What the session waits for now (for the driver's timeouts)."""
        if self._conn in (_Conn.CLOSED, _Conn.ERROR):
            return Stage.CLOSED
        if self._expect:
            return self._expect[0]
        if self._tx is not None and self._tx.in_body:
            return Stage.BODY
        return Stage.IDLE

    @property
    def sending_body(self) -> bool:
        """True while the driver should pass message chunks to send_data()."""
        return self._tx is not None and self._tx.in_body

    @property
    def reusable(self) -> bool:
        """True when another transaction may start on this connection."""
        return self._conn is _Conn.READY

    @property
    def transcript(self) -> list[str]:
        """The last commands and replies ("C: ..."/"S: ..."), never the body."""
        return list(self._transcript)

    # -- driver commands -----------------------------------------------------
    def start_transaction(self, tx: Transaction) -> None:
        """Send MAIL, RCPT... and DATA for ``tx``.  Allowed after Ready and
        after the previous transaction's MessageDone/TransactionFailed."""
        if self._conn is not _Conn.READY:
            raise RuntimeError(f"start_transaction() in state {self._conn.name}")
        if not tx.recipients:
            raise ValueError("a transaction needs at least one recipient")
        if tx.rcpt_params and len(tx.rcpt_params) != len(tx.recipients):
            raise ValueError("rcpt_params must have one entry per recipient")
        mail = self._mail_command(tx)
        rcpts = [self._rcpt_command(tx, i) for i in range(len(tx.recipients))]
        self._tx = _Tx(
            tx,
            rcpt_replies=[None] * len(tx.recipients),
            bdat=self.chunking and "CHUNKING" in self.extensions and not tx.probe,
        )
        self._conn = _Conn.TRANSACTION
        refusal = self._refusal(tx)
        if refusal is not None:
            replies = [refusal] * len(tx.recipients)
            self._end_transaction(TransactionFailed(refusal, replies, Stage.MAIL, local=True))
            return
        self._issue(Stage.MAIL, mail)
        for line in rcpts:
            self._issue(Stage.RCPT, line)
        if not self._tx.bdat and not tx.probe:
            self._issue(Stage.DATA, b"DATA")

    def send_data(self, chunk: bytes) -> None:
        """A chunk of the raw message (CRLF lines, not dot-stuffed).  Ignored
        when the server already gave up on the message (see MessageDone)."""
        tx = self._body_tx("send_data")
        if tx is None:
            return
        if tx.bdat and self._chunker is not None:
            data = self._chunker.feed(chunk)
            if data:
                self._send_chunk(data, last=False)
        elif self._stuffer is not None:
            self._out += self._stuffer.feed(chunk)

    def end_data(self) -> None:
        """The whole message was passed to send_data(): send the final dot
        (or the last BDAT chunk)."""
        tx = self._body_tx("end_data")
        if tx is None:
            return
        if tx.bdat and self._chunker is not None:
            self._send_chunk(self._chunker.finish(), last=True)
            self._chunker = None
        elif self._stuffer is not None:
            self._out += self._stuffer.finish()
            self._stuffer = None
            self._transcript.append("C: .")
        else:
            return
        tx.in_body = False
        # SMTP answers the dot once; LMTP once per accepted recipient.
        for _ in range(len(tx.accepted) if self.lmtp else 1):
            self._expect.append(Stage.DOT)

    def _send_chunk(self, data: bytes, *, last: bool) -> None:
        """One ``BDAT n [LAST]`` command and its data (RFC 3030 2)."""
        command = f"BDAT {len(data)}{' LAST' if last else ''}"
        self._transcript.append(f"C: {command}")
        self._out += command.encode() + b"\r\n" + data
        if not last:
            self._expect.append(Stage.BDAT)

    def starttls(self) -> None:
        """Ask for TLS (RFC 3207); allowed when Ready and not yet in TLS."""
        if self._conn is not _Conn.READY or self.tls:
            raise RuntimeError(f"starttls() in state {self._conn.name}")
        self._conn = _Conn.TLS
        self._issue(Stage.STARTTLS, b"STARTTLS")

    def tls_started(self) -> None:
        """The driver has started TLS after TLSReady: say EHLO again and
        forget the plaintext EHLO's extensions (RFC 3207 4.2)."""
        if self._conn is not _Conn.TLS or self._expect:
            raise RuntimeError("tls_started() without TLSReady")
        self.tls = True
        self.extensions = {}
        self._conn = _Conn.HANDSHAKE
        verb = "LHLO" if self.lmtp else "EHLO"
        self._issue(Stage.LHLO if self.lmtp else Stage.EHLO, f"{verb} {self.helo_name}".encode())

    def authenticate(self, mechanism: str, username: str, password: str) -> None:
        """AUTH with PLAIN (RFC 4616, initial response) or LOGIN; allowed
        when Ready.  The result is Authenticated or AuthFailed."""
        if self._conn is not _Conn.READY:
            raise RuntimeError(f"authenticate() in state {self._conn.name}")
        mech = mechanism.upper()
        user, secret = username.encode("utf-8"), password.encode("utf-8")
        if mech == "PLAIN":
            initial = base64.b64encode(b"\0" + user + b"\0" + secret)
            line = b"AUTH PLAIN " + (initial or b"=")
            self._auth_steps = deque()
        elif mech == "LOGIN":
            line = b"AUTH LOGIN"
            self._auth_steps = deque([base64.b64encode(user), base64.b64encode(secret)])
        else:
            raise ValueError(f"unsupported SASL mechanism: {mechanism}")
        self._conn = _Conn.TLS
        self._issue(Stage.AUTH, line)

    def quit(self) -> None:
        """End the session politely (RFC 5321 4.1.1.10).  Allowed whenever no
        transaction is under way; after the server gave up mid-body nothing
        is sent and the session just ends (Closed)."""
        if self._conn in (_Conn.QUITTING, _Conn.CLOSED, _Conn.ERROR):
            return
        if self._conn is _Conn.ABORTED:
            self._close()
            return
        if self._conn in (_Conn.HANDSHAKE, _Conn.TRANSACTION):
            raise RuntimeError(f"quit() in state {self._conn.name}")
        self._conn = _Conn.QUITTING
        self._issue(Stage.QUIT, b"QUIT")

    # -- sending -------------------------------------------------------------
    def _issue(self, stage: Stage, line: bytes) -> None:
        """Send a command now if pipelining allows it, else hold it until
        the replies before it are in."""
        self._held.append((stage, line))
        self._flush_held()

    def _flush_held(self) -> None:
        pipelining = "PIPELINING" in self.extensions
        while self._held and (
            not self._expect or (pipelining and self._expect[-1] not in _GROUP_END)
        ):
            stage, line = self._held.popleft()
            shown = line.decode("utf-8", "surrogateescape")
            if stage is Stage.AUTH and shown.count(" ") > 1:
                shown = " ".join(shown.split(" ")[:2]) + " ********"  # never the secret
            self._transcript.append(f"C: {shown}")
            self._out += line + b"\r\n"
            self._expect.append(stage)

    def _drop_held(self, *stages: Stage) -> None:
        self._held = deque((s, line) for s, line in self._held if s not in stages)

    def _mail_command(self, tx: Transaction) -> bytes:
        ext = self.extensions
        params: dict[str, str | None] = {}
        if tx.size is not None and "SIZE" in ext:
            params["SIZE"] = str(tx.size)  # RFC 1870 6
        # With no 8BITMIME offered the message goes out as it is, as Postfix
        # does with disable_mime_output_conversion = yes (most servers take
        # it); the RFC 6152 downgrade to 7bit is not done here.
        if tx.needs_8bit and "8BITMIME" in ext:
            params["BODY"] = "8BITMIME"
        if tx.needs_smtputf8 and "SMTPUTF8" in ext:
            params["SMTPUTF8"] = None  # RFC 6531 3.4
        params.update(self._offered(tx.mail_params))
        return _command(f"MAIL FROM:<{tx.sender}>", params)

    def _rcpt_command(self, tx: Transaction, index: int) -> bytes:
        params = self._offered(tx.rcpt_params[index]) if tx.rcpt_params else {}
        return _command(f"RCPT TO:<{tx.recipients[index]}>", params)

    def _offered(self, params: Mapping[str, str | None]) -> dict[str, str | None]:
        """The parameters whose extension the server offers."""
        out: dict[str, str | None] = {}
        for key, value in params.items():
            _check_param(key, value)
            name = key.upper()
            if name in _MANAGED_PARAMS:
                continue
            if _PARAM_EXTENSION.get(name, name) in self.extensions:
                out[name] = value
        return out

    def _refusal(self, tx: Transaction) -> Reply | None:
        """A failure known before anything is sent."""
        server = f" {self.peer}" if self.peer else ""
        if tx.needs_smtputf8 and "SMTPUTF8" not in self.extensions:
            # RFC 6531 3.2: without SMTPUTF8 the message can't be relayed.
            return Reply(550, "6.7", f"SMTPUTF8 is required, but was not offered by host{server}")
        limit = _int_or_zero(self.extensions.get("SIZE", ""))
        if tx.size is not None and limit and tx.size > limit:
            # RFC 1870 6: don't send what the server said it won't take.
            return Reply(
                552, "3.4", f"message size {tx.size} exceeds size limit {limit} of server{server}"
            )
        return None

    # -- receiving -----------------------------------------------------------
    def _on_reply(self, reply: Reply) -> None:
        if not self._expect:
            self._unsolicited(reply)
            return
        stage = self._expect.popleft()
        if stage is Stage.GREETING:
            self._on_greeting(reply)
        elif stage in (Stage.EHLO, Stage.HELO, Stage.LHLO):
            self._on_hello(stage, reply)
        elif stage is Stage.QUIT:
            self._close()
        elif stage is Stage.STARTTLS:
            self._on_starttls(reply)
        elif stage is Stage.AUTH:
            self._on_auth(reply)
        elif stage is Stage.RSET:
            if not reply.is_positive and self._conn is _Conn.READY:
                # The server won't forget the failed transaction: start no
                # other one on this connection.
                self._conn = _Conn.REJECTED
        else:
            self._on_transaction_reply(stage, reply)
        if self._conn not in (_Conn.CLOSED, _Conn.ERROR):
            self._flush_held()

    def _unsolicited(self, reply: Reply) -> None:
        tx = self._tx
        if tx is not None and tx.in_body and not reply.is_positive:
            # An answer before the dot: the server gave up on the message
            # (e.g. 552 while reading it).  It is the answer for the message,
            # but the connection's state is unknown: don't reuse it.
            self._end_transaction(MessageDone(self._final(tx, reply)))
            self._conn = _Conn.ABORTED
            if reply.code == 421:
                self._close()
        elif reply.code == 421:
            # RFC 5321 3.8: the server may shut down at any time with 421.
            self._close()
        else:
            self._protocol_error(f"unexpected reply: {reply.one_line()}")

    def _on_starttls(self, reply: Reply) -> None:
        if reply.code == 220:
            if self._reader.pending or self._expect:
                # Plaintext after the 220 would be read as if it came over
                # TLS: a command injection (CVE-2011-0411 class).
                self._protocol_error("data after the STARTTLS reply", Stage.STARTTLS)
                return
            self._events.append(TLSReady())
            return
        self._conn = _Conn.READY
        if reply.code == 421:
            self._events.append(TLSRefused(reply))
            self._close()
            return
        self._events.append(TLSRefused(reply))

    def _on_auth(self, reply: Reply) -> None:
        if reply.code == 334:
            if not self._auth_steps:
                # A challenge we have no answer for: cancel (RFC 4954 4).
                line = b"*"
            else:
                line = self._auth_steps.popleft()
            self._transcript.append("C: ********")
            self._out += line + b"\r\n"
            self._expect.append(Stage.AUTH)
            return
        self._auth_steps.clear()
        self._conn = _Conn.READY
        if reply.code == 235:
            self._events.append(Authenticated(reply))
        else:
            self._events.append(AuthFailed(reply))
            if reply.code == 421:
                self._close()

    def _on_greeting(self, reply: Reply) -> None:
        if reply.code // 100 != 2:
            # RFC 5321 3.1: 554 (or 421) instead of 220; only QUIT may follow.
            self._reject(reply, Stage.GREETING)
        elif self.lmtp:
            self._issue(Stage.LHLO, f"LHLO {self.helo_name}".encode())
        else:
            self._issue(Stage.EHLO, f"EHLO {self.helo_name}".encode())

    def _on_hello(self, stage: Stage, reply: Reply) -> None:
        if reply.code // 100 == 2:
            if stage is not Stage.HELO:
                self.extensions = _parse_extensions(reply.text)
            self._conn = _Conn.READY
            self._events.append(Ready(dict(self.extensions)))
        elif stage is Stage.EHLO and reply.is_permanent:
            # RFC 5321 4.1.4: a server that doesn't know EHLO answers 500 or
            # 502 (some say 550 or 554): fall back to HELO.
            self._issue(Stage.HELO, f"HELO {self.helo_name}".encode())
        else:
            self._reject(reply, stage)

    def _reject(self, reply: Reply, stage: Stage) -> None:
        self._events.append(GreetingRejected(reply, stage))
        self._conn = _Conn.REJECTED
        if reply.code == 421:
            self._close()

    def _on_transaction_reply(self, stage: Stage, reply: Reply) -> None:
        tx = self._tx
        if tx is None:
            self._protocol_error(f"reply without a transaction: {reply.one_line()}")
            return
        if not _plausible(stage, reply.code):
            self._protocol_error(f"unexpected reply to {stage.name}: {reply.one_line()}", stage)
            return
        if reply.code == 421:
            self._on_shutdown(tx, stage, reply)
            return
        if stage is Stage.MAIL:
            if not reply.is_positive:
                tx.failure = (reply, Stage.MAIL)
                self._drop_held(Stage.RCPT, Stage.DATA)
        elif stage is Stage.RCPT:
            index = tx.rcpt_seen
            tx.rcpt_seen += 1
            if tx.failure is None:  # after a failed MAIL they mean nothing
                tx.rcpt_replies[index] = reply
                self._events.append(RecipientReply(index, reply))
                if reply.is_positive:
                    tx.accepted.append(index)
                elif tx.rcpt_seen == len(tx.tx.recipients) and not tx.accepted:
                    tx.failure = (reply, Stage.RCPT)
                    self._drop_held(Stage.DATA)
                if tx.bdat and tx.failure is None and tx.rcpt_seen == len(tx.tx.recipients):
                    # Every RCPT is answered and one was accepted: the
                    # body may go (RFC 3030 has no 354).
                    tx.in_body = True
                    self._chunker = LineEndings()
                    self._events.append(DataAccepted())
                    return
                if tx.tx.probe and tx.failure is None and tx.rcpt_seen == len(tx.tx.recipients):
                    # A probe ends with the RCPT replies; RSET forgets it.
                    self._end_transaction(MessageDone([r for r in tx.rcpt_replies if r]))
                    self._issue(Stage.RSET, b"RSET")
                    return
        elif stage is Stage.BDAT:
            if not reply.is_positive and tx.failure is None:
                # RFC 3030 2: the server discards the message; stop sending.
                tx.failure = (reply, Stage.BDAT)
                tx.in_body = False
                self._chunker = None
        elif stage is Stage.DATA:
            if reply.code == 354:
                if tx.failure is None:
                    tx.in_body = True
                    self._stuffer = DotStuffer()
                    self._events.append(DataAccepted())
                    return
                # 354 with no valid recipient (RFC 2920 3.1 says the server
                # must not): an empty message gets us out of DATA.
                self._out += b".\r\n"
                self._transcript.append("C: .")
                self._expect.append(Stage.DOT)
            elif tx.failure is None:
                tx.failure = (reply, Stage.DATA)
        elif stage is Stage.DOT and tx.failure is None:
            if not self.lmtp:
                self._end_transaction(MessageDone(self._final(tx, reply)))
            else:
                tx.dot_replies.append(reply)
                if len(tx.dot_replies) == len(tx.accepted):
                    self._end_transaction(MessageDone(self._lmtp_final(tx, None)))
            return
        # A failed transaction ends when every command sent for it has been
        # answered; then RSET makes the connection fit for the next one.
        if tx.failure is not None and not self._expect:
            failed, failed_stage = tx.failure
            self._end_transaction(TransactionFailed(failed, self._final(tx, failed), failed_stage))
            self._issue(Stage.RSET, b"RSET")  # RFC 5321 4.1.1.5

    def _on_shutdown(self, tx: _Tx, stage: Stage, reply: Reply) -> None:
        """421 (RFC 5321 3.8): the server is closing; what it has not
        answered yet it never will."""
        if tx.failure is not None:
            failed, failed_stage = tx.failure
            self._end_transaction(TransactionFailed(failed, self._final(tx, failed), failed_stage))
        elif stage is Stage.DOT:
            replies = self._lmtp_final(tx, reply) if self.lmtp else self._final(tx, reply)
            self._end_transaction(MessageDone(replies))
        else:
            self._end_transaction(TransactionFailed(reply, self._final(tx, reply), stage))
        self._close()

    def _end_transaction(self, event: Event) -> None:
        self._tx = None
        self._stuffer = None
        self._chunker = None
        self._conn = _Conn.READY
        self._events.append(event)

    @staticmethod
    def _final(tx: _Tx, reply: Reply) -> list[Reply]:
        """Each recipient's negative RCPT reply, else ``reply``."""
        return [r if (r is not None and not r.is_positive) else reply for r in tx.rcpt_replies]

    @staticmethod
    def _lmtp_final(tx: _Tx, missing: Reply | None) -> list[Reply]:
        """RFC 2033 4.2: the replies after the dot belong to the accepted
        recipients in RCPT order; ``missing`` stands in for those not given."""
        final = list(tx.rcpt_replies)
        for n, index in enumerate(tx.accepted):
            final[index] = tx.dot_replies[n] if n < len(tx.dot_replies) else missing
        out = [r for r in final if r is not None]
        if len(out) != len(final):
            raise AssertionError("an LMTP recipient has no final reply")
        return out

    def _body_tx(self, name: str) -> _Tx | None:
        tx = self._tx
        if tx is not None and tx.in_body:
            return tx
        if tx is not None and tx.failure is not None:
            return None  # the server refused a BDAT chunk: the rest is moot
        if self._conn in (_Conn.ABORTED, _Conn.CLOSED, _Conn.ERROR):
            return None  # the server already answered, or went away
        raise RuntimeError(f"{name}() outside the message body")

    def _close(self) -> None:
        if self._conn is _Conn.CLOSED:
            return
        self._conn = _Conn.CLOSED
        self._expect.clear()
        self._held.clear()
        self._events.append(Closed())

    def _protocol_error(self, reason: str, stage: Stage | None = None) -> None:
        event = ProtocolError(reason, stage or self.stage)
        self._conn = _Conn.ERROR
        self._expect.clear()
        self._held.clear()
        self._events.append(event)


def _plausible(stage: Stage, code: int) -> bool:
    """A reply class the command can get: 3xx only to DATA, and DATA never
    gets 2xx (RFC 5321 4.3.2).  Anything else would be misread (a 250 to
    DATA taken as delivery), so it is a protocol error."""
    kind = code // 100
    if stage is Stage.DATA:
        return kind != 2
    return kind != 3


def _parse_extensions(text: str) -> dict[str, str]:
    """EHLO reply lines after the first, ``KEYWORD [params]`` (RFC 5321
    4.1.1.1); keywords are case-insensitive, stored in upper case."""
    ext: dict[str, str] = {}
    for line in text.split("\n")[1:]:
        keyword, _, params = line.strip().partition(" ")
        if not keyword:
            continue
        if keyword.upper().startswith("AUTH="):
            # Pre-RFC 4954 servers announce "AUTH=LOGIN PLAIN".
            ext.setdefault("AUTH", f"{keyword[5:]} {params}".strip())
            continue
        ext[keyword.upper()] = params.strip()
    return ext


_PARAM_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")


def _check_param(key: str, value: str | None) -> None:
    """RFC 5321 4.1.2 esmtp-keyword and esmtp-value: no space, "=" or control
    character, so a parameter can't break the command apart."""
    if not _PARAM_KEY.match(key):
        raise ValueError(f"bad ESMTP parameter keyword: {key!r}")
    if value is not None and (not value or not value.isprintable() or " " in value or "=" in value):
        raise ValueError(f"bad ESMTP parameter value: {key}={value!r}")


def _command(base: str, params: Mapping[str, str | None]) -> bytes:
    parts = [base, *(key if value is None else f"{key}={value}" for key, value in params.items())]
    line = " ".join(parts)
    _check_line_safe(line, "command")
    # Non-ASCII only reaches here for SMTPUTF8 mail (RFC 6531 3.3); other
    # bytes go back out as they were stored (surrogateescape).
    return line.encode("utf-8", "surrogateescape")


def _check_line_safe(text: str, what: str) -> None:
    # A CR or LF would end the command early and smuggle in another one.
    if any(c in text for c in "\r\n\0"):
        raise ValueError(f"{what} contains a line break or NUL: {text!r}")


def _int_or_zero(text: str) -> int:
    return int(text) if text.isdigit() else 0
