"""DATA encoder: a message in, its SMTP DATA wire form out.

Input: the message octets in chunks of any size and boundary (as read from
the queue file).  Output: the same message as it must travel after a 354
reply (RFC 5321 4.1.1.4, 4.5.2): every line break CRLF, every line that
starts with "." given one more ".", and the end-of-data mark CRLF "." CRLF.

Queue files already hold CRLF lines, but a bare LF or a bare CR is still
turned into CRLF: RFC 5321 2.3.8 forbids them on the wire and some servers
treat them as line ends while others don't, which is how smuggling works.

The work is done with bulk bytes operations per chunk; the only state kept
between chunks is whether the output is at the start of a line and whether
the previous chunk ended with a CR whose LF may open the next one.
:class:`LineEndings` does the same for BDAT, without the dots.  The 7-bit
downgrade of 8-bit MIME (RFC 6152 for a next hop without 8BITMIME) is in
:mod:`mta.smtp.downgrade`.
"""

from __future__ import annotations

CRLF = b"\r\n"


class LineEndings:
    """Incremental CRLF normaliser for BDAT (RFC 3030): bare CR and bare LF
    become CRLF and the message ends with a line break; no dot-stuffing and
    no end mark, since BDAT counts octets instead.  :class:`DotStuffer` adds
    both for DATA."""

    __slots__ = ("_at_line_start", "_finished", "_pending_cr")

    def __init__(self) -> None:
        # The message starts at the beginning of a line (for DotStuffer: a
        # leading "." is stuffed too).
        self._at_line_start = True
        # A chunk that ends in CR may be the first half of a CRLF; decide
        # when the next chunk (or the end) shows whether LF follows.
        self._pending_cr = False
        self._finished = False

    def feed(self, chunk: bytes) -> bytes:
        """Encode one chunk; returns the wire bytes ready so far."""
        if self._finished:
            raise RuntimeError(f"{type(self).__name__}.feed() after finish()")
        if self._pending_cr:
            chunk = b"\r" + chunk
            self._pending_cr = False
        if chunk.endswith(b"\r"):
            chunk = chunk[:-1]
            self._pending_cr = True
        return self._encode(chunk)

    def finish(self) -> bytes:
        """What is held back, and a final CRLF when the message lacks one
        (for DATA the end mark must start a line, RFC 5321 4.1.1.4)."""
        if self._finished:
            raise RuntimeError(f"{type(self).__name__}.finish() called twice")
        self._finished = True
        out = b""
        if self._pending_cr:
            # A CR at the very end is a bare CR: it becomes a line break.
            self._pending_cr = False
            out = self._encode(b"\r")
        if not self._at_line_start:
            out += CRLF
        return out

    def _encode(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        # Normalise every line break to CRLF: CRLF, then bare CR, then bare LF.
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        chunk = chunk.replace(b"\n", CRLF)
        chunk = self._stuff(chunk)
        self._at_line_start = chunk.endswith(CRLF)
        return chunk

    def _stuff(self, chunk: bytes) -> bytes:
        return chunk


class DotStuffer(LineEndings):
    """Incremental encoder for one message: call :meth:`feed` for each chunk,
    then :meth:`finish` once; concatenated, their results are the DATA wire
    form including the final ".".  The output does not depend on how the
    message was split into chunks."""

    __slots__ = ()

    def finish(self) -> bytes:
        """Flush what is held back and add the end-of-data mark."""
        return super().finish() + b".\r\n"

    def _stuff(self, chunk: bytes) -> bytes:
        # RFC 5321 4.5.2: a line that starts with "." gets one more.
        chunk = chunk.replace(b"\r\n.", b"\r\n..")
        if self._at_line_start and chunk.startswith(b"."):
            chunk = b"." + chunk
        return chunk


def dot_stuff(message: bytes) -> bytes:
    """The DATA wire form of a whole message held in memory (small messages,
    tests); large ones go through :class:`DotStuffer` chunk by chunk."""
    stuffer = DotStuffer()
    return stuffer.feed(message) + stuffer.finish()
