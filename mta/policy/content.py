"""header_checks, mime_header_checks, nested_header_checks and body_checks.

Input: the tables of those parameters (:class:`ContentChecks`) and the
message as it arrives, in chunks of any size (:meth:`ContentFilter.feed`,
then :meth:`ContentFilter.finish`).
Output: the bytes to queue — the message with headers and lines removed,
replaced or prepended as the tables say — and a :class:`ContentResult`:
reject or defer (with the reply), discard, hold, redirect, filter, bcc, and
one :class:`ContentNote` per action for the mail log.

Semantics of Postfix header_checks(5) and cleanup(8):

* Headers are inspected one *logical* header at a time: a header and its
  continuation lines are joined with ``\\n`` (the CR of CRLF is not part
  of the key), so a pattern can match across the folding.  Body lines are
  inspected one at a time, without their line end.
* Which table: a MIME header (Content-*, MIME-Version) at any level and
  every header of a multipart body part goes to ``mime_header_checks``; the
  other headers of the message to ``header_checks``; those of an attached
  message (message/rfc822) to ``nested_header_checks``; body lines —
  including MIME boundaries — to ``body_checks``, at most
  ``body_checks_size_limit`` octets per body part.
* In each table list, the first table that has an answer decides.
  Actions: REJECT, DEFER (the whole message; inspection stops), DISCARD
  (say 250, drop it; stops), HOLD, REDIRECT, FILTER, BCC (the message),
  WARN, INFO (log), IGNORE (delete the header or line), REPLACE (put the
  text in its place), PREPEND (insert the text before it), DUNNO and OK
  (nothing).  An unknown action is logged and ignored, as cleanup does.

The filter is a pure, streaming state machine: no I/O, no clock.  Data
passes through untouched at full speed once the headers are done when no
table needs to look at the body.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from mta.reply import Reply
from mta.tables import LookupTable

MIME_HEADERS = frozenset(
    {
        "content-description",
        "content-disposition",
        "content-id",
        "content-transfer-encoding",
        "content-type",
        "mime-version",
    }
)

_HEADER_NAME = re.compile(rb"^[!-9;-~]+[ \t]*:")
_BOUNDARY = re.compile(r'boundary\s*=\s*(?:"([^"]*)"|([^\s;]+))', re.IGNORECASE)
_DSN = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:[ \t]+|$)")
_MAX_HEADER = 102400  # header_size_limit: a longer logical header is cut


@dataclass(frozen=True)
class ContentChecks:
    """The tables of the content-inspection parameters (empty: none)."""

    header_checks: tuple[LookupTable, ...] = ()
    mime_header_checks: tuple[LookupTable, ...] = ()
    nested_header_checks: tuple[LookupTable, ...] = ()
    body_checks: tuple[LookupTable, ...] = ()
    body_checks_size_limit: int = 51200
    disable_mime_input_processing: bool = False

    @property
    def active(self) -> bool:
        return bool(
            self.header_checks
            or self.mime_header_checks
            or self.nested_header_checks
            or self.body_checks
        )


@dataclass(frozen=True)
class ContentNote:
    """One log event: ``whatsup`` (reject, warning, info, hold, discard,
    redirect, filter, bcc, replace, ...), ``what`` ("header Subject: x" or
    "body some line") and the optional text of the action."""

    whatsup: str
    what: str
    text: str = ""
    table: str = ""


@dataclass
class ContentResult:
    """What the inspection decided about the message."""

    action: Literal["accept", "reject", "discard"] = "accept"
    reply: Reply | None = None  # with "reject": the 4xx or 5xx reply
    hold: str | None = None
    redirect: str | None = None
    filter: str | None = None
    bcc: list[str] = field(default_factory=list)
    notes: list[ContentNote] = field(default_factory=list)
    rule: str = ""  # the table whose answer rejected or discarded


class _Part:
    """One level of MIME nesting in the body."""

    def __init__(self, boundary: str | None, nested: bool) -> None:
        self.boundary = boundary
        self.nested = nested


class ContentFilter:
    """Inspects one message as it streams in."""

    def __init__(self, checks: ContentChecks) -> None:
        self.checks = checks
        self.result = ContentResult()
        self._partial = b""  # an incomplete line
        self._header: list[bytes] = []  # the logical header being collected
        self._in_headers = True
        self._header_class = "primary"  # primary, multipart, nested
        self._mime = not checks.disable_mime_input_processing
        # MIME state: the boundaries of enclosing multiparts, innermost last.
        self._boundaries: list[str] = []
        self._pending_boundary: str | None = None  # from this part's Content-Type
        self._pending_nested = False  # this part is message/rfc822
        self._segment_bytes = 0
        self._done = False  # rejected or discarded: stop inspecting

    # -- streaming --------------------------------------------------------------------
    def feed(self, data: bytes) -> bytes:
        """Inspect a chunk; returns what to queue in its place."""
        if self._done:
            return b""
        if self._fast_path():
            return data
        buf = self._partial + data
        lines = buf.split(b"\n")
        self._partial = lines.pop()
        out: list[bytes] = []
        for i, line in enumerate(lines):
            out.append(self._line(line + b"\n"))
            if self._done:
                return b""
            if self._fast_path():
                out.append(b"\n".join(lines[i + 1 :]) + (b"\n" if i + 1 < len(lines) else b""))
                out.append(self._partial)
                self._partial = b""
                break
        return b"".join(out)

    def finish(self) -> bytes:
        """The end of the message: inspect what is left."""
        if self._done:
            return b""
        out = b""
        if self._partial:
            partial, self._partial = self._partial, b""
            out += self._line(partial)
        if self._in_headers and self._header:
            out += self._flush_header()
        return b"" if self._done else out

    def _fast_path(self) -> bool:
        """Past the primary headers with nothing left to look at."""
        if self._in_headers or self._header_class != "primary":
            return False
        if self.checks.body_checks:
            return False
        mime_tables = self.checks.mime_header_checks or self.checks.nested_header_checks
        return not (self._mime and mime_tables and (self._boundaries or self._pending_nested))

    # -- lines -----------------------------------------------------------------------
    def _line(self, line: bytes) -> bytes:
        if self._in_headers:
            return self._header_line(line)
        return self._body_line(line)

    def _header_line(self, line: bytes) -> bytes:
        bare = line.rstrip(b"\r\n")
        if bare[:1] in (b" ", b"\t") and self._header:
            if sum(len(x) for x in self._header) < _MAX_HEADER:
                self._header.append(line)
            return b""
        out = self._flush_header() if self._header else b""
        if self._done:
            return b""
        if _HEADER_NAME.match(bare):
            self._header.append(line)
            return out
        # An empty line, or a line that is no header, ends the headers.
        self._end_of_headers()
        if bare == b"":
            return out + line
        return out + self._body_line(line)

    def _end_of_headers(self) -> None:
        self._in_headers = False
        self._segment_bytes = 0
        if not self._mime:
            return
        if self._pending_nested:
            # message/rfc822: the body is a message with headers of its own.
            self._pending_nested = False
            self._in_headers = True
            self._header_class = "nested"
            return
        if self._pending_boundary is not None:
            self._boundaries.append(self._pending_boundary)
            self._pending_boundary = None

    def _flush_header(self) -> bytes:
        raw = b"".join(self._header)
        self._header = []
        text = _text(raw).replace("\r\n", "\n").rstrip("\n")
        name = text.split(":", 1)[0].strip().lower()
        if self._mime:
            self._learn_mime(name, text)
        if name in MIME_HEADERS or self._header_class == "multipart":
            tables = self.checks.mime_header_checks
        elif self._header_class == "nested":
            tables = self.checks.nested_header_checks
        else:
            tables = self.checks.header_checks
        return self._apply(tables, text, raw, kind="header")

    def _learn_mime(self, name: str, text: str) -> None:
        if name != "content-type":
            return
        value = text.split(":", 1)[1].strip().lower() if ":" in text else ""
        if value.startswith("multipart/"):
            m = _BOUNDARY.search(text)
            if m is not None:
                self._pending_boundary = m.group(1) if m.group(1) is not None else m.group(2)
        elif value.startswith("message/rfc822"):
            self._pending_nested = True

    def _body_line(self, line: bytes) -> bytes:
        bare = line.rstrip(b"\r\n")
        if self._mime and self._boundaries and bare.startswith(b"--"):
            marker = _text(bare[2:]).rstrip()
            for depth in range(len(self._boundaries) - 1, -1, -1):
                boundary = self._boundaries[depth]
                if marker == boundary or marker == boundary + "--":
                    del self._boundaries[depth + 1 :]
                    if marker == boundary + "--":
                        self._boundaries.pop()
                    else:
                        # A body part: its headers come next.
                        self._in_headers = True
                        self._header_class = "multipart"
                        self._pending_boundary = None
                        self._pending_nested = False
                    out = self._check_body(line, bare)
                    return out
        return self._check_body(line, bare)

    def _check_body(self, line: bytes, bare: bytes) -> bytes:
        if not self.checks.body_checks:
            return line
        if self._segment_bytes >= self.checks.body_checks_size_limit > 0:
            return line
        self._segment_bytes += len(line)
        return self._apply(self.checks.body_checks, _text(bare), line, kind="body")

    # -- actions ------------------------------------------------------------------------
    def _apply(self, tables: Sequence[LookupTable], key: str, raw: bytes, kind: str) -> bytes:
        for table in tables:
            value = table.lookup(key)
            if value is not None:
                return self._action(table.spec, value, key, raw, kind)
        return raw

    def _action(self, table: str, value: str, key: str, raw: bytes, kind: str) -> bytes:
        word, _, text = value.strip().partition(" ")
        if "\t" in word:
            word, _, more = word.partition("\t")
            text = f"{more} {text}"
        text = text.strip(" \t")
        cmd = word.upper()
        what = f"{kind} {key}".replace("\n", " ")[:200]
        r = self.result
        eol = b"\r\n" if raw.endswith(b"\r\n") else b"\n"

        def note(whatsup: str, extra: str = "") -> None:
            r.notes.append(ContentNote(whatsup, what, extra, table))

        if cmd in ("REJECT", "DEFER"):
            default = "5.7.1" if cmd == "REJECT" else "4.7.1"
            code = 550 if cmd == "REJECT" else 450
            dsn, reason = _dsn_split(default, text)
            reason = reason or (
                "message content rejected" if cmd == "REJECT" else "try again later"
            )
            r.action = "reject"
            r.reply = Reply.make(code, f"{code // 100}{dsn[1:]}", reason)
            r.rule = table
            note("reject", r.reply.one_line())
            self._done = True
            return b""
        if cmd == "DISCARD":
            r.action = "discard"
            r.rule = table
            note("discard", text)
            self._done = True
            return b""
        if cmd in ("DUNNO", "OK"):
            return raw
        if cmd in ("WARN", "INFO"):
            note("warning" if cmd == "WARN" else "info", text)
            return raw
        if cmd == "HOLD":
            if r.hold is None:
                r.hold = text or f"{kind} triggers HOLD action"
                note("hold", text)
            return raw
        if cmd in ("REDIRECT", "BCC"):
            if "@" not in text:
                note("warning", f"{table}: {cmd} requires user@domain target")
                return raw
            if cmd == "REDIRECT":
                r.redirect = text
            elif text not in r.bcc:
                r.bcc.append(text)
            note(cmd.lower(), text)
            return raw
        if cmd == "FILTER":
            if ":" not in text:
                note("warning", f"{table}: FILTER requires transport:destination")
                return raw
            r.filter = text
            note("filter", text)
            return raw
        if cmd == "IGNORE":
            return b""
        if cmd in ("REPLACE", "PREPEND"):
            if kind == "header" and not _HEADER_NAME.match(text.encode("utf-8", "surrogateescape")):
                note("warning", f"{table}: {cmd} action needs a header: text, not '{text}'")
                return raw
            new = text.encode("utf-8", "surrogateescape") + eol
            if cmd == "REPLACE":
                note("replace", text)
                return new
            note("prepend", text)
            return new + raw
        note("warning", f"{table}: unknown action: {value}")
        return raw


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _dsn_split(default: str, text: str) -> tuple[str, str]:
    m = _DSN.match(text)
    if m is None:
        return default, text
    return f"{m.group(1)}.{m.group(2)}.{m.group(3)}", text[m.end() :]
