"""Reply: the one type for every SMTP answer, sent or received.

A reply is a three-digit code, an optional RFC 3463 enhanced status and text.
The enhanced status is stored as subject.detail only; its class digit always
comes from the code, so the two can never disagree (RFC 3463 section 2: the
class of the enhanced code matches the class of the basic code).

Used by the server session (answers to clients), the client session (answers
from the next hop), the queue (each recipient's last reply) and bounces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_STATUS_RE = re.compile(r"^[245]\.(\d{1,3})\.(\d{1,3})$")
_DETAIL_RE = re.compile(r"^\d{1,3}\.\d{1,3}$")


@dataclass(frozen=True)
class Reply:
    """An SMTP reply: ``code`` (e.g. 550), ``detail`` ("1.1" of 5.1.1, or "")
    and ``text`` (may hold several lines separated by "\\n")."""

    code: int
    detail: str = ""
    text: str = ""

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"reply code out of range: {self.code}")
        if self.detail and not _DETAIL_RE.match(self.detail):
            raise ValueError(f"bad enhanced status detail: {self.detail!r}")

    # -- construction -------------------------------------------------
    @classmethod
    def make(cls, code: int, status: str | None, text: str) -> Reply:
        """Build from a full enhanced status ("5.1.1"); its class digit is
        replaced by the code's class so that a 4xx never carries "5.x.y"."""
        detail = ""
        if status:
            m = _STATUS_RE.match(status)
            if not m:
                raise ValueError(f"bad enhanced status: {status!r}")
            detail = f"{m.group(1)}.{m.group(2)}"
        return cls(code, detail, text)

    @classmethod
    def parse_text(cls, code: int, text: str) -> Reply:
        """Split a leading enhanced status off a reply's text, as received
        from a peer (``"5.1.1 User unknown"``)."""
        head, _, rest = text.partition(" ")
        m = _STATUS_RE.match(head)
        if m and str(code)[0] == head[0]:
            return cls(code, f"{m.group(1)}.{m.group(2)}", rest)
        return cls(code, "", text)

    # -- views ----------------------------------------------------------
    @property
    def status(self) -> str:
        """The full enhanced status ("5.1.1"), or "" when there is none."""
        return f"{self.code // 100}.{self.detail}" if self.detail else ""

    @property
    def is_positive(self) -> bool:
        return self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def as_transient(self) -> Reply:
        """The 4xx form of a 5xx reply (``soft_bounce``); others unchanged."""
        if not self.is_permanent:
            return self
        return Reply(self.code - 100, self.detail, self.text)

    def with_text(self, text: str) -> Reply:
        return Reply(self.code, self.detail, text)

    def one_line(self) -> str:
        """Code, status and text on one line, for logs and queue listings."""
        text = " ".join(self.text.splitlines())
        parts = [str(self.code)]
        if self.status:
            parts.append(self.status)
        if text:
            parts.append(text)
        return " ".join(parts)

    def to_bytes(self, enhanced: bool = True) -> bytes:
        """Wire form, CRLF-terminated, multi-line per RFC 5321 4.2.1."""
        lines = self.text.split("\n") if self.text else [""]
        prefix = f"{self.status} " if (enhanced and self.status) else ""
        out = []
        last = len(lines) - 1
        for i, line in enumerate(lines):
            sep = " " if i == last else "-"
            body = f"{prefix}{line}".rstrip(" ")
            out.append(f"{self.code}{sep}{body}\r\n" if body else f"{self.code}{sep}\r\n")
        return "".join(out).encode("utf-8", "surrogateescape")

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "status": self.status, "text": self.text}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Reply:
        code = data["code"]
        if not isinstance(code, int):
            raise ValueError("reply code must be an integer")
        status = data.get("status") or None
        text = data.get("text") or ""
        return cls.make(code, str(status) if status else None, str(text))

    def __str__(self) -> str:
        return self.one_line()


# Named replies with RFC 3463 default texts.  Keep them few and obvious.
def ok(text: str = "Ok", detail: str = "0.0") -> Reply:
    return Reply(250, detail, text)


def syntax_error(text: str = "Error: command not recognized") -> Reply:
    return Reply(500, "5.2", text)


def param_error(text: str) -> Reply:
    return Reply(501, "5.4", text)


def bad_sequence(text: str) -> Reply:
    return Reply(503, "5.1", text)


def temp_failure(text: str = "Error: internal error, try again later") -> Reply:
    return Reply(451, "3.0", text)


def service_unavailable(hostname: str, text: str = "Service not available") -> Reply:
    return Reply(421, "3.2", f"{hostname} {text}")
