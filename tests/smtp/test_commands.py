"""Tests for mta.smtp.commands: a command line becomes a typed command."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mta.smtp.commands import (
    Auth,
    Bdat,
    Command,
    CommandError,
    Data,
    Expn,
    Hello,
    Help,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Rset,
    StartTls,
    Vrfy,
    parse_command,
    parse_params,
    peek_verb,
)

PARSED: list[tuple[bytes, Command]] = [
    (b"HELO client.example", Hello("HELO", "client.example")),
    (b"ehlo [192.0.2.1]", Hello("EHLO", "[192.0.2.1]")),
    (b"EHLO  two words ", Hello("EHLO", "two words")),
    (b"LHLO lmtp.example", Hello("LHLO", "lmtp.example")),
    (b"MAIL FROM:<a@b.example>", Mail("a@b.example", {})),
    (b"mail from:<>", Mail("", {})),
    (b"MAIL FROM: <a@b.example>", Mail("a@b.example", {})),
    (b"MAIL FROM:a@b.example", Mail("a@b.example", {})),
    (
        b"MAIL FROM:<a@b.example> size=100 Body=8BITMIME ENVID=x+2By",
        Mail("a@b.example", {"SIZE": "100", "BODY": "8BITMIME", "ENVID": "x+2By"}),
    ),
    (b"MAIL FROM:<a@b.example> SMTPUTF8", Mail("a@b.example", {"SMTPUTF8": None})),
    (b"MAIL FROM:<a@b.example> AUTH=<>", Mail("a@b.example", {"AUTH": "<>"})),
    ("MAIL FROM:<jö@b.example> SMTPUTF8".encode(), Mail("jö@b.example", {"SMTPUTF8": None})),
    (b'MAIL FROM:<"x >y"@b.example> SIZE=1', Mail('"x >y"@b.example', {"SIZE": "1"})),
    (b"RCPT TO:<c@d.example>", Rcpt("c@d.example", {})),
    (b"RCPT TO:<Postmaster>", Rcpt("Postmaster", {})),
    (
        b"RCPT TO:<c@d.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c@d.example",
        Rcpt("c@d.example", {"NOTIFY": "SUCCESS,FAILURE", "ORCPT": "rfc822;c@d.example"}),
    ),
    (b"DATA", Data()),
    (b"data ", Data()),
    (b"RSET", Rset()),
    (b"NOOP", Noop("")),
    (b"NOOP hello there", Noop("hello there")),
    (b"QUIT", Quit()),
    (b"QUIT now", Quit()),
    (b"VRFY user", Vrfy("user")),
    (b"EXPN list", Expn("list")),
    (b"HELP", Help("")),
    (b"HELP MAIL", Help("MAIL")),
    (b"BDAT 100", Bdat(100, False)),
    (b"BDAT 0 last", Bdat(0, True)),
    (b"STARTTLS", StartTls()),
    (b"AUTH plain", Auth("PLAIN", None)),
    (b"AUTH PLAIN AGFiYwBkZWY=", Auth("PLAIN", "AGFiYwBkZWY=")),
    (b"AUTH LOGIN =", Auth("LOGIN", "=")),
    (b"\tNOOP\t", Noop("")),
]


@pytest.mark.parametrize(("line", "command"), PARSED)
def test_parse(line: bytes, command: Command) -> None:
    """Each valid line becomes the expected typed command."""
    assert parse_command(line) == command


ERRORS = [
    (b"", 500, "5.5.2"),
    (b"   ", 500, "5.5.2"),
    (b"FOO bar", 500, "5.5.2"),
    (b"HELO", 501, "5.5.4"),
    (b"EHLO ", 501, "5.5.4"),
    (b"MAIL", 501, "5.5.4"),
    (b"MAIL TO:<a@b>", 501, "5.5.4"),
    (b"MAIL FROM:", 501, "5.5.4"),
    (b"MAIL FROM:<a@b> SIZE=1 SIZE=2", 501, "5.5.4"),  # duplicate
    (b"MAIL FROM:<a@b> size=1 SIZE=2", 501, "5.5.4"),  # keywords fold case
    (b"MAIL FROM:<a@b> =x", 501, "5.5.4"),
    (b"MAIL FROM:<a@b> SIZE=", 501, "5.5.4"),
    (b"MAIL FROM:<a@b> -X=1", 501, "5.5.4"),
    (b"MAIL FROM:<a@b", 501, "5.1.7"),
    (b"MAIL FROM:<a b@c>", 501, "5.1.7"),
    ("MAIL FROM:<jö@b.example>".encode(), 553, "5.6.7"),  # no SMTPUTF8
    (b"RCPT TO:<>", 501, "5.1.3"),
    (b"RCPT FROM:<a@b>", 501, "5.5.4"),
    ("RCPT TO:<jö@b.example>".encode(), 553, "5.6.7"),
    (b"DATA now", 501, "5.5.4"),
    (b"RSET x", 501, "5.5.4"),
    (b"STARTTLS x", 501, "5.5.4"),
    (b"VRFY", 501, "5.5.4"),
    (b"EXPN", 501, "5.5.4"),
    (b"BDAT", 501, "5.5.4"),
    (b"BDAT x", 501, "5.5.4"),
    (b"BDAT 1 FIRST", 501, "5.5.4"),
    (b"BDAT 1 LAST more", 501, "5.5.4"),
    (b"AUTH", 501, "5.5.4"),
    (b"AUTH bad/mech", 501, "5.5.4"),
    (b"NOOP \x00", 500, "5.5.2"),  # control characters
    (b"NOOP a\rb", 500, "5.5.2"),
    (b"NOOP \x7f", 500, "5.5.2"),
]


@pytest.mark.parametrize(("line", "code", "status"), ERRORS)
def test_errors(line: bytes, code: int, status: str) -> None:
    """Malformed lines raise CommandError with the matching reply."""
    with pytest.raises(CommandError) as info:
        parse_command(line)
    assert (info.value.reply.code, info.value.reply.status) == (code, status)


def test_unknown_verb_text() -> None:
    """An unknown verb gets Postfix's text."""
    with pytest.raises(CommandError) as info:
        parse_command(b"XYZZY")
    assert info.value.reply.to_bytes() == b"500 5.5.2 Error: command not recognized\r\n"


def test_rcpt_utf8_follows_transaction() -> None:
    """A non-ASCII recipient passes only in an SMTPUTF8 transaction (RFC 6531 3.4)."""
    line = "RCPT TO:<ö@b.example>".encode()
    assert parse_command(line, smtputf8=True) == Rcpt("ö@b.example", {})


def test_tab_and_non_utf8_bytes() -> None:
    """TAB is not a control character here; non-UTF-8 bytes survive as
    surrogate escapes."""
    assert parse_command(b"NOOP a\tb") == Noop("a\tb")
    command = parse_command(b"HELO caf\xe9")
    assert isinstance(command, Hello)
    assert command.name.encode("utf-8", "surrogateescape") == b"caf\xe9"


def test_params() -> None:
    """Parameter values are raw; "=" inside a value is kept; order is kept."""
    assert parse_params("") == {}
    assert parse_params("a=1 B ORCPT=rfc822;x+3Dy=z") == {
        "A": "1",
        "B": None,
        "ORCPT": "rfc822;x+3Dy=z",
    }
    assert list(parse_params("Z=1 A=2")) == ["Z", "A"]
    with pytest.raises(CommandError):
        parse_params("A=\x01")


def test_peek_verb() -> None:
    """peek_verb reads the first word only."""
    assert peek_verb(b"mail FROM:<x>") == "MAIL"
    assert peek_verb(b"  ") == ""
    assert peek_verb(b"noop\xc2\xa0x") == "NOOP\xa0X"


_TOKENS = st.sampled_from(
    [
        b"MAIL",
        b"RCPT",
        b"FROM:",
        b"TO:",
        b"<",
        b">",
        b"@",
        b'"',
        b"\\",
        b" ",
        b"\t",
        b"=",
        b"SIZE",
        b"[IPv6:",
        b"]",
        b"::1",
        b"BDAT",
        b"AUTH",
        b"EHLO",
        b"x",
        b".",
        b",",
        b":",
        "ö".encode(),
        b"\xff",
        b"\xc2\xa0",
        b"\xc2\x85",
        b"\x1c",
        b"\x00",
    ]
)


@given(st.one_of(st.binary(max_size=60), st.lists(_TOKENS, max_size=20).map(b"".join)))
def test_any_bytes_raise_only_command_error(line: bytes) -> None:
    """Whatever the bytes, parse_command returns a command or raises CommandError."""
    for utf8 in (False, True):
        try:
            command = parse_command(line, smtputf8=utf8)
        except CommandError as e:
            assert 500 <= e.reply.code < 600
        else:
            assert command.verb == peek_verb(line)
