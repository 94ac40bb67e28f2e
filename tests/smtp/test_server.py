"""Tests for mta.smtp.server: the sans-I/O SMTP server session."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mta.reply import Reply
from mta.smtp.server import (
    TRANSITIONS,
    VERBS,
    Auth,
    AuthResponse,
    ConnectionLost,
    DataStart,
    Event,
    Helo,
    MailFrom,
    MessageData,
    MessageEnd,
    Quit,
    RcptTo,
    ServerSession,
    ServerSettings,
    StartTls,
    State,
    TransactionAborted,
    main,
    render_state_table,
)

HOST = "mx.example"
QUEUED = Reply(250, "0.0", "Ok: queued as ABC123")


def make(**overrides: object) -> ServerSession:
    """A started session with test settings."""
    base = ServerSettings(hostname=HOST, banner=f"{HOST} ESMTP mta")
    session = ServerSession(dataclasses.replace(base, **overrides))
    session.start()
    session.data_to_send()
    return session


Decider = Callable[[Event], Reply | None]


def accept_all(event: Event) -> Reply | None:
    """Default answers; end of data is queued."""
    if isinstance(event, MessageEnd):
        return QUEUED
    return None


def run(session: ServerSession, data: bytes = b"", decide: Decider = accept_all) -> list[Event]:
    """Feed ``data`` and drain events, answering decisions with ``decide``."""
    if data:
        session.receive_data(data)
    events: list[Event] = []
    while True:
        event = session.next_event()
        if event is None:
            if session.pending is None:
                return events
            continue
        events.append(event)
        if session.pending is event:
            session.respond(decide(event))


def codes(output: bytes) -> list[int]:
    """The reply codes of the final lines of replies in ``output``."""
    return [int(line[:3]) for line in output.split(b"\r\n") if line[3:4] == b" "]


def dialog(session: ServerSession, line: bytes, decide: Decider = accept_all) -> list[int]:
    """Send one line, return the reply codes it produced."""
    run(session, line + b"\r\n", decide)
    return codes(session.data_to_send())


def to_state(state: State, **overrides: object) -> ServerSession:
    """A session brought into ``state`` by an ordinary dialog."""
    if state is State.REJECTED:
        session = ServerSession(ServerSettings(hostname=HOST, banner="x"))
        session.reject_connection(Reply(554, "7.1", "go away"))
        session.data_to_send()
        return session
    session = make(**overrides)
    steps = {
        State.GREETED: [],
        State.READY: [b"EHLO client.example"],
        State.MAIL: [b"EHLO client.example", b"MAIL FROM:<a@example.org>"],
        State.RCPT: [b"EHLO c", b"MAIL FROM:<a@example.org>", b"RCPT TO:<b@example.net>"],
        State.BDAT: [b"EHLO c", b"MAIL FROM:<a@example.org>", b"RCPT TO:<b@example.net>"],
    }[state]
    for line in steps:
        dialog(session, line)
    if state is State.BDAT:
        run(session, b"BDAT 3\r\nabc")
        assert session.data_to_send() == b"250 2.0.0 Ok: 3 octets\r\n"
    assert session.state is state
    return session


# -- the state machine, table-driven -------------------------------------------

LINES = {
    "HELO": b"HELO client.example",
    "EHLO": b"EHLO client.example",
    "LHLO": b"LHLO client.example",
    "MAIL": b"MAIL FROM:<x@example.org>",
    "RCPT": b"RCPT TO:<y@example.net>",
    "DATA": b"DATA",
    "BDAT": b"BDAT 0 LAST",
    "RSET": b"RSET",
    "NOOP": b"NOOP",
    "QUIT": b"QUIT",
    "VRFY": b"VRFY someone",
    "EXPN": b"EXPN list",
    "HELP": b"HELP",
    "STARTTLS": b"STARTTLS",
    "AUTH": b"AUTH PLAIN dGVzdA==",
}

# Expected (reply code, state after) for each command in each command state,
# with default answers, no STARTTLS/AUTH offered.
EXPECTED: dict[State, dict[str, tuple[int, State]]] = {
    State.GREETED: {
        "HELO": (250, State.READY),
        "EHLO": (250, State.READY),
        "LHLO": (500, State.GREETED),
        "MAIL": (250, State.MAIL),
        "RCPT": (503, State.GREETED),
        "DATA": (503, State.GREETED),
        "BDAT": (503, State.GREETED),
        "RSET": (250, State.GREETED),
        "NOOP": (250, State.GREETED),
        "QUIT": (221, State.CLOSED),
        "VRFY": (252, State.GREETED),
        "EXPN": (502, State.GREETED),
        "HELP": (214, State.GREETED),
        "STARTTLS": (502, State.GREETED),
        "AUTH": (503, State.GREETED),
    },
    State.READY: {
        "HELO": (250, State.READY),
        "EHLO": (250, State.READY),
        "LHLO": (500, State.READY),
        "MAIL": (250, State.MAIL),
        "RCPT": (503, State.READY),
        "DATA": (503, State.READY),
        "BDAT": (503, State.READY),
        "RSET": (250, State.READY),
        "NOOP": (250, State.READY),
        "QUIT": (221, State.CLOSED),
        "VRFY": (252, State.READY),
        "EXPN": (502, State.READY),
        "HELP": (214, State.READY),
        "STARTTLS": (502, State.READY),
        "AUTH": (503, State.READY),
    },
    State.MAIL: {
        "HELO": (250, State.READY),
        "EHLO": (250, State.READY),
        "LHLO": (500, State.MAIL),
        "MAIL": (503, State.MAIL),
        "RCPT": (250, State.RCPT),
        "DATA": (554, State.MAIL),
        "BDAT": (554, State.MAIL),
        "RSET": (250, State.READY),
        "NOOP": (250, State.MAIL),
        "QUIT": (221, State.CLOSED),
        "VRFY": (252, State.MAIL),
        "EXPN": (502, State.MAIL),
        "HELP": (214, State.MAIL),
        "STARTTLS": (503, State.MAIL),
        "AUTH": (503, State.MAIL),
    },
    State.RCPT: {
        "HELO": (250, State.READY),
        "EHLO": (250, State.READY),
        "LHLO": (500, State.RCPT),
        "MAIL": (503, State.RCPT),
        "RCPT": (250, State.RCPT),
        "DATA": (354, State.DATA),
        "BDAT": (250, State.READY),
        "RSET": (250, State.READY),
        "NOOP": (250, State.RCPT),
        "QUIT": (221, State.CLOSED),
        "VRFY": (252, State.RCPT),
        "EXPN": (502, State.RCPT),
        "HELP": (214, State.RCPT),
        "STARTTLS": (503, State.RCPT),
        "AUTH": (503, State.RCPT),
    },
    State.BDAT: {
        "HELO": (250, State.READY),
        "EHLO": (250, State.READY),
        "LHLO": (500, State.BDAT),
        "MAIL": (503, State.BDAT),
        "RCPT": (503, State.BDAT),
        "DATA": (503, State.BDAT),
        "BDAT": (250, State.READY),
        "RSET": (250, State.READY),
        "NOOP": (250, State.BDAT),
        "QUIT": (221, State.CLOSED),
        "VRFY": (252, State.BDAT),
        "EXPN": (502, State.BDAT),
        "HELP": (214, State.BDAT),
        "STARTTLS": (503, State.BDAT),
        "AUTH": (503, State.BDAT),
    },
    State.REJECTED: {
        **{verb: (503, State.REJECTED) for verb in VERBS},
        "QUIT": (221, State.CLOSED),
    },
}

CASES = [(state, verb, *EXPECTED[state][verb]) for state in EXPECTED for verb in VERBS]


@pytest.mark.parametrize(("state", "verb", "code", "after"), CASES)
def test_every_command_in_every_state(state: State, verb: str, code: int, after: State) -> None:
    """Each command in each command state gets the expected reply and state."""
    session = to_state(state)
    assert dialog(session, LINES[verb]) == [code]
    assert session.state is after


def test_table_covers_every_verb() -> None:
    """Every command state has a rule for every verb; other states read none."""
    for state, rules in TRANSITIONS.items():
        if state in (State.CONNECT, State.DATA, State.CHUNK, State.CLOSED):
            assert rules == {}
        else:
            assert set(rules) == set(VERBS)


def test_state_doc_is_current() -> None:
    """docs/smtp-states.md is what the table draws."""
    doc = Path(__file__).resolve().parents[2] / "docs" / "smtp-states.md"
    assert doc.read_text(encoding="utf-8") == render_state_table()


def test_rejected_decisions_leave_state() -> None:
    """A negative answer changes nothing and counts as an error."""
    session = make()
    reject = Reply(550, "7.1", "no")

    def refuse(event: Event) -> Reply | None:
        return reject

    assert dialog(session, b"EHLO c", refuse) == [550]
    assert session.state is State.GREETED and session.helo_name is None
    assert dialog(session, b"EHLO c") == [250]
    assert dialog(session, b"MAIL FROM:<a@b.example>", refuse) == [550]
    assert session.state is State.READY
    assert dialog(session, b"MAIL FROM:<a@b.example>") == [250]
    assert dialog(session, b"RCPT TO:<c@d.example>", refuse) == [550]
    assert session.state is State.MAIL
    assert dialog(session, b"DATA") == [554]  # RFC 2920 3.1: no valid recipients
    assert dialog(session, b"RCPT TO:<c@d.example>") == [250]
    assert dialog(session, b"DATA", refuse) == [550]
    assert session.state is State.RCPT
    assert session.error_count == 5


def test_respond_validation() -> None:
    """respond() refuses replies that make no sense and calls out of turn."""
    session = make()
    with pytest.raises(RuntimeError):
        session.respond(None)
    session.receive_data(b"EHLO c\r\n")
    assert isinstance(session.next_event(), Helo)
    with pytest.raises(ValueError):
        session.respond(Reply(354, "", "go"))
    session.respond(None)
    session.receive_data(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n")
    assert isinstance(session.next_event(), MailFrom)
    session.respond(None)
    assert isinstance(session.next_event(), RcptTo)
    session.respond(None)
    assert isinstance(session.next_event(), DataStart)
    with pytest.raises(ValueError):
        session.respond(Reply(250, "0.0", "Ok"))  # DATA needs 354
    session.respond(None)
    session.receive_data(b".\r\n")
    assert session.next_event() == MessageEnd(0)
    with pytest.raises(ValueError):
        session.respond(None)  # end of data needs the queue's answer
    session.respond(QUEUED)
    assert session.state is State.READY


def test_greeting_and_ehlo_reply() -> None:
    """220 banner; EHLO lists the extensions without enhanced codes (RFC 2034)."""
    session = ServerSession(
        ServerSettings(
            hostname=HOST,
            banner="mx.example ESMTP mta",
            dsn=True,
            smtputf8=True,
            starttls=True,
            auth=True,
            auth_tls_only=False,
        )
    )
    session.auth_mechanisms = ("PLAIN", "LOGIN")
    assert session.next_event() is None
    session.start()
    assert session.data_to_send() == b"220 mx.example ESMTP mta\r\n"
    run(session, b"EHLO client\r\n")
    assert session.data_to_send() == (
        b"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n"
        b"250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250-ENHANCEDSTATUSCODES\r\n"
        b"250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n"
    )
    assert (session.helo_name, session.esmtp, session.protocol) == ("client", True, "ESMTP")
    run(session, b"HELO other\r\n")
    assert session.data_to_send() == b"250 mx.example\r\n"
    assert (session.helo_name, session.esmtp, session.protocol) == ("other", False, "SMTP")


def test_minimal_ehlo_and_no_enhanced_codes() -> None:
    """Extensions switched off are not offered; without ENHANCEDSTATUSCODES no
    reply carries a status; SIZE alone means no limit (RFC 1870 4)."""
    session = make(
        pipelining=False,
        eightbitmime=False,
        vrfy_enabled=False,
        enhanced_status_codes=False,
        message_size_limit=0,
        chunking=False,
    )
    run(session, b"EHLO c\r\n")
    assert session.data_to_send() == b"250-mx.example\r\n250 SIZE\r\n"
    run(session, b"NOOP\r\nVRFY x\r\nMAIL FROM:<a@b.example> BODY=8BITMIME\r\n")
    assert session.data_to_send() == (
        b"250 Ok\r\n502 VRFY command is disabled\r\n555 Unsupported option: BODY\r\n"
    )


def test_other_self_answered_commands() -> None:
    """NOOP, HELP, VRFY, EXPN, RSET texts with enhanced codes."""
    session = make()
    run(session, b"NOOP x\r\nVRFY u\r\nEXPN l\r\nRSET\r\nHELP\r\n")
    assert session.data_to_send() == (
        b"250 2.0.0 Ok\r\n"
        b"252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"
        b"502 5.5.1 Error: command not implemented\r\n"
        b"250 2.0.0 Ok\r\n"
        b"214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP\r\n"
    )


def test_syntax_errors() -> None:
    """Unknown commands get 500 5.5.2, bad arguments 501 (Postfix texts)."""
    session = make()
    run(session, b"FOO\r\nMAIL FROM:<a@b\r\nMAIL FROM:<a@b.example> SIZE=1 SIZE=2\r\n")
    assert session.data_to_send() == (
        b"500 5.5.2 Error: command not recognized\r\n"
        b"501 5.1.7 Bad sender address syntax\r\n"
        b"501 5.5.4 Error: duplicate parameter: SIZE\r\n"
    )
    assert session.error_count == 3


def test_sequence_error_wins_over_syntax() -> None:
    """Like Postfix, a command out of sequence is refused before its arguments
    are looked at."""
    session = make()
    assert dialog(session, b"RCPT TO:<broken") == [503]


def test_helo_required() -> None:
    """smtpd_helo_required: MAIL before HELO is refused with 503 5.5.1."""
    session = make(helo_required=True)
    run(session, b"MAIL FROM:<a@b.example>\r\n")
    assert session.data_to_send() == b"503 5.5.1 Error: send HELO/EHLO first\r\n"
    assert dialog(session, b"HELO c") == [250]
    assert dialog(session, b"MAIL FROM:<a@b.example>") == [250]


def test_mail_parameters() -> None:
    """Known parameters are checked per extension; unknown ones get 555."""
    session = make(message_size_limit=1000)
    assert dialog(session, b"MAIL FROM:<a@b.example> SIZE=1001") == [552]
    assert session.data_to_send() == b""
    session = make(message_size_limit=1000)
    run(session, b"MAIL FROM:<a@b.example> SIZE=1001\r\n")
    assert session.data_to_send() == b"552 5.3.4 Message size exceeds fixed limit\r\n"
    for line, code in [
        (b"MAIL FROM:<a@b.example> SIZE=x", 501),
        (b"MAIL FROM:<a@b.example> BODY=BINARYMIME", 501),
        (b"MAIL FROM:<a@b.example> RET=FULL", 501),  # DSN off: 501 5.7.1 as Postfix
        (b"MAIL FROM:<a@b.example> SMTPUTF8", 555),  # SMTPUTF8 off
        (b"MAIL FROM:<a@b.example> AUTH=<>", 555),  # AUTH not offered
        (b"MAIL FROM:<a@b.example> XFOO=1", 555),
    ]:
        assert dialog(session, line) == [code], line
    events = run(session, b"MAIL FROM:<a@b.example> SIZE=1000 BODY=8bitmime\r\n")
    assert events == [
        MailFrom("a@b.example", {"SIZE": "1000", "BODY": "8bitmime"}, "8BITMIME", 1000)
    ]
    assert session.data_to_send() == b"250 2.1.0 Ok\r\n"
    assert dialog(session, b"RCPT TO:<c@d.example> NOTIFY=NEVER") == [501]


def test_dsn_and_smtputf8_parameters() -> None:
    """With DSN and SMTPUTF8 on, their parameters are checked and passed on."""
    session = make(dsn=True, smtputf8=True, auth=True)
    for line, code in [
        (b"MAIL FROM:<a@b.example> RET=HEADERS", 501),
        (b"MAIL FROM:<a@b.example> ENVID=a=b", 501),
        (b"MAIL FROM:<a@b.example> ENVID=" + b"x" * 101, 501),
        (b"MAIL FROM:<a@b.example> SMTPUTF8=yes", 501),
        (b"MAIL FROM:<a@b.example> AUTH=a b", 555),  # "b" is an unknown parameter
    ]:
        assert dialog(session, line) == [code], line
    line = "MAIL FROM:<jö@b.example> SMTPUTF8 RET=hdrs ENVID=q+2B AUTH=<>".encode()
    events = run(session, line + b"\r\n")
    assert events == [
        MailFrom("jö@b.example", {"SMTPUTF8": None, "RET": "hdrs", "ENVID": "q+2B", "AUTH": "<>"})
    ]
    assert session.data_to_send() == b"250 2.1.0 Ok\r\n"
    for line, code in [
        (b"RCPT TO:<c@d.example> NOTIFY=NEVER,SUCCESS", 501),
        (b"RCPT TO:<c@d.example> NOTIFY=DELAY,DELAY", 501),
        (b"RCPT TO:<c@d.example> ORCPT=bad", 501),
    ]:
        assert dialog(session, line) == [code], line
    # The transaction is SMTPUTF8, so a UTF-8 recipient passes (RFC 6531 3.4).
    line = "RCPT TO:<ö@d.example> NOTIFY=success,failure ORCPT=rfc822;x@d".encode()
    events = run(session, line + b"\r\n")
    assert events == [RcptTo("ö@d.example", {"NOTIFY": "success,failure", "ORCPT": "rfc822;x@d"})]


def test_recipient_limit() -> None:
    """Past smtpd_recipient_limit RCPT gets 452 4.5.3 and no event; it is not
    counted as an error (Postfix's overshoot allowance)."""
    session = to_state(State.MAIL, recipient_limit=2)
    assert dialog(session, b"RCPT TO:<a@x.example>") == [250]
    assert dialog(session, b"RCPT TO:<b@x.example>") == [250]
    assert run(session, b"RCPT TO:<c@x.example>\r\n") == []
    assert session.data_to_send() == b"452 4.5.3 Error: too many recipients\r\n"
    assert session.error_count == 0


# -- pipelining ------------------------------------------------------------------


def test_pipelined_commands_wait_for_decisions() -> None:
    """With decisions pending the session parses nothing more, so replies
    leave in command order (RFC 2920)."""
    session = make()
    session.receive_data(
        b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\n"
        b"NOOP\r\nRCPT TO:<z@y.example>\r\nDATA\r\n"
    )
    assert isinstance(session.next_event(), Helo)
    assert session.next_event() is None
    assert session.data_to_send() == b""
    session.respond(None)
    assert isinstance(session.next_event(), MailFrom)
    session.respond(None)
    assert session.next_event() == RcptTo("x@y.example", {})
    assert session.next_event() is None  # still pending
    session.respond(Reply(550, "1.1", "User unknown"))
    assert session.next_event() == RcptTo("z@y.example", {})
    session.respond(None)
    assert session.next_event() == DataStart()
    session.respond(None)
    assert codes(session.data_to_send()) == [250, 250, 550, 250, 250, 354]
    assert session.state is State.DATA


def test_messages_back_to_back() -> None:
    """Content, end of data and the next transaction pipelined in one read."""
    session = to_state(State.RCPT)
    session.receive_data(b"DATA\r\n")
    assert session.next_event() == DataStart()
    session.respond(None)
    events = run(
        session,
        b"one\r\n.\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
        b"two\r\n.\r\nQUIT\r\n",
    )
    data = [e for e in events if isinstance(e, MessageData | MessageEnd)]
    assert data == [MessageData(b"one\r\n"), MessageEnd(5), MessageData(b"two\r\n"), MessageEnd(5)]
    assert codes(session.data_to_send()) == [354, 250, 250, 250, 354, 250, 221]
    assert session.closed and isinstance(events[-1], Quit)


# -- DATA content ----------------------------------------------------------------


def in_data(**overrides: object) -> ServerSession:
    session = to_state(State.RCPT, **overrides)
    assert dialog(session, b"DATA") == [354]
    return session


def content(events: Iterable[Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, MessageData))


RAW = (
    b"Subject: dots\r\n\r\n"
    b"..leading dot\r\n"
    b"...two\r\n"
    b"middle . dot\r\n"
    b".x single dot\r\n"
    b"bare\rcr\r\n"
    b"..\r\n"
    b"end\r\n"
    b".\r\n"
    b"NOOP\r\n"
)
UNSTUFFED = (
    b"Subject: dots\r\n\r\n"
    b".leading dot\r\n"
    b"..two\r\n"
    b"middle . dot\r\n"
    b"x single dot\r\n"
    b"bare\rcr\r\n"
    b".\r\n"
    b"end\r\n"
)


def test_unstuffing() -> None:
    """Leading dots are removed (RFC 5321 4.5.2), bare CR passes through, and
    the command after the terminator is answered."""
    session = in_data()
    events = run(session, RAW)
    assert content(events) == UNSTUFFED
    assert MessageEnd(len(UNSTUFFED)) in events
    assert codes(session.data_to_send()) == [250, 250]


@pytest.mark.parametrize("cut", range(len(RAW) + 1))
def test_split_at_every_position(cut: int) -> None:
    """Content split in two at any byte gives the same message and replies."""
    session = in_data()
    events = run(session, RAW[:cut]) + run(session, RAW[cut:])
    assert content(events) == UNSTUFFED
    assert MessageEnd(len(UNSTUFFED)) in events
    assert codes(session.data_to_send()) == [250, 250]


def test_byte_by_byte() -> None:
    """Content fed one byte at a time gives the same message."""
    session = in_data()
    events: list[Event] = []
    for i in range(len(RAW)):
        events += run(session, RAW[i : i + 1])
    assert content(events) == UNSTUFFED
    assert codes(session.data_to_send()) == [250, 250]


@pytest.mark.parametrize("cut", range(1, 8))
def test_empty_message_and_early_data(cut: int) -> None:
    """An empty message (".\\r\\n" at once) and a terminator split at the start."""
    session = in_data()
    raw = b".\r\nNOOP\r\n"
    events = run(session, raw[:cut]) + run(session, raw[cut:])
    assert [e for e in events if isinstance(e, MessageData | MessageEnd)] == [MessageEnd(0)]
    assert codes(session.data_to_send()) == [250, 250]


def test_bulk_events() -> None:
    """A large read becomes one MessageData, not one per line."""
    session = in_data(message_size_limit=0)
    body = b"line of text\r\n" * 100_000
    events = run(session, body)
    assert len(events) == 1 and len(content(events)) == len(body) - 4
    events = run(session, b".\r\n")
    assert content(events) + b"" == body[-4:]
    assert MessageEnd(len(body)) in events


@pytest.mark.parametrize(
    "raw",
    [b"a\n.\nb\r\n", b"a\r.\rb\r\n", b"a\n.\r\nb\r\n", b"a\r\n.\nb\r\n", b"a\r\n.b\n"],
)
def test_not_terminators(raw: bytes) -> None:
    """Only <CRLF>.<CRLF> ends the data (SMTP smuggling defence)."""
    session = in_data(forbid_bare_newline=False)
    events = run(session, raw)
    assert not any(isinstance(e, MessageEnd) for e in events)
    assert session.state is State.DATA
    events = run(session, b"\r\n.\r\n")
    assert isinstance(events[-1], MessageEnd)


def test_bare_lf_rejected() -> None:
    """smtpd_forbid_bare_newline: a bare LF anywhere in DATA gets 521 at the end
    of data, the transaction is dropped and the session closes."""
    session = in_data()
    events = run(session, b"ok\r\nsmuggled\n.\nMAIL FROM:<x@y>\r\nmore\r\n.\r\nQUIT\r\n")
    assert not any(isinstance(e, MessageEnd) for e in events)
    assert events[-1] == TransactionAborted("bare LF")
    assert session.data_to_send() == b"521 5.5.2 mx.example Error: bare <LF> received\r\n"
    assert session.closed


def test_bare_lf_allowed_when_not_forbidden() -> None:
    """With smtpd_forbid_bare_newline = no, a bare LF is content."""
    session = in_data(forbid_bare_newline=False)
    events = run(session, b"a\nb\r\n.\r\n")
    assert content(events) == b"a\nb\r\n"


def test_bare_lf_wins_over_size() -> None:
    """A bare LF after the size limit was passed still gets 521, so the answer
    does not depend on how the input was split."""
    session = in_data(message_size_limit=10)
    run(session, b"x" * 50 + b"\r\n")
    run(session, b"y\n\r\n.\r\n")
    assert codes(session.data_to_send()) == [521]


def test_message_too_big() -> None:
    """Over message_size_limit: read on to the end without buffering, answer
    552 5.3.4, drop the transaction and carry on."""
    session = in_data(message_size_limit=1000)
    events: list[Event] = []
    for _ in range(100):
        events += run(session, b"z" * 998 + b"\r\n")
        assert session.buffered_bytes < 16
    events += run(session, b".\r\nNOOP\r\n")
    assert events[-1] == TransactionAborted("message too big")
    assert not any(isinstance(e, MessageEnd) for e in events)
    assert len(content(events)) <= 1000
    assert session.data_to_send() == b"552 5.3.4 Error: message file too big\r\n250 2.0.0 Ok\r\n"
    assert session.state is State.READY


def test_size_limit_is_inclusive() -> None:
    """A message of exactly message_size_limit octets is accepted."""
    session = in_data(message_size_limit=8)
    events = run(session, b"..12\r\n3\r\n.\r\n")  # unstuffed ".12\r\n3\r\n" = 8
    assert MessageEnd(8) in events


def test_eof_in_data() -> None:
    """A client that disconnects in DATA aborts the transaction."""
    session = in_data()
    events = run(session, b"partial\r\n")
    session.receive_data(b"")
    events += run(session)
    assert events[-2:] == [TransactionAborted("lost connection"), ConnectionLost()]
    assert session.closed


# -- line length and memory -------------------------------------------------------


def test_line_too_long() -> None:
    """An over-long command line gets one 500 5.5.2 when it ends; the next
    command is handled normally."""
    session = make(max_line_length=1000)
    run(session, b"NOOP " + b"x" * 995 + b"\r\nNOOP\r\n")  # 1002 octets with CRLF
    assert session.data_to_send() == b"500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n"
    run(session, b"NOOP " + b"x" * 993 + b"\r\n")  # exactly 1000
    assert session.data_to_send() == b"250 2.0.0 Ok\r\n"


def test_endless_line_keeps_memory_bounded() -> None:
    """10 MB without a line end is dropped as it comes; one reply at its end."""
    session = make()
    chunk = b"A" * 65536
    for _ in range(160):
        run(session, chunk)
        assert session.buffered_bytes <= 1000
    assert session.data_to_send() == b""
    run(session, b"tail\r\nNOOP\r\n")
    assert session.data_to_send() == b"500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n"


def test_bare_lf_commands() -> None:
    """A bare LF ends a command line (Postfix tolerates it)."""
    session = make()
    run(session, b"EHLO c\nNOOP\n")
    assert codes(session.data_to_send()) == [250, 250]


# -- errors, aborts, closing ------------------------------------------------------


def test_hard_error_limit() -> None:
    """At smtpd_hard_error_limit errors: 421 4.7.0 and closed; the rest of the
    input is ignored."""
    session = make(hard_error_limit=3)
    run(session, b"FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n")
    assert session.data_to_send() == (
        b"500 5.5.2 Error: command not recognized\r\n" * 3
        + b"421 4.7.0 mx.example Error: too many errors\r\n"
    )
    assert session.closed and session.error_count == 3
    session.receive_data(b"NOOP\r\n")
    assert run(session) == [] and session.data_to_send() == b""


def test_error_limit_counts_policy_rejections() -> None:
    """Rejected decisions count too; the 421 follows the reply that hit the
    limit and an open transaction is aborted."""
    session = to_state(State.MAIL, hard_error_limit=2)

    def refuse(event: Event) -> Reply | None:
        return Reply(550, "1.1", "User unknown")

    events = run(session, b"RCPT TO:<a@x.example>\r\nRCPT TO:<b@x.example>\r\n", refuse)
    assert codes(session.data_to_send()) == [550, 550, 421]
    assert events[-1] == TransactionAborted("connection closed")
    assert session.closed


@pytest.mark.parametrize("line", [b"RSET", b"EHLO again", b"HELO again", b"QUIT"])
def test_commands_abort_transactions(line: bytes) -> None:
    """RSET, a new HELO/EHLO and QUIT end the open transaction."""
    session = to_state(State.RCPT)
    events = run(session, line + b"\r\n")
    verb = line.split()[0].decode()
    assert events[0] == TransactionAborted(verb)
    assert session.state in (State.READY, State.CLOSED)


def test_rset_without_transaction_has_no_event() -> None:
    """RSET outside a transaction only answers 250."""
    session = to_state(State.READY)
    assert run(session, b"RSET\r\n") == []


def test_quit() -> None:
    """QUIT: Quit event, 221 2.0.0, closed; later input is ignored."""
    session = make()
    events = run(session, b"QUIT\r\nNOOP\r\n")
    assert events == [Quit()]
    assert session.data_to_send() == b"221 2.0.0 Bye\r\n"
    assert session.closed and session.state is State.CLOSED


def test_eof() -> None:
    """End of input: ConnectionLost, closed; a partial line is dropped."""
    session = to_state(State.MAIL)
    session.receive_data(b"NOO")
    session.receive_data(b"")
    assert run(session) == [TransactionAborted("lost connection"), ConnectionLost()]
    assert session.closed


def test_close_by_adapter() -> None:
    """close(): the reply is sent, the transaction aborted, the session closed."""
    session = to_state(State.RCPT)
    session.close(Reply(421, "4.2", f"{HOST} Error: timeout exceeded"))
    assert session.data_to_send() == b"421 4.4.2 mx.example Error: timeout exceeded\r\n"
    assert run(session) == [TransactionAborted("connection closed")]
    assert session.closed


def test_close_twice_and_respond_each_misuse() -> None:
    """close() on a closed session does nothing; respond_each() only answers
    an LMTP end of data."""
    session = make()
    session.close(Reply(421, "3.2", "bye"))
    session.close(Reply(421, "3.2", "bye again"))
    assert session.data_to_send() == b"421 4.3.2 bye\r\n"
    session = in_data()
    with pytest.raises(RuntimeError):
        session.respond_each([QUEUED])
    session.receive_data(b".\r\n")
    assert session.next_event() == MessageEnd(0)
    with pytest.raises(ValueError):
        session.respond_each([QUEUED])  # not LMTP


def test_lmtp_reply_closing_mid_list() -> None:
    """A 421 among the LMTP replies closes and stops the rest."""
    session = make(lmtp=True)
    for line in [b"LHLO c", b"MAIL FROM:<a@b>", b"RCPT TO:<x@y>", b"RCPT TO:<z@y>", b"DATA"]:
        dialog(session, line)
    session.receive_data(b".\r\n")
    assert session.next_event() == MessageEnd(0)
    session.respond_each([Reply(421, "3.0", "gone"), QUEUED])
    assert session.data_to_send() == b"421 4.3.0 gone\r\n" and session.closed


def test_doc_command(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    """python -m mta.smtp.server --doc prints the table; other arguments fail."""
    assert main(["--doc"]) == 0
    assert capsysbinary.readouterr().out.decode("utf-8") == render_state_table()
    assert main([]) == 2


def test_adapter_421_closes() -> None:
    """A 421 answer to a decision closes the session (RFC 5321 3.8)."""
    session = make()

    def busy(event: Event) -> Reply | None:
        return Reply(421, "3.2", f"{HOST} Service not available")

    run(session, b"EHLO c\r\nNOOP\r\n", busy)
    assert codes(session.data_to_send()) == [421]
    assert session.closed


def test_input_before_greeting_waits() -> None:
    """Input that arrives before start() is held, then answered in order."""
    session = ServerSession(ServerSettings(hostname=HOST, banner="hi"))
    session.receive_data(b"NOOP\r\n")
    assert session.next_event() is None and session.state is State.CONNECT
    session.start()
    run(session)
    assert session.data_to_send() == b"220 hi\r\n250 2.0.0 Ok\r\n"


def test_reject_connection() -> None:
    """A 421 greeting closes; a 554 greeting answers 503 until QUIT (RFC 5321 3.1)."""
    session = ServerSession(ServerSettings(hostname=HOST, banner="hi"))
    session.reject_connection(Reply(421, "7.0", f"{HOST} go away"))
    assert session.data_to_send() == b"421 4.7.0 mx.example go away\r\n" and session.closed
    session = ServerSession(ServerSettings(hostname=HOST, banner="hi"))
    session.reject_connection(Reply(554, "7.1", "no"))
    run(session, b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nQUIT\r\n")
    assert session.data_to_send() == (
        b"554 5.7.1 no\r\n"
        + b"503 5.5.1 Error: access denied, send QUIT\r\n" * 2
        + b"221 2.0.0 Bye\r\n"
    )
    with pytest.raises(RuntimeError):
        session.start()
    with pytest.raises(ValueError):
        ServerSession(ServerSettings(hostname=HOST, banner="hi")).reject_connection(
            Reply(250, "0.0", "fine")
        )


def test_settings_validation() -> None:
    """Line limits below the RFC 5321 minimum are refused."""
    with pytest.raises(ValueError):
        ServerSettings(hostname=HOST, banner="x", max_line_length=100)


# -- LMTP -------------------------------------------------------------------------


def test_lmtp() -> None:
    """LMTP: LHLO only, LHLO required, one reply per recipient after DATA."""
    session = make(lmtp=True)
    assert dialog(session, b"EHLO c") == [500]
    assert dialog(session, b"MAIL FROM:<a@b.example>") == [503]
    assert dialog(session, b"LHLO c") == [250]
    assert session.protocol == "LMTP"
    for line in [b"MAIL FROM:<a@b.example>", b"RCPT TO:<x@y.example>", b"RCPT TO:<z@y.example>"]:
        assert dialog(session, line) == [250]
    assert dialog(session, b"DATA") == [354]
    assert dialog(session, b"hi\r\n.") == [250, 250]
    for line in [b"MAIL FROM:<a@b.example>", b"RCPT TO:<x@y.example>", b"RCPT TO:<z@y.example>"]:
        dialog(session, line)
    dialog(session, b"DATA")
    session.receive_data(b".\r\n")
    assert session.next_event() == MessageEnd(0)
    with pytest.raises(ValueError):
        session.respond_each([QUEUED])
    session.respond_each([QUEUED, Reply(452, "2.2", "Mailbox full")])
    assert codes(session.data_to_send()) == [250, 452]
    assert session.state is State.READY


def test_lhlo_not_in_smtp() -> None:
    """LHLO is not an SMTP command."""
    session = make()
    assert dialog(session, b"LHLO c") == [500]


# -- STARTTLS and AUTH ------------------------------------------------------------


def test_starttls() -> None:
    """After 220 the session forgets HELO and drops input sent behind STARTTLS
    (RFC 3207 4.2, CVE-2011-0411); it is not offered again."""
    session = make(starttls=True)
    dialog(session, b"EHLO c")
    events = run(session, b"STARTTLS\r\nMAIL FROM:<injected@x.example>\r\n")
    assert events == [StartTls()]
    assert session.data_to_send() == b"220 2.0.0 Ready to start TLS\r\n"
    assert session.tls and session.helo_name is None and session.state is State.GREETED
    assert session.buffered_bytes == 0 and run(session) == []
    run(session, b"EHLO c\r\n")
    assert b"STARTTLS" not in session.data_to_send()
    assert session.protocol == "ESMTPS"
    assert dialog(session, b"STARTTLS") == [554]


def test_starttls_refused_by_adapter() -> None:
    """A 454 answer leaves the session in plaintext, state unchanged."""
    session = make(starttls=True)
    dialog(session, b"EHLO c")

    def refuse(event: Event) -> Reply | None:
        return Reply(454, "7.0", "TLS not available due to local problem")

    assert dialog(session, b"STARTTLS", refuse) == [454]
    assert not session.tls and session.state is State.READY


def test_auth_exchange() -> None:
    """AUTH with a challenge: 334, the response line, 235; then protocol ESMTPA."""
    session = make(auth=True, auth_tls_only=False)
    session.auth_mechanisms = ("PLAIN", "LOGIN")
    dialog(session, b"EHLO c")
    answers = iter([Reply(334, "", "VXNlcm5hbWU6"), Reply(334, "", "UGFzc3dvcmQ6"), None])
    seen: list[Event] = []

    def sasl(event: Event) -> Reply | None:
        seen.append(event)
        return next(answers) or Reply(235, "7.0", "Authentication successful")

    run(session, b"AUTH LOGIN\r\ndXNlcg==\r\ncGFzcw==\r\n", sasl)
    assert seen == [Auth("LOGIN", None), AuthResponse("dXNlcg=="), AuthResponse("cGFzcw==")]
    assert codes(session.data_to_send()) == [334, 334, 235]
    assert session.authenticated and session.protocol == "ESMTPA"
    assert dialog(session, b"AUTH PLAIN eA==") == [503]


def test_auth_cancel_and_limits() -> None:
    """ "*" cancels with 501 5.7.0; AUTH needs an explicit answer; long AUTH
    lines are allowed (RFC 4954 4); AUTH is refused when not offered."""
    session = make(auth=True, auth_tls_only=False)
    session.auth_mechanisms = ("PLAIN",)
    dialog(session, b"EHLO c")
    session.receive_data(b"AUTH PLAIN " + b"A" * 4000 + b"\r\n")
    assert isinstance(session.next_event(), Auth)
    with pytest.raises(ValueError):
        session.respond(None)
    session.respond(Reply(334, "", ""))
    run(session, b"*\r\n")
    assert session.data_to_send() == b"334 \r\n501 5.7.0 Authentication aborted\r\n"
    assert not session.authenticated
    plain = make()
    dialog(plain, b"EHLO c")
    assert dialog(plain, b"AUTH PLAIN eA==") == [503]


def test_auth_answers_and_parameter() -> None:
    """AUTH takes 235, 334 or an error; a failure may be retried; the MAIL
    AUTH= parameter is checked when AUTH is offered; HELP lists the extras."""
    session = make(starttls=True, auth=True, auth_tls_only=False)
    session.auth_mechanisms = ("PLAIN",)
    dialog(session, b"EHLO c")
    session.receive_data(b"AUTH PLAIN eA==\r\n")
    assert isinstance(session.next_event(), Auth)
    with pytest.raises(ValueError):
        session.respond(Reply(250, "0.0", "Ok"))
    session.respond(Reply(535, "7.8", "Error: authentication failed"))
    assert codes(session.data_to_send()) == [535] and not session.authenticated
    assert session.error_count == 1
    assert dialog(session, b"MAIL FROM:<a@b.example> AUTH=a\x7fb") == [500]
    assert dialog(session, b"MAIL FROM:<a@b.example> AUTH=a+zz") == [501]
    run(session, b"HELP\r\n")
    assert session.data_to_send().endswith(b"VRFY HELP STARTTLS AUTH\r\n")


# -- properties -------------------------------------------------------------------

SMALL = dict(
    message_size_limit=300,
    max_line_length=512,
    hard_error_limit=8,
    recipient_limit=3,
)

_PIECES = st.sampled_from(
    [
        b"EHLO c\r\n",
        b"HELO c\r\n",
        b"MAIL FROM:<a@b.example>\r\n",
        b"MAIL FROM:<a@b.example> SIZE=999\r\n",
        b"RCPT TO:<c@d.example>\r\n",
        b"DATA\r\n",
        b"RSET\r\n",
        b"NOOP\r\n",
        b"QUIT\r\n",
        b"FOO\r\n",
        b"\r\n",
        b".\r\n",
        b"..x\r\n",
        b"\r\n.\r\n",
        b"text",
        b"\n",
        b"\r",
        b".",
        b"x" * 200,
        b"\x00\xff",
        b"BDAT 3\r\n",
        b"BDAT 2 LAST\r\n",
        b"BDAT 0 LAST\r\n",
        b"BDAT 400\r\n",
        b"BDAT x\r\n",
    ]
)
_OPEN = b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
_OPEN_BDAT = b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nBDAT 7\r\n"
_STREAM = st.one_of(
    st.binary(max_size=400),
    st.lists(_PIECES, max_size=40).map(b"".join),
    st.lists(_PIECES, max_size=40).map(lambda xs: _OPEN + b"".join(xs)),  # mostly content
    st.lists(_PIECES, max_size=40).map(lambda xs: _OPEN_BDAT + b"".join(xs)),  # chunks
)


def normalise(events: list[Event]) -> tuple[list[Event], bytes]:
    """Join adjacent MessageData and drop content of aborted messages: how a
    read was split may change the chunking, never the meaning.  Content of a
    message still being read is returned apart: how much of it was passed on
    before the size limit or a bare LF stopped it depends on the reads."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, MessageData) and out and isinstance(out[-1], MessageData):
            out[-1] = MessageData(out[-1].data + event.data)
        elif isinstance(event, TransactionAborted) and out and isinstance(out[-1], MessageData):
            out[-1] = event
        else:
            out.append(event)
    if out and isinstance(out[-1], MessageData):
        return out[:-1], out[-1].data
    return out, b""


def feed(stream: bytes, cuts: list[int], eof: bool) -> tuple[list[Event], bytes, bytes, bool]:
    session = make(**SMALL)
    events: list[Event] = []
    last = 0
    for cut in [*sorted(cuts), len(stream)]:
        events += run(session, stream[last:cut])
        last = cut
    if eof:
        session.receive_data(b"")
        events += run(session)
    done, partial = normalise(events)
    return done, partial, session.data_to_send(), session.closed


def same(
    a: tuple[list[Event], bytes, bytes, bool], b: tuple[list[Event], bytes, bytes, bool]
) -> bool:
    """Equal, except that one partial content may be a prefix of the other."""
    (ea, pa, oa, ca), (eb, pb, ob, cb) = a, b
    return (ea, oa, ca) == (eb, ob, cb) and (pa.startswith(pb) or pb.startswith(pa))


@settings(max_examples=300, deadline=None)
@given(_STREAM, st.data(), st.booleans())
def test_split_independence(stream: bytes, data: st.DataObject, eof: bool) -> None:
    """The same bytes, whole or split into random pieces, give the same
    events and the same output."""
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    whole = feed(stream, [], eof)
    assert same(feed(stream, cuts, eof), whole)
    assert same(feed(stream, list(range(len(stream))), eof), whole)


# -- BDAT (RFC 3030) -----------------------------------------------------------------


def in_rcpt(**overrides: object) -> ServerSession:
    return to_state(State.RCPT, **overrides)


def test_bdat_chunks_make_one_message() -> None:
    """Chunks are passed on as sent (no dot-unstuffing); each chunk but the
    last gets 250 with its size; BDAT LAST is answered by the queue."""
    session = in_rcpt()
    events = run(session, b"BDAT 9\r\n.a\r\n..b\r\nBDAT 4\r\nc\r\n.BDAT 0 LAST\r\n")
    assert events[0] == DataStart(bdat=True)
    assert content(events) == b".a\r\n..b\r\nc\r\n."
    assert events[-1] == MessageEnd(13)
    assert session.data_to_send() == (
        b"250 2.0.0 Ok: 9 octets\r\n250 2.0.0 Ok: 4 octets\r\n250 2.0.0 Ok: queued as ABC123\r\n"
    )
    assert session.state is State.READY


def test_bdat_last_in_one_chunk_and_split_reads() -> None:
    """One BDAT LAST carries the whole message, whatever the read sizes."""
    whole = b"BDAT 12 LAST\r\nhello\r\nworld"
    session = in_rcpt()
    events: list[Event] = []
    for i in range(len(whole)):
        events += run(session, whole[i : i + 1])
    assert content(events) == b"hello\r\nworld"
    assert isinstance(events[-1], MessageEnd)
    assert codes(session.data_to_send()) == [250]


@pytest.mark.parametrize(
    ("state", "code"), [(State.GREETED, 503), (State.READY, 503), (State.MAIL, 554)]
)
def test_refused_bdat_octets_are_dropped(state: State, code: int) -> None:
    """A BDAT out of sequence is refused and its octets skipped, so that
    a command inside the chunk is never executed."""
    session = to_state(state)
    events = run(session, b"BDAT 6\r\nQUIT\r\nNOOP\r\n")
    assert events == []
    assert codes(session.data_to_send()) == [code, 250]
    assert not session.closed


def test_bdat_refused_by_adapter_skips_chunk() -> None:
    """A negative answer to the first BDAT drops its chunk; the transaction
    stays open, as after a refused DATA."""
    session = in_rcpt()

    def refuse(event: Event) -> Reply | None:
        if isinstance(event, DataStart):
            return Reply(554, "7.1", "no")
        return accept_all(event)

    events = run(session, b"BDAT 6\r\nQUIT\r\nNOOP\r\n", refuse)
    assert events == [DataStart(bdat=True)]
    assert codes(session.data_to_send()) == [554, 250]
    assert session.state is State.RCPT


def test_bdat_over_size_limit_refused_before_reading() -> None:
    """A chunk that would pass message_size_limit gets 552 5.3.4 at once,
    its octets are dropped and the transaction ends."""
    session = in_rcpt(message_size_limit=10)
    events = run(session, b"BDAT 6\r\n123456BDAT 6 LAST\r\n123456NOOP\r\n")
    assert isinstance(events[-1], TransactionAborted)
    assert content(events[:-1]) == b"123456"
    out = session.data_to_send()
    assert out.endswith(b"552 5.3.4 Error: message file too big\r\n250 2.0.0 Ok\r\n")
    assert session.state is State.READY


def test_bdat_bare_lf_closes() -> None:
    """A bare LF in BDAT content is refused as in DATA (Postfix 3.9)."""
    session = in_rcpt()
    run(session, b"BDAT 5 LAST\r\na\nb\r\n")
    assert session.data_to_send() == b"521 5.5.2 mx.example Error: bare <LF> received\r\n"
    assert session.closed


def test_bdat_crlf_split_across_chunks_is_not_bare() -> None:
    """A CR at the end of one chunk and the LF at the start of the next
    make one CRLF."""
    session = in_rcpt()
    events = run(session, b"BDAT 2\r\na\rBDAT 2 LAST\r\n\nb")
    assert content(events) == b"a\r\nb"
    assert codes(session.data_to_send()) == [250, 250]


def test_bdat_not_offered_and_between_chunks() -> None:
    """Without CHUNKING BDAT gets 502 and its octets are skipped; between
    chunks DATA, RCPT and MAIL are refused and RSET ends the message."""
    off = in_rcpt(chunking=False)
    assert "CHUNKING" not in off.ehlo_keywords()
    run(off, b"BDAT 6\r\nQUIT\r\nNOOP\r\n")
    assert codes(off.data_to_send()) == [502, 250]
    session = in_rcpt()
    run(session, b"BDAT 1\r\nx")
    assert session.state is State.BDAT and codes(session.data_to_send()) == [250]
    for line, code in [(b"DATA", 503), (b"RCPT TO:<z@d.example>", 503), (b"MAIL FROM:<a@b>", 503)]:
        assert dialog(session, line) == [code]
    events = run(session, b"RSET\r\n")
    assert events == [TransactionAborted("RSET")]
    assert session.state is State.READY


def test_bdat_syntax_errors() -> None:
    """A BDAT whose size cannot be read is a 501 and nothing is skipped."""
    session = in_rcpt()
    for line in (b"BDAT", b"BDAT x", b"BDAT 1 FIRST", b"BDAT -1"):
        assert dialog(session, line) == [501]
    assert dialog(session, b"NOOP") == [250]


def test_bdat_lmtp_one_reply_per_recipient() -> None:
    """LMTP with BDAT LAST: one reply per accepted recipient (RFC 2033 4.2)."""
    session = make(lmtp=True)
    for line in [b"LHLO c", b"MAIL FROM:<a@b.example>", b"RCPT TO:<x@y>", b"RCPT TO:<z@y>"]:
        dialog(session, line)
    run(session, b"BDAT 2 LAST\r\nhi")
    assert codes(session.data_to_send()) == [250, 250]


# -- TLS required, AUTH rules, limits ----------------------------------------------


def test_encrypt_level_requires_starttls() -> None:
    """smtpd_tls_security_level = encrypt: 530 5.7.0 before STARTTLS for
    mail commands (RFC 3207 4); after TLS they work."""
    session = make(starttls=True, require_tls=True)
    dialog(session, b"EHLO c")
    run(session, b"MAIL FROM:<a@b.example>\r\nVRFY x\r\nBDAT 4\r\nNOOPNOOP\r\n")
    assert session.data_to_send() == (
        b"530 5.7.0 Must issue a STARTTLS command first\r\n"
        b"530 5.7.0 Must issue a STARTTLS command first\r\n"
        b"503 5.5.1 Error: need MAIL command\r\n"
        b"250 2.0.0 Ok\r\n"
    )
    assert dialog(session, b"STARTTLS") == [220]
    dialog(session, b"EHLO c")
    assert dialog(session, b"MAIL FROM:<a@b.example>") == [250]


def test_auth_rules() -> None:
    """AUTH needs TLS with smtpd_tls_auth_only (504), a mechanism that is
    offered (504) and base64 (501); it is not in EHLO before TLS."""
    session = make(auth=True, starttls=True)
    session.auth_mechanisms = ("PLAIN", "LOGIN")
    run(session, b"EHLO c\r\n")
    assert b"AUTH" not in session.data_to_send()
    assert session.data_to_send() == b""
    run(session, b"AUTH PLAIN AGEAYg==\r\n")
    assert session.data_to_send() == (
        b"504 5.5.4 Encryption required for requested authentication mechanism\r\n"
    )
    dialog(session, b"STARTTLS")
    run(session, b"EHLO c\r\n")
    assert b"250-AUTH PLAIN LOGIN\r\n" in session.data_to_send()
    assert dialog(session, b"AUTH CRAM-MD5") == [504]
    assert dialog(session, b"AUTH PLAIN !!!") == [501]
    events = run(session, b"AUTH PLAIN =\r\n", lambda e: Reply(235, "7.0", "ok"))
    assert events == [Auth("PLAIN", "=")]


def test_auth_failure_limit_disconnects() -> None:
    """smtpd_sasl_auth_failure_limit 535s end the session with 421."""
    session = make(auth=True, auth_tls_only=False, auth_failure_limit=2)
    session.auth_mechanisms = ("PLAIN",)
    dialog(session, b"EHLO c")

    def fail(event: Event) -> Reply | None:
        return Reply(535, "7.8", "Error: authentication failed: authentication failure")

    run(session, b"AUTH PLAIN AGEAYg==\r\nAUTH PLAIN AGEAYg==\r\nNOOP\r\n", fail)
    assert codes(session.data_to_send()) == [535, 535, 421]
    assert session.closed and session.auth_failures == 2


def test_auth_bad_continuation_line() -> None:
    """A continuation line that is not base64 ends the exchange with 501."""
    session = make(auth=True, auth_tls_only=False)
    session.auth_mechanisms = ("LOGIN",)
    dialog(session, b"EHLO c")
    run(session, b"AUTH LOGIN\r\n***\r\nNOOP\r\n", lambda e: Reply(334, "", "VXNlcm5hbWU6"))
    assert codes(session.data_to_send()) == [334, 501, 250]


def test_broken_auth_clients_keyword() -> None:
    """broken_sasl_auth_clients adds the old "AUTH=" form."""
    session = make(auth=True, auth_tls_only=False, broken_auth_clients=True)
    session.auth_mechanisms = ("PLAIN",)
    run(session, b"EHLO c\r\n")
    assert b"250-AUTH PLAIN\r\n250-AUTH=PLAIN\r\n" in session.data_to_send()


def test_recipient_overshoot_counts_errors() -> None:
    """Past smtpd_recipient_limit + smtpd_recipient_overshoot_limit each
    extra RCPT counts as an error, so a flood ends with 421."""
    session = make(recipient_limit=2, recipient_overshoot_limit=3, hard_error_limit=4)
    dialog(session, b"EHLO c")
    dialog(session, b"MAIL FROM:<a@b.example>")
    run(session, b"RCPT TO:<x@y.example>\r\n" * 100)
    out = codes(session.data_to_send())
    assert out == [250, 250] + [452] * 7 + [421]
    assert session.closed


def test_error_count_resets_after_a_message() -> None:
    """Errors count "without delivering mail" (Postfix): a queued message
    resets the count."""
    session = to_state(State.RCPT)
    dialog(session, b"FOO")
    dialog(session, b"BAR")
    assert session.error_count == 2
    run(session, b"DATA\r\nx\r\n.\r\n")
    assert session.error_count == 0
