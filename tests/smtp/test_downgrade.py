"""Tests for mta.smtp.downgrade: 8-bit MIME made 7-bit for a next hop
without 8BITMIME (RFC 6152), structure and content preserved."""

from __future__ import annotations

import email
import email.policy

from hypothesis import given
from hypothesis import strategies as st

from mta.smtp.downgrade import downgrade


def parts(message: bytes) -> list[tuple[str, bytes | None]]:
    msg = email.message_from_bytes(message, policy=email.policy.compat32)
    return [(p.get_content_type(), p.get_payload(decode=True)) for p in msg.walk()]


def test_multipart_text_becomes_quoted_printable_binary_base64() -> None:
    """Each 8-bit leaf is re-encoded; decoded content, preamble, epilogue
    and boundaries stay; the result is 7-bit."""
    original = (
        b'Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        b"pre\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n\xc3\x84pfel \r\n" + b"x" * 100 + b"\r\n"
        b"--b1\r\nContent-Type: application/octet-stream\r\n\r\n\xff\xfe\x00\r\n"
        b"--b1--\r\nepilogue\r\n"
    )
    out = downgrade(original)
    assert out.isascii()
    assert parts(out) == parts(original)
    assert b"Content-Transfer-Encoding: quoted-printable" in out
    assert b"Content-Transfer-Encoding: base64" in out
    assert b"\r\npre\r\n--b1\r\n" in out and out.endswith(b"--b1--\r\nepilogue\r\n")


def test_nested_message_is_converted_inside() -> None:
    """message/rfc822 may not be encoded (RFC 2046 5.2.1): its own parts are."""
    inner = (
        b"Subject: in\r\nContent-Type: text/plain\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\nk\xc3\xa4se\r\n"
    )
    original = (
        b"MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n" + inner
    )
    out = downgrade(original)
    assert out.isascii()
    assert b"Content-Transfer-Encoding: 7bit" in out
    assert b"k=C3=A4se" in out


def test_seven_bit_message_is_unchanged_and_plain_message_gets_mime() -> None:
    """Nothing to do for 7-bit; a non-MIME 8-bit message gets MIME headers."""
    plain = b"Subject: a\r\n\r\nhello\r\n"
    assert downgrade(plain) is plain
    out = downgrade(b"Subject: a\r\n\r\nh\xc3\xa9\r\n")
    assert out == (
        b"Subject: a\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n"
        b"\r\nh=C3=A9\r\n"
    )


@given(st.binary(max_size=300))
def test_any_text_body_round_trips(body: bytes) -> None:
    """Whatever the body octets, the result is 7-bit and decodes back."""
    body = body.replace(b"\r", b"").replace(b"\n", b"\r\n")
    message = b"Content-Type: text/plain\r\nMIME-Version: 1.0\r\n\r\n" + body
    out = downgrade(message)
    assert out.isascii()
    decoded = parts(out)[0][1]
    assert decoded is not None
    assert decoded.replace(b"\r\n", b"\n") == body.replace(b"\r\n", b"\n")
