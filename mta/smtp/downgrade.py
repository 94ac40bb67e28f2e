"""7-bit downgrade of an 8-bit MIME message, for a next hop without 8BITMIME.

Input: a whole message (CRLF lines) that may hold 8-bit octets.  Output: an
equivalent message whose bodies are 7-bit (RFC 6152 3: a message declared
8BITMIME must not be sent as such to a server that does not offer it; the
client converts it or returns it).  Raises :class:`DowngradeError` when the
structure cannot be converted (nesting too deep).

As Postfix's MIME output conversion: every leaf body part with 8-bit octets
is re-encoded (text/* as quoted-printable, anything else as base64) and its
Content-Transfer-Encoding changed; multipart bodies are walked part by part,
message/rfc822 parts are converted inside (RFC 2046 5.2.1 forbids encoding
them).  Header fields are left as they are, as Postfix leaves them.
"""

from __future__ import annotations

import base64
import binascii
import re

CRLF = b"\r\n"
MAX_DEPTH = 32  # nesting of multiparts and message/rfc822

_PARAM = re.compile(rb';\s*([A-Za-z0-9!#$%&\'*+.^_`{|}~-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]+)')


class DowngradeError(ValueError):
    """The message cannot be converted to 7 bits."""


def has_8bit(data: bytes) -> bool:
    return not data.isascii()


def downgrade(message: bytes) -> bytes:
    """The 7-bit form of ``message`` (unchanged when it already is)."""
    if not has_8bit(message):
        return message
    head, body = _split(message)
    fields = _fields(head)
    if not any(name == b"mime-version" for name, _ in fields):
        # A message without MIME headers is text/plain (RFC 2045 5.2).
        head = head + b"MIME-Version: 1.0\r\n"
    return _entity(head, body, b"text/plain", 0)


def _split(entity: bytes) -> tuple[bytes, bytes]:
    """Header section (with its final CRLF) and body."""
    if entity.startswith(CRLF):
        return b"", entity[2:]
    end = entity.find(b"\r\n\r\n")
    if end < 0:
        return entity if entity.endswith(CRLF) else entity + CRLF, b""
    return entity[: end + 2], entity[end + 4 :]


def _fields(head: bytes) -> list[tuple[bytes, bytes]]:
    """(lower-case name, unfolded value) of each header field."""
    out: list[tuple[bytes, bytes]] = []
    for line in head.split(CRLF):
        if line[:1] in (b" ", b"\t") and out:
            name, value = out[-1]
            out[-1] = (name, value + b" " + line.strip())
        elif b":" in line:
            name, _, value = line.partition(b":")
            out.append((name.strip().lower(), value.strip()))
    return out


def _header(fields: list[tuple[bytes, bytes]], name: bytes) -> bytes:
    for key, value in fields:
        if key == name:
            return value
    return b""


def _content_type(value: bytes, default: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    kind = value.split(b";", 1)[0].strip().lower() or default
    params = {}
    for m in _PARAM.finditer(value):
        raw = m.group(2)
        if raw.startswith(b'"'):
            raw = re.sub(rb"\\(.)", rb"\1", raw[1:-1])
        params[m.group(1).lower()] = raw
    return kind, params


def _entity(head: bytes, body: bytes, default_type: bytes, depth: int) -> bytes:
    if depth > MAX_DEPTH:
        raise DowngradeError("MIME nesting too deep to convert to 7 bits")
    if not has_8bit(body):
        return head + CRLF + body if head or body else b""
    fields = _fields(head)
    kind, params = _content_type(_header(fields, b"content-type"), default_type)
    if kind.startswith(b"multipart/") and params.get(b"boundary"):
        child = b"message/rfc822" if kind == b"multipart/digest" else b"text/plain"
        return head + CRLF + _multipart(body, params[b"boundary"], child, depth)
    if kind in (b"message/rfc822", b"message/global"):
        inner_head, inner_body = _split(body)
        converted = _entity(inner_head, inner_body, b"text/plain", depth + 1)
        return _set_encoding(head, b"7bit") + CRLF + converted
    if kind.startswith(b"text/"):
        return _set_encoding(head, b"quoted-printable") + CRLF + _quoted_printable(body)
    return _set_encoding(head, b"base64") + CRLF + _base64(body)


def _multipart(body: bytes, boundary: bytes, child_type: bytes, depth: int) -> bytes:
    """Convert each part between ``--boundary`` lines; preamble and
    epilogue stay as they are."""
    delimiter = b"--" + boundary
    lines = body.split(CRLF)
    out: list[bytes] = []
    part: list[bytes] | None = None
    closed = False
    for line in lines:
        stripped = line.rstrip(b" \t")
        if not closed and stripped in (delimiter, delimiter + b"--"):
            if part is not None:
                out.append(_part(part, child_type, depth))
            out.append(line)
            part = []
            if stripped.endswith(b"--") and stripped != delimiter:
                closed = True
                part = None
            continue
        if part is None:
            out.append(line)
        else:
            part.append(line)
    if part is not None:
        out.append(_part(part, child_type, depth))
    return CRLF.join(out)


def _part(lines: list[bytes], default_type: bytes, depth: int) -> bytes:
    """One body part (the CRLF before the next delimiter is not its own)."""
    text = CRLF.join(lines)
    if not has_8bit(text) or not (text.startswith(CRLF) or b"\r\n\r\n" in text):
        return text  # nothing to convert, or only header fields
    head, body = _split(text)
    return _entity(head, body, default_type, depth + 1)


def _set_encoding(head: bytes, encoding: bytes) -> bytes:
    """``head`` with its Content-Transfer-Encoding field (folded lines
    included) replaced by ``encoding``."""
    lines = head.split(CRLF)
    out: list[bytes] = []
    skipping = False
    for line in lines:
        if line[:1] in (b" ", b"\t") and skipping:
            continue
        skipping = line.lower().startswith(b"content-transfer-encoding:")
        if not skipping:
            out.append(line)
    while out and out[-1] == b"":
        out.pop()
    out.append(b"Content-Transfer-Encoding: " + encoding)
    return CRLF.join(out) + CRLF


def _quoted_printable(body: bytes) -> bytes:
    """RFC 2045 6.7 per line, keeping the CRLF line breaks."""
    out = []
    for line in body.split(CRLF):
        encoded = binascii.b2a_qp(line, quotetabs=False, istext=False, header=False)
        # Soft line breaks come out as "=\n": make them CRLF.
        out.append(encoded.replace(b"=\n", b"=\r\n"))
    return CRLF.join(out)


def _base64(body: bytes) -> bytes:
    encoded = base64.encodebytes(body).replace(b"\n", CRLF)
    # Keep the body's own ending: a part's last CRLF belongs to the delimiter.
    return encoded if body.endswith(CRLF) else encoded[:-2]
