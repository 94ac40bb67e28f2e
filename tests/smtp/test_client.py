"""Tests for mta.smtp.client: the sans-I/O SMTP/LMTP client session, fed
scripted server bytes."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mta.reply import Reply
from mta.smtp.client import (
    MAX_LINE,
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
    Transaction,
    TransactionFailed,
)

EHLO_FULL = (
    b"250-mx.example.org Hello\r\n"
    b"250-PIPELINING\r\n"
    b"250-SIZE 10240000\r\n"
    b"250-8BITMIME\r\n"
    b"250-DSN\r\n"
    b"250-SMTPUTF8\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250-auth PLAIN LOGIN\r\n"
    b"250 CHUNKING\r\n"
)


def drain(session: ClientSession) -> list[Event]:
    events = []
    while (event := session.next_event()) is not None:
        events.append(event)
    return events


def ehlo_reply(*keywords: str) -> bytes:
    lines = ["mx.example.org", *keywords]
    return b"".join(
        f"250{'-' if i < len(lines) - 1 else ' '}{line}\r\n".encode()
        for i, line in enumerate(lines)
    )


def ready(*keywords: str, lmtp: bool = False) -> ClientSession:
    """A session past the handshake with the server offering ``keywords``."""
    session = ClientSession("client.example.com", lmtp=lmtp)
    session.receive_data(b"220 mx.example.org ESMTP\r\n")
    hello = session.data_to_send()
    assert hello == (b"LHLO" if lmtp else b"EHLO") + b" client.example.com\r\n"
    session.receive_data(ehlo_reply(*keywords))
    events = drain(session)
    assert isinstance(events[-1], Ready)
    return session


def tx(*rcpts: str, **kw: object) -> Transaction:
    return Transaction("sender@example.com", list(rcpts or ("a@example.net",)), **kw)  # type: ignore[arg-type]


def lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n")[:-1]


# -- handshake -----------------------------------------------------------------


def test_greeting_then_ehlo_then_ready_with_extensions() -> None:
    """A 220 greeting draws EHLO; the EHLO reply's keywords become extensions."""
    session = ClientSession("client.example.com")
    assert session.stage is Stage.GREETING
    assert session.data_to_send() == b""  # nothing before the greeting
    session.receive_data(b"220 mx.example.org ESMTP\r\n")
    assert session.data_to_send() == b"EHLO client.example.com\r\n"
    assert session.stage is Stage.EHLO
    session.receive_data(EHLO_FULL)
    [event] = drain(session)
    assert isinstance(event, Ready)
    assert event.extensions == {
        "PIPELINING": "",
        "SIZE": "10240000",
        "8BITMIME": "",
        "DSN": "",
        "SMTPUTF8": "",
        "ENHANCEDSTATUSCODES": "",
        "AUTH": "PLAIN LOGIN",
        "CHUNKING": "",
    }
    assert session.extensions == event.extensions
    assert session.stage is Stage.IDLE and session.reusable


def test_old_style_auth_announcement() -> None:
    """ "AUTH=LOGIN PLAIN" (pre-RFC 4954) is read as AUTH."""
    session = ready("AUTH=LOGIN PLAIN")
    assert session.extensions == {"AUTH": "LOGIN PLAIN"}


@pytest.mark.parametrize("greeting", [b"554 5.7.1 go away\r\n", b"450 busy\r\n"])
def test_rejecting_greeting(greeting: bytes) -> None:
    """A non-2xx greeting is GreetingRejected; QUIT is still possible."""
    session = ClientSession("c.example")
    session.receive_data(greeting)
    [event] = drain(session)
    assert isinstance(event, GreetingRejected) and event.stage is Stage.GREETING
    assert event.reply.code == int(greeting[:3])
    assert session.data_to_send() == b""
    with pytest.raises(RuntimeError):
        session.start_transaction(tx())
    session.quit()
    assert session.data_to_send() == b"QUIT\r\n"
    session.receive_data(b"221 bye\r\n")
    assert drain(session) == [Closed()]


def test_421_greeting_closes() -> None:
    """421 (RFC 5321 3.8) rejects and ends the session at once."""
    session = ClientSession("c.example")
    session.receive_data(b"421 4.3.2 shutting down\r\n")
    events = drain(session)
    assert isinstance(events[0], GreetingRejected) and events[0].reply.status == "4.3.2"
    assert events[1:] == [Closed()]
    session.quit()
    assert session.data_to_send() == b""


@pytest.mark.parametrize("code", [b"500", b"502", b"550"])
def test_ehlo_refused_falls_back_to_helo(code: bytes) -> None:
    """A 5xx to EHLO draws HELO; Ready then has no extensions."""
    session = ClientSession("c.example")
    session.receive_data(b"220 hi\r\n")
    session.data_to_send()
    session.receive_data(code + b" what?\r\n")
    assert session.data_to_send() == b"HELO c.example\r\n"
    assert session.stage is Stage.HELO
    assert drain(session) == []
    session.receive_data(b"250 hello\r\n")
    assert drain(session) == [Ready({})]


def test_ehlo_4xx_is_no_fallback() -> None:
    """A 4xx to EHLO is a temporary refusal, not a missing EHLO."""
    session = ClientSession("c.example")
    session.receive_data(b"220 hi\r\n450 later\r\n")
    assert session.data_to_send() == b"EHLO c.example\r\n"
    [event] = drain(session)
    assert isinstance(event, GreetingRejected) and event.stage is Stage.EHLO


def test_helo_refused() -> None:
    """When HELO is refused too the session is rejected at the HELO stage."""
    session = ClientSession("c.example")
    session.receive_data(b"220 hi\r\n502 no\r\n550 no either\r\n")
    [event] = drain(session)
    assert isinstance(event, GreetingRejected)
    assert event.stage is Stage.HELO and event.reply.code == 550


def test_lmtp_uses_lhlo_without_fallback() -> None:
    """LMTP sends LHLO (RFC 2033 4.1) and never falls back to HELO."""
    session = ClientSession("c.example", lmtp=True)
    session.receive_data(b"220 lmtp ready\r\n")
    assert session.data_to_send() == b"LHLO c.example\r\n"
    session.receive_data(b"500 no\r\n")
    assert session.data_to_send() == b""
    [event] = drain(session)
    assert isinstance(event, GreetingRejected) and event.stage is Stage.LHLO


def test_quit_before_greeting_is_refused() -> None:
    """QUIT can't go before the greeting (RFC 5321 3.1)."""
    with pytest.raises(RuntimeError):
        ClientSession("c.example").quit()


# -- transactions ------------------------------------------------------------------


def test_pipelined_transaction_in_one_write() -> None:
    """With PIPELINING, MAIL, every RCPT and DATA go in one write (RFC 2920)."""
    session = ready("PIPELINING", "ENHANCEDSTATUSCODES")
    session.start_transaction(tx("a@example.net", "b@example.net"))
    assert lines(session.data_to_send()) == [
        b"MAIL FROM:<sender@example.com>",
        b"RCPT TO:<a@example.net>",
        b"RCPT TO:<b@example.net>",
        b"DATA",
    ]
    assert session.stage is Stage.MAIL
    session.receive_data(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n")
    events = drain(session)
    assert [type(e) for e in events] == [RecipientReply, RecipientReply, DataAccepted]
    assert events[0] == RecipientReply(0, Reply(250, "1.5", "Ok"))
    assert session.stage is Stage.BODY
    session.send_data(b"Subject: x\r\n\r\n.hidden")
    session.send_data(b"\r\n")
    session.end_data()
    assert session.data_to_send() == b"Subject: x\r\n\r\n..hidden\r\n.\r\n"
    assert session.stage is Stage.DOT
    session.receive_data(b"250 2.0.0 Ok: queued as ABC\r\n")
    done = Reply(250, "0.0", "Ok: queued as ABC")
    assert drain(session) == [MessageDone([done, done])]
    assert session.reusable and session.stage is Stage.IDLE


def test_without_pipelining_one_command_at_a_time() -> None:
    """Without PIPELINING each command waits for the previous reply."""
    session = ready("8BITMIME")
    session.start_transaction(tx("a@example.net", "b@example.net"))
    assert session.data_to_send() == b"MAIL FROM:<sender@example.com>\r\n"
    session.receive_data(b"250 ok\r\n")
    assert session.data_to_send() == b"RCPT TO:<a@example.net>\r\n"
    assert session.stage is Stage.RCPT
    session.receive_data(b"250 ok\r\n")
    assert session.data_to_send() == b"RCPT TO:<b@example.net>\r\n"
    session.receive_data(b"250 ok\r\n")
    assert session.data_to_send() == b"DATA\r\n"
    assert session.stage is Stage.DATA
    session.receive_data(b"354 go\r\n")
    assert [type(e) for e in drain(session)] == [RecipientReply, RecipientReply, DataAccepted]


@pytest.mark.parametrize("pipelining", [True, False])
def test_partial_recipient_failure(pipelining: bool) -> None:
    """A rejected recipient keeps its RCPT reply; the others get the final one."""
    session = ready(*(["PIPELINING"] if pipelining else []))
    session.start_transaction(tx("a@x", "bad@x", "c@x"))
    script = [b"250 ok\r\n", b"250 ok\r\n", b"550 5.1.1 no such user\r\n", b"250 ok\r\n"]
    for reply in script:
        session.receive_data(reply)
    session.receive_data(b"354 go\r\n")
    sent = lines(session.data_to_send())
    assert sent[-1] == b"DATA" and len(sent) == 5
    events = drain(session)
    assert events[1] == RecipientReply(1, Reply(550, "1.1", "no such user"))
    assert isinstance(events[-1], DataAccepted)
    session.send_data(b"hello\r\n")
    session.end_data()
    session.receive_data(b"250 queued\r\n")
    [done] = drain(session)
    assert isinstance(done, MessageDone)
    assert [r.code for r in done.replies] == [250, 550, 250]


def test_all_recipients_rejected_without_pipelining() -> None:
    """No DATA after every RCPT failed; RSET keeps the connection usable."""
    session = ready()
    session.start_transaction(tx("a@x", "b@x"))
    session.receive_data(b"250 ok\r\n550 no\r\n")
    session.receive_data(b"450 later\r\n")
    sent = lines(session.data_to_send())
    assert sent == [b"MAIL FROM:<sender@example.com>", b"RCPT TO:<a@x>", b"RCPT TO:<b@x>", b"RSET"]
    events = drain(session)
    failed = events[-1]
    assert isinstance(failed, TransactionFailed) and failed.stage is Stage.RCPT
    assert [r.code for r in failed.replies] == [550, 450]
    assert session.stage is Stage.RSET
    session.receive_data(b"250 reset\r\n")
    assert session.reusable


def test_all_recipients_rejected_pipelined() -> None:
    """Pipelined: the DATA reply is awaited, then RSET; each keeps its reply."""
    session = ready("PIPELINING")
    session.start_transaction(tx("a@x", "b@x"))
    session.data_to_send()
    session.receive_data(b"250 ok\r\n550 no\r\n551 no\r\n")
    assert drain(session)[-1] == RecipientReply(1, Reply(551, "", "no"))
    assert session.data_to_send() == b""
    session.receive_data(b"554 5.5.1 no valid recipients\r\n")
    [failed] = drain(session)
    assert isinstance(failed, TransactionFailed)
    assert [r.code for r in failed.replies] == [550, 551]
    assert session.data_to_send() == b"RSET\r\n"


def test_mail_rejected_pipelined() -> None:
    """A refused MAIL fails every recipient with its reply; the RCPT and DATA
    replies that follow it (503s) are consumed, not reported."""
    session = ready("PIPELINING", "ENHANCEDSTATUSCODES")
    session.start_transaction(tx("a@x", "b@x"))
    session.data_to_send()
    session.receive_data(b"553 5.7.1 sender rejected\r\n503 5.5.1 need MAIL\r\n")
    assert drain(session) == []
    session.receive_data(b"503 5.5.1 need MAIL\r\n503 5.5.1 need RCPT\r\n")
    [failed] = drain(session)
    mail = Reply(553, "7.1", "sender rejected")
    assert failed == TransactionFailed(mail, [mail, mail], Stage.MAIL)
    assert session.data_to_send() == b"RSET\r\n"


def test_mail_rejected_without_pipelining_sends_no_rcpt() -> None:
    """Without PIPELINING nothing follows a refused MAIL but RSET."""
    session = ready()
    session.start_transaction(tx("a@x"))
    session.data_to_send()
    session.receive_data(b"452 4.3.1 out of space\r\n")
    assert session.data_to_send() == b"RSET\r\n"
    [failed] = drain(session)
    assert isinstance(failed, TransactionFailed) and failed.replies[0].code == 452


def test_data_rejected() -> None:
    """A refused DATA fails the accepted recipients with the DATA reply."""
    session = ready("PIPELINING")
    session.start_transaction(tx("a@x", "b@x"))
    session.data_to_send()
    session.receive_data(b"250 ok\r\n250 ok\r\n550 no\r\n451 4.3.0 try later\r\n")
    failed = drain(session)[-1]
    assert isinstance(failed, TransactionFailed) and failed.stage is Stage.DATA
    assert [r.code for r in failed.replies] == [451, 550]
    assert session.data_to_send() == b"RSET\r\n"


def test_354_without_valid_recipient_sends_empty_message() -> None:
    """A broken server that says 354 with no valid recipient gets "." at once,
    and the transaction fails with the recipients' own replies."""
    session = ready("PIPELINING")
    session.start_transaction(tx("a@x"))
    session.data_to_send()
    session.receive_data(b"250 ok\r\n550 no\r\n354 go ahead\r\n")
    assert session.data_to_send() == b".\r\n"
    assert not [e for e in drain(session) if isinstance(e, DataAccepted)]
    session.receive_data(b"554 no recipients\r\n")
    [failed] = drain(session)
    assert isinstance(failed, TransactionFailed) and failed.replies[0].code == 550
    assert session.data_to_send() == b"RSET\r\n"


def test_lmtp_one_reply_per_accepted_recipient() -> None:
    """LMTP: after the dot each accepted recipient gets its own reply, in RCPT
    order (RFC 2033 4.2); the rejected one keeps its RCPT reply."""
    session = ready("PIPELINING", "ENHANCEDSTATUSCODES", lmtp=True)
    session.start_transaction(tx("a@x", "b@x", "c@x"))
    session.data_to_send()
    session.receive_data(b"250 ok\r\n250 ok\r\n550 5.1.1 unknown\r\n250 ok\r\n354 go\r\n")
    drain(session)
    session.send_data(b"body\r\n")
    session.end_data()
    session.data_to_send()
    session.receive_data(b"250 2.0.0 a delivered\r\n")
    assert drain(session) == []
    assert session.stage is Stage.DOT
    session.receive_data(b"452 4.2.2 c over quota\r\n")
    [done] = drain(session)
    assert isinstance(done, MessageDone)
    assert [r.one_line() for r in done.replies] == [
        "250 2.0.0 a delivered",
        "550 5.1.1 unknown",
        "452 4.2.2 c over quota",
    ]


def test_several_transactions_on_one_session() -> None:
    """After MessageDone and after TransactionFailed another transaction runs."""
    session = ready("PIPELINING")
    for n in range(3):
        session.start_transaction(tx(f"r{n}@x"))
        assert session.data_to_send().startswith(b"MAIL FROM:")
        session.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
        drain(session)
        session.send_data(f"message {n}\r\n".encode())
        session.end_data()
        assert session.data_to_send() == f"message {n}\r\n.\r\n".encode()
        session.receive_data(b"250 queued\r\n")
        assert isinstance(drain(session)[-1], MessageDone)
    # A failed one, then another one pipelined behind its RSET.
    session.start_transaction(tx("bad@x"))
    session.data_to_send()
    session.receive_data(b"250 ok\r\n550 no\r\n554 no\r\n")
    assert isinstance(drain(session)[-1], TransactionFailed)
    session.start_transaction(tx("good@x"))
    assert lines(session.data_to_send()) == [
        b"RSET",
        b"MAIL FROM:<sender@example.com>",
        b"RCPT TO:<good@x>",
        b"DATA",
    ]
    session.receive_data(b"250 reset\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    assert isinstance(drain(session)[-1], DataAccepted)


def test_rset_held_without_pipelining() -> None:
    """Without PIPELINING the next MAIL waits for the RSET reply."""
    session = ready()
    session.start_transaction(tx("a@x"))
    session.data_to_send()
    session.receive_data(b"550 no\r\n")
    assert session.data_to_send() == b"RSET\r\n"
    session.start_transaction(tx("a@x"))
    assert session.data_to_send() == b""
    session.receive_data(b"250 ok\r\n")
    assert session.data_to_send() == b"MAIL FROM:<sender@example.com>\r\n"


def test_quit_after_transaction() -> None:
    """QUIT is answered and the session ends with Closed."""
    session = ready()
    session.quit()
    assert session.data_to_send() == b"QUIT\r\n"
    assert session.stage is Stage.QUIT
    session.receive_data(b"221 2.0.0 Bye\r\n")
    assert drain(session) == [Closed()]
    session.receive_data(b"")
    assert drain(session) == []
    assert session.stage is Stage.CLOSED


# -- parameters and refusals -----------------------------------------------------------


def test_mail_and_rcpt_parameters_when_offered() -> None:
    """SIZE, BODY, SMTPUTF8 and DSN parameters go out when offered."""
    session = ready("PIPELINING", "SIZE 1000", "8BITMIME", "DSN", "SMTPUTF8")
    session.start_transaction(
        tx(
            "a@x",
            mail_params={"RET": "HDRS", "ENVID": "abc", "MT-PRIORITY": "3"},
            rcpt_params=[{"NOTIFY": "SUCCESS,FAILURE", "ORCPT": "rfc822;a@x"}],
            size=900,
            needs_8bit=True,
            needs_smtputf8=True,
        )
    )
    sent = lines(session.data_to_send())
    assert (
        sent[0]
        == b"MAIL FROM:<sender@example.com> SIZE=900 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=abc"
    )
    assert sent[1] == b"RCPT TO:<a@x> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@x"


def test_parameters_dropped_when_not_offered() -> None:
    """Without DSN, 8BITMIME and SIZE those parameters are not sent; an 8-bit
    message still goes (as Postfix does without MIME conversion)."""
    session = ready()
    session.start_transaction(
        tx(
            "a@x",
            mail_params={"RET": "FULL", "ENVID": "abc"},
            rcpt_params=[{"NOTIFY": "NEVER"}],
            size=123,
            needs_8bit=True,
        )
    )
    assert session.data_to_send() == b"MAIL FROM:<sender@example.com>\r\n"
    session.receive_data(b"250 ok\r\n")
    assert session.data_to_send() == b"RCPT TO:<a@x>\r\n"


def test_size_over_the_server_limit_fails_without_sending() -> None:
    """RFC 1870: a message over the announced SIZE is refused with 552 5.3.4."""
    session = ClientSession("c.example", peer="mx[192.0.2.1]")
    session.receive_data(b"220 hi\r\n" + ehlo_reply("SIZE 1000"))
    drain(session)
    session.data_to_send()
    session.start_transaction(tx("a@x", "b@x", size=1001))
    assert session.data_to_send() == b""
    [failed] = drain(session)
    assert isinstance(failed, TransactionFailed)
    assert failed.reply.status == "5.3.4" and failed.reply.code == 552
    assert "exceeds size limit 1000 of server mx[192.0.2.1]" in failed.reply.text
    assert failed.replies == [failed.reply, failed.reply]
    assert session.reusable


def test_size_zero_means_no_limit() -> None:
    """ "SIZE 0" or a bare "SIZE" announces no fixed limit (RFC 1870 4)."""
    for keyword in ("SIZE 0", "SIZE"):
        session = ready(keyword)
        session.start_transaction(tx(size=10**9))
        assert session.data_to_send().startswith(b"MAIL FROM:<sender@example.com> SIZE=")


def test_smtputf8_required_but_not_offered() -> None:
    """An SMTPUTF8 message can't go to a server without SMTPUTF8: 550 5.6.7."""
    session = ready("8BITMIME")
    session.start_transaction(tx("ü@x", "b@x", needs_smtputf8=True))
    assert session.data_to_send() == b""
    [failed] = drain(session)
    assert isinstance(failed, TransactionFailed)
    assert [r.one_line()[:9] for r in failed.replies] == ["550 5.6.7"] * 2


def test_utf8_address_sent_as_utf8() -> None:
    """With SMTPUTF8 the addresses travel as UTF-8 (RFC 6531 3.3)."""
    session = ready("SMTPUTF8")
    session.start_transaction(tx("ü@x", needs_smtputf8=True))
    assert session.data_to_send() == b"MAIL FROM:<sender@example.com> SMTPUTF8\r\n"
    session.receive_data(b"250 ok\r\n")
    assert session.data_to_send() == "RCPT TO:<ü@x>\r\n".encode()


@pytest.mark.parametrize(
    "bad",
    [
        {"sender": "a@x\r\nRCPT TO:<evil@x>"},
        {"rcpt": "a@x\nDATA"},
        {"mail_params": {"ENVID": "a b"}},
        {"mail_params": {"EN VID": "a"}},
    ],
)
def test_command_injection_is_refused(bad: dict[str, object]) -> None:
    """Line breaks or spaces in addresses/parameters can't smuggle commands."""
    session = ready("DSN")
    transaction = Transaction(
        str(bad.get("sender", "s@x")),
        [str(bad.get("rcpt", "r@x"))],
        mail_params=bad.get("mail_params", {}),  # type: ignore[arg-type]
    )
    with pytest.raises(ValueError):
        session.start_transaction(transaction)
    assert session.data_to_send() == b""


def test_transaction_needs_a_ready_session() -> None:
    """start_transaction() before Ready or mid-transaction is a driver bug."""
    with pytest.raises(RuntimeError):
        ClientSession("c.example").start_transaction(tx())
    session = ready()
    session.start_transaction(tx())
    with pytest.raises(RuntimeError):
        session.start_transaction(tx())
    with pytest.raises(RuntimeError):
        session.send_data(b"too early")


# -- server going away -------------------------------------------------------------


def test_421_mid_transaction_fails_the_rest_and_closes() -> None:
    """421 to a RCPT (RFC 5321 3.8): unanswered recipients get the 421."""
    session = ready("PIPELINING")
    session.start_transaction(tx("a@x", "b@x", "c@x"))
    session.data_to_send()
    session.receive_data(b"250 ok\r\n550 no\r\n421 4.3.2 going down\r\n")
    events = drain(session)
    failed = events[-2]
    assert isinstance(failed, TransactionFailed)
    assert [r.code for r in failed.replies] == [550, 421, 421]
    assert events[-1] == Closed()
    assert session.stage is Stage.CLOSED
    assert session.data_to_send() == b""


def test_eof_mid_transaction() -> None:
    """The server closing is Closed; the stage says what was interrupted."""
    session = ready()
    session.start_transaction(tx())
    session.data_to_send()
    session.receive_data(b"250 ok\r\n")
    assert session.stage is Stage.RCPT
    session.receive_data(b"")
    assert drain(session) == [Closed()]


def test_unsolicited_421_when_idle() -> None:
    """An idle connection the server shuts with 421 is Closed."""
    session = ready()
    session.receive_data(b"421 4.4.2 idle timeout\r\n")
    assert drain(session) == [Closed()]
    assert not session.reusable


def test_reply_before_end_of_data() -> None:
    """A negative reply in the middle of the body ends the message with it;
    further body is ignored and the connection is not reused."""
    session = ready()
    session.start_transaction(tx("a@x"))
    for reply in (b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"):
        session.receive_data(reply)
    drain(session)
    session.data_to_send()
    session.send_data(b"part one\r\n")
    session.receive_data(b"552 5.3.4 too big\r\n")
    [done] = drain(session)
    assert isinstance(done, MessageDone) and done.replies[0].code == 552
    session.send_data(b"part two\r\n")
    session.end_data()
    assert session.data_to_send() == b"part one\r\n"
    assert not session.reusable
    session.quit()
    assert session.data_to_send() == b""
    assert drain(session) == [Closed()]


# -- reply parsing ---------------------------------------------------------------------


def test_multiline_enhanced_status_is_stripped_from_each_line() -> None:
    """RFC 2034 repeats the status on each line; it is kept once."""
    session = ready("PIPELINING")
    session.start_transaction(tx("a@x"))
    session.receive_data(b"250 ok\r\n550-5.1.1 no such\r\n550-5.1.1 user\r\n550 5.1.1 here\r\n")
    reply = drain(session)[0]
    assert reply == RecipientReply(0, Reply(550, "1.1", "no such\nuser\nhere"))


def test_bare_lf_and_empty_text_replies() -> None:
    """LF-only line ends and a reply with no text are accepted."""
    session = ClientSession("c.example")
    session.receive_data(b"220\n")
    assert session.data_to_send() == b"EHLO c.example\r\n"
    session.receive_data(b"250-mx\n250 \n")
    assert drain(session) == [Ready({})]


HANDSHAKE_INPUT = b"220-mx.example.org ESMTP\r\n220 welcome\r\n" + EHLO_FULL
TX_INPUT = (
    b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550-5.1.1 no\r\n550 5.1.1 such user\r\n354 End data\r\n"
)


def run_script(handshake: list[bytes], transaction: list[bytes]) -> tuple[list[Event], bytes]:
    """Feed the handshake chunks, start a transaction on Ready, feed the rest
    (with DATA: the session does not use the CHUNKING the server offers)."""
    session = ClientSession("c.example", chunking=False)
    sent = b""
    events: list[Event] = []
    for chunk in handshake:
        session.receive_data(chunk)
        sent += session.data_to_send()
        events += drain(session)
    assert events == [Ready(session.extensions)]
    session.start_transaction(tx("a@x", "b@x"))
    for chunk in transaction:
        sent += session.data_to_send()
        session.receive_data(chunk)
        events += drain(session)
    return events, sent


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]  # b"" would be EOF


def test_replies_split_at_every_byte() -> None:
    """Fed one byte at a time, the session sees the same replies and acts the same."""
    whole = run_script([HANDSHAKE_INPUT], [TX_INPUT])
    assert [type(e) for e in whole[0]] == [Ready, RecipientReply, RecipientReply, DataAccepted]
    assert whole[0][2] == RecipientReply(1, Reply(550, "1.1", "no\nsuch user"))
    bytewise = run_script(
        [HANDSHAKE_INPUT[i : i + 1] for i in range(len(HANDSHAKE_INPUT))],
        [TX_INPUT[i : i + 1] for i in range(len(TX_INPUT))],
    )
    assert bytewise == whole


@settings(max_examples=200)
@given(st.lists(st.integers(0, 10_000), max_size=12), st.lists(st.integers(0, 10_000), max_size=8))
def test_replies_split_anywhere(cuts1: list[int], cuts2: list[int]) -> None:
    """Any split of the server's bytes gives the same events and commands."""
    chunked = run_script(split(HANDSHAKE_INPUT, cuts1), split(TX_INPUT, cuts2))
    assert chunked == run_script([HANDSHAKE_INPUT], [TX_INPUT])


def test_overlong_reply_line() -> None:
    """A reply line over 4096 octets is a protocol error."""
    session = ClientSession("c.example")
    session.receive_data(b"220 " + b"x" * MAX_LINE + b"\r\n")
    [event] = drain(session)
    assert isinstance(event, ProtocolError) and "longer" in event.reason


def test_huge_greeting_keeps_memory_bounded() -> None:
    """A 100 MB greeting with no line end fails at the first read over the
    limit; what follows is dropped, not buffered."""
    session = ClientSession("c.example")
    chunk = b"220 " + b"x" * (64 * 1024 - 4)
    session.receive_data(chunk)
    [event] = drain(session)
    assert isinstance(event, ProtocolError)
    for _ in range(1600):  # the rest of 100 MB
        session.receive_data(chunk)
    assert drain(session) == []
    assert session.stage is Stage.CLOSED
    assert session.data_to_send() == b""


def test_too_many_reply_lines() -> None:
    """A reply of more than 100 lines is a protocol error."""
    session = ClientSession("c.example")
    session.receive_data(b"220-x\r\n" * 101)
    [event] = drain(session)
    assert isinstance(event, ProtocolError) and "lines" in event.reason


@pytest.mark.parametrize(
    "garbage",
    [
        b"HTTP/1.1 400 Bad Request\r\n",
        b"22 short\r\n",
        b"2200 long\r\n",
        b"220x nope\r\n",
        b"620 no such class\r\n",
        b"220-first\r\n250 other code\r\n",
        b"\x00\x01\x02\r\n",
    ],
)
def test_garbage_is_a_protocol_error(garbage: bytes) -> None:
    """Anything that is not "ddd[ -]text" ends the session with ProtocolError."""
    session = ClientSession("c.example")
    session.receive_data(garbage)
    [event] = drain(session)
    assert isinstance(event, ProtocolError)
    assert session.data_to_send() == b""


def test_implausible_reply_class_is_a_protocol_error() -> None:
    """A 250 to DATA would be taken for delivery: refuse it as garbage."""
    session = ready("PIPELINING")
    session.start_transaction(tx("a@x"))
    session.receive_data(b"250 ok\r\n250 ok\r\n250 sure\r\n")
    events = drain(session)
    assert isinstance(events[-1], ProtocolError)
    assert not any(isinstance(e, MessageDone) for e in events)


def test_unexpected_reply_when_idle() -> None:
    """A reply nobody asked for is a protocol error (it would desync replies)."""
    session = ready()
    session.receive_data(b"250 surprise\r\n")
    [event] = drain(session)
    assert isinstance(event, ProtocolError)


@settings(max_examples=300)
@given(st.binary(max_size=300), st.booleans())
def test_arbitrary_server_bytes_never_raise(data: bytes, pipelining: bool) -> None:
    """Whatever the server sends, the session only produces events."""
    session = ready(*(["PIPELINING"] if pipelining else []))
    session.start_transaction(tx("a@x", "b@x"))
    for i in range(0, len(data), 7):
        session.receive_data(data[i : i + 7])
    session.receive_data(b"")
    events = drain(session)
    assert all(not isinstance(e, Ready) for e in events)


# -- STARTTLS, AUTH, BDAT --------------------------------------------------------------


def test_starttls_then_ehlo_again_with_fresh_extensions() -> None:
    """STARTTLS (RFC 3207): 220 gives TLSReady; after tls_started() the
    session says EHLO again and forgets the plaintext extensions."""
    from mta.smtp.client import TLSReady, TLSRefused

    session = ready("STARTTLS", "AUTH PLAIN")
    session.starttls()
    assert session.data_to_send() == b"STARTTLS\r\n"
    session.receive_data(b"220 2.0.0 go ahead\r\n")
    assert drain(session) == [TLSReady()]
    session.tls_started()
    assert session.data_to_send() == b"EHLO client.example.com\r\n"
    assert session.extensions == {}
    session.receive_data(ehlo_reply("SIZE 100"))
    assert drain(session) == [Ready({"SIZE": "100"})]
    assert session.tls
    refused = ready("STARTTLS")
    refused.starttls()
    refused.data_to_send()
    refused.receive_data(b"454 4.7.0 TLS not available\r\n")
    assert drain(refused) == [TLSRefused(Reply(454, "7.0", "TLS not available"))]
    assert refused.reusable  # plaintext may go on


def test_plaintext_after_starttls_reply_is_an_injection() -> None:
    """Bytes after the 220 in the same read would be taken as TLS-protected:
    a protocol error, not a TLSReady (CVE-2011-0411 class)."""
    session = ready("STARTTLS")
    session.starttls()
    session.data_to_send()
    session.receive_data(b"220 go\r\n250 injected\r\n")
    [event] = drain(session)
    assert isinstance(event, ProtocolError) and "after the STARTTLS reply" in event.reason


def test_auth_plain_and_login_never_log_secrets() -> None:
    """PLAIN goes in one line (RFC 4616); LOGIN answers the two 334
    challenges; the transcript hides the credentials."""
    from mta.smtp.client import Authenticated, AuthFailed

    session = ready("AUTH PLAIN LOGIN")
    session.authenticate("PLAIN", "joe", "s3cret")
    assert session.data_to_send() == b"AUTH PLAIN AGpvZQBzM2NyZXQ=\r\n"
    session.receive_data(b"235 2.7.0 ok\r\n")
    assert drain(session) == [Authenticated(Reply(235, "7.0", "ok"))]
    login = ready("AUTH LOGIN")
    login.authenticate("LOGIN", "joe", "s3cret")
    assert login.data_to_send() == b"AUTH LOGIN\r\n"
    login.receive_data(b"334 VXNlcm5hbWU6\r\n")
    assert login.data_to_send() == b"am9l\r\n"
    login.receive_data(b"334 UGFzc3dvcmQ6\r\n")
    assert login.data_to_send() == b"czNjcmV0\r\n"
    login.receive_data(b"535 5.7.8 bad\r\n")
    assert drain(login) == [AuthFailed(Reply(535, "7.8", "bad"))]
    for s in (session, login):
        text = "\n".join(s.transcript)
        assert "s3cret" not in text and "AGpvZQBzM2NyZXQ=" not in text and "czNjcmV0" not in text


def test_bdat_chunks_without_dot_stuffing_and_lmtp_replies() -> None:
    """With CHUNKING the body goes as BDAT n ... BDAT 0 LAST after the RCPT
    replies (no DATA, no dot-stuffing, line ends made CRLF); LMTP then
    gets a reply per accepted recipient."""
    session = ready("PIPELINING", "CHUNKING", lmtp=True)
    session.start_transaction(tx("a@x", "b@x", "c@x"))
    assert lines(session.data_to_send()) == [
        b"MAIL FROM:<sender@example.com>",
        b"RCPT TO:<a@x>",
        b"RCPT TO:<b@x>",
        b"RCPT TO:<c@x>",
    ]
    session.receive_data(b"250 ok\r\n250 ok\r\n550 no\r\n250 ok\r\n")
    assert isinstance(drain(session)[-1], DataAccepted)
    session.send_data(b".dot\nline\r\n")
    assert session.data_to_send() == b"BDAT 12\r\n.dot\r\nline\r\n"
    session.end_data()
    assert session.data_to_send() == b"BDAT 0 LAST\r\n"
    session.receive_data(b"250 chunk\r\n250 2.0.0 a saved\r\n452 4.2.2 c full\r\n")
    [done] = drain(session)
    assert isinstance(done, MessageDone)
    assert [r.code for r in done.replies] == [250, 550, 452]


def test_bdat_chunk_refused_ends_the_transaction() -> None:
    """A refused BDAT chunk fails the message; no more chunks are sent."""
    session = ready("CHUNKING")
    session.start_transaction(tx("a@x"))
    session.data_to_send()
    session.receive_data(b"250 ok\r\n")
    drain(session)
    session.receive_data(b"250 ok\r\n")
    assert isinstance(drain(session)[-1], DataAccepted)
    session.send_data(b"x\r\n")
    session.data_to_send()
    session.receive_data(b"552 5.3.4 too big\r\n")
    assert not session.sending_body  # the driver's producer stops here
    assert session.data_to_send() == b"RSET\r\n"
    [failed] = drain(session)
    assert isinstance(failed, TransactionFailed) and failed.reply.code == 552
