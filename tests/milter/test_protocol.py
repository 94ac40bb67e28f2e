"""The sans-I/O milter protocol core: framing, negotiation, replies, faults."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mta.milter import protocol as p
from mta.milter.protocol import MilterConnection, MilterError


def negotiated(
    actions: int = p.ALL_ACTIONS, steps: int = 0, extra: bytes = b""
) -> MilterConnection:
    conn = MilterConnection()
    conn.negotiate()
    conn.data_to_send()
    conn.receive(p.packet(b"O", struct.pack(">III", 6, actions, steps) + extra))
    return conn


def test_optneg_packet_offers_version_actions_and_steps() -> None:
    """SMFIC_OPTNEG carries version 6, every action and every step we support."""
    conn = MilterConnection()
    conn.negotiate()
    out = conn.data_to_send()
    assert out[:5] == struct.pack(">I", 13) + b"O"
    assert struct.unpack(">III", out[5:]) == (6, p.ALL_ACTIONS, p.ALL_STEPS)


def test_negotiation_records_steps_and_macro_lists() -> None:
    """The filter's steps decide what is sent and answered; its macro lists
    replace ours when it negotiated SMFIF_SETSYMLIST."""
    extra = struct.pack(">I", p.STAGE_MAIL) + b"{mail_addr} i\0"
    conn = negotiated(p.SMFIF_ADDHDRS | p.SMFIF_SETSYMLIST, p.SMFIP_NOHELO | p.SMFIP_NR_RCPT, extra)
    assert not conn.wants(p.HELO)
    assert conn.wants(p.MAIL)
    assert not conn.replies(p.RCPT)
    assert conn.replies(p.MAIL)
    assert conn.macros_for(p.MAIL, ("x",)) == ("{mail_addr}", "i")
    assert conn.macros_for(p.RCPT, ("{rcpt_addr}",)) == ("{rcpt_addr}",)


def test_macros_then_command_framing() -> None:
    """SMFIC_MACRO names the command it precedes; strings are NUL-terminated."""
    conn = negotiated()
    conn.send_macros(p.MAIL, [("i", "ABC"), ("{auth_authen}", "bob")])
    assert conn.command(p.MAIL, p.strings_data("<a@b>", "SIZE=10"))
    out = conn.data_to_send()
    macro = b"DM" + b"i\0ABC\0{auth_authen}\0bob\0"
    assert out.startswith(struct.pack(">I", len(macro) - 0) + macro)
    assert out.endswith(p.packet(b"M", b"<a@b>\0SIZE=10\0"))


def test_replies_split_across_reads() -> None:
    """A reply arriving byte by byte gives the same result as at once."""
    conn = negotiated()
    conn.command(p.HELO, p.strings_data("x"))
    data = p.packet(b"y", b"550 5.7.1 no thanks\0")
    got: list[p.Response] = []
    for i in range(len(data)):
        got += conn.receive(data[i : i + 1])
    assert got == [p.Response("replycode", ("550 5.7.1 no thanks",))]
    assert conn.awaiting is None


def test_end_of_message_modifications_then_decision() -> None:
    """Header, envelope and body edits precede the final reply to EOM."""
    conn = negotiated()
    conn.command(p.BODYEOB)
    data = (
        p.packet(b"h", b"X-A\0one\0")
        + p.packet(b"i", struct.pack(">I", 0) + b"X-B\0two\0")
        + p.packet(b"m", struct.pack(">I", 1) + b"Subject\0\0")
        + p.packet(b"e", b"<new@x>\0")
        + p.packet(b"+", b"<r@x>\0")
        + p.packet(b"-", b"<s@x>\0")
        + p.packet(b"p")
        + p.packet(b"b", b"new body\r\n")
        + p.packet(b"q", b"spam\0")
        + p.packet(b"a")
    )
    got = conn.receive(data)
    assert [r.kind for r in got] == [
        "addheader",
        "insheader",
        "chgheader",
        "chgfrom",
        "addrcpt",
        "delrcpt",
        "progress",
        "replbody",
        "quarantine",
        "accept",
    ]
    assert got[1].index == 0 and got[2].args == ("Subject", "")
    assert got[7].data == b"new body\r\n"


@pytest.mark.parametrize(
    ("reply", "fault"),
    [
        (p.packet(b"Z"), "unknown reply code 'Z'"),
        (struct.pack(">I", 0), "zero length"),
        (struct.pack(">I", p.MAX_PACKET + 1) + b"c", "too large"),
        (p.packet(b"y", b"hello\0"), "malformed reply code"),
        (p.packet(b"h", b"X\0y\0"), "before end of message"),
    ],
)
def test_bad_replies_raise_milter_error(reply: bytes, fault: str) -> None:
    """Unknown codes, zero-length and oversize packets, a bad reply code and a
    modification outside end of message are protocol faults."""
    conn = negotiated()
    conn.command(p.MAIL, p.strings_data("<a@b>"))
    with pytest.raises(MilterError, match=fault):
        conn.receive(reply)


def test_modification_not_negotiated_is_a_fault() -> None:
    """A filter may only use the actions it asked for in OPTNEG."""
    conn = negotiated(actions=p.SMFIF_ADDHDRS)
    conn.command(p.BODYEOB)
    with pytest.raises(MilterError, match="without negotiating"):
        conn.receive(p.packet(b"e", b"<x@y>\0"))


def test_negotiation_faults() -> None:
    """A version we do not speak or actions we did not offer end the filter."""
    conn = MilterConnection(actions=p.SMFIF_ADDHDRS)
    conn.negotiate()
    with pytest.raises(MilterError, match="requested actions"):
        conn.receive(p.packet(b"O", struct.pack(">III", 6, p.SMFIF_CHGBODY, 0)))
    conn = MilterConnection()
    conn.negotiate()
    with pytest.raises(MilterError, match="version 9"):
        conn.receive(p.packet(b"O", struct.pack(">III", 9, 0, 0)))


def test_connect_packet() -> None:
    """SMFIC_CONNECT: hostname, family, port, address."""
    assert p.connect_data("h.example", "4", 25, "192.0.2.1") == (
        b"h.example\x004\x00\x19192.0.2.1\x00"
    )


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_milter_error(data: bytes) -> None:
    """Whatever a filter sends, the core parses it or raises MilterError."""
    conn = negotiated()
    conn.command(p.BODYEOB)
    try:
        conn.receive(data)
    except MilterError:
        pass
