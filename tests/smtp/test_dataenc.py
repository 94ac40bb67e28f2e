"""Tests for mta.smtp.dataenc: the DATA wire form of a message."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mta.smtp.dataenc import DotStuffer, dot_stuff


def normalise(message: bytes) -> bytes:
    """The message with every line break as CRLF (what the peer must get)."""
    return message.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def unstuff(wire: bytes) -> bytes:
    """Decode DATA wire form as a server does (RFC 5321 4.5.2), checking it."""
    assert wire.endswith(b".\r\n")
    body = wire[:-3]
    assert body == b"" or body.endswith(b"\r\n"), "the final dot must start a line"
    lines = body.split(b"\r\n")[:-1] if body else []
    out = []
    for line in lines:
        assert b"\r" not in line and b"\n" not in line, "bare CR or LF on the wire"
        assert line != b".", "a lone dot before the end would end the message early"
        out.append(line[1:] if line.startswith(b".") else line)
    return b"".join(line + b"\r\n" for line in out)


def encode_chunks(chunks: list[bytes]) -> bytes:
    stuffer = DotStuffer()
    return b"".join(stuffer.feed(c) for c in chunks) + stuffer.finish()


@pytest.mark.parametrize(
    ("message", "wire"),
    [
        (b"", b".\r\n"),
        (b"a\r\n", b"a\r\n.\r\n"),
        (b"a", b"a\r\n.\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b".a\r\n.\r\n..b\r\n", b"..a\r\n..\r\n...b\r\n.\r\n"),
        (b"a\nb\n", b"a\r\nb\r\n.\r\n"),
        (b"a\rb\r", b"a\r\nb\r\n.\r\n"),
        (b"a\n.b", b"a\r\n..b\r\n.\r\n"),
        (b"a\r\r\nb", b"a\r\n\r\nb\r\n.\r\n"),
        (b"x.y\r\n", b"x.y\r\n.\r\n"),
    ],
)
def test_examples(message: bytes, wire: bytes) -> None:
    """Known messages encode to the expected wire form."""
    assert dot_stuff(message) == wire


def test_dot_after_crlf_that_ended_the_previous_chunk() -> None:
    """A "." opening a chunk is stuffed when the previous chunk ended a line."""
    assert encode_chunks([b"a\r\n", b".b\r\n"]) == b"a\r\n..b\r\n.\r\n"


def test_cr_and_lf_split_across_chunks() -> None:
    """CR at the end of one chunk and LF at the start of the next are one CRLF."""
    assert encode_chunks([b"a\r", b"\n.b\r", b"\n"]) == b"a\r\n..b\r\n.\r\n"


def test_cr_alone_at_the_end() -> None:
    """A CR at the very end of the message is a bare CR: one line break, no more."""
    assert encode_chunks([b"a\r"]) == b"a\r\n.\r\n"
    assert encode_chunks([b"a", b"\r", b""]) == b"a\r\n.\r\n"


def test_use_after_finish_is_an_error() -> None:
    """A stuffer encodes one message; reuse is a programming error."""
    stuffer = DotStuffer()
    stuffer.finish()
    with pytest.raises(RuntimeError):
        stuffer.feed(b"x")
    with pytest.raises(RuntimeError):
        stuffer.finish()


# Messages rich in the characters that matter, plus arbitrary bytes.
_PIECES = st.sampled_from([b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n.\r\n", b"a", b"b c", b"\x00"])
messages = st.one_of(st.lists(_PIECES, max_size=40).map(b"".join), st.binary(max_size=200))


@st.composite
def chunked(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    message = draw(messages)
    cuts = sorted(draw(st.lists(st.integers(0, len(message)), max_size=10)))
    bounds = [0, *cuts, len(message)]
    return message, [message[a:b] for a, b in itertools.pairwise(bounds)]


@given(chunked())
def test_chunking_does_not_change_the_output(case: tuple[bytes, list[bytes]]) -> None:
    """For any message and any chunking the output equals encoding it whole."""
    message, chunks = case
    assert encode_chunks(chunks) == dot_stuff(message)


@given(messages)
def test_unstuffing_gives_back_the_normalised_message(message: bytes) -> None:
    """A server decoding the wire form gets the message with CRLF line breaks
    (and a final CRLF added when the message lacked one)."""
    expected = normalise(message)
    if expected and not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert unstuff(dot_stuff(message)) == expected


def test_large_message_in_queue_sized_chunks() -> None:
    """Dots at every 64 KiB chunk boundary survive a chunked encode."""
    line = b"." + b"x" * 1021 + b"\r\n"  # 1024 octets: lines start on chunk boundaries
    message = line * 300
    chunks = [message[i : i + 65536] for i in range(0, len(message), 65536)]
    wire = encode_chunks(chunks)
    assert wire == dot_stuff(message)
    assert wire.count(b"\r\n..x") == 299 and wire.startswith(b"..x")
    assert unstuff(wire) == message
