"""What every lookup table shares: the LookupTable seam, TableError, file reading.

Inputs: table file bytes and a base directory for relative names.
Outputs: :class:`LookupTable` (the Protocol every ``type:name`` table keeps),
:class:`TableError` (a configuration error naming file and line), the
postmap(1) *logical line* reader used by the file formats (texthash, cidr),
and :func:`accepts_partial_keys`, which tells the search-order functions
whether a table answers partial keys (parent domains, ``user@``) or only the
full key, as Postfix distinguishes fixed-string from pattern tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

# Postfix uses the C locale's isspace(): ASCII white space only, never the
# Unicode white space that str.split() and str.strip() know.
WHITESPACE = " \t\n\r\f\v"

# Table types whose keys are patterns.  Postfix queries them only with the
# full lookup key (smtpd_check.c: PARTIAL lookups need DICT_FLAG_FIXED), so a
# regexp never sees "example.com" split off "user@example.com".
PATTERN_TYPES = frozenset({"cidr", "regexp", "pcre"})


class TableError(Exception):
    """A lookup table that cannot be used: bad syntax, unknown type, I/O.

    ``file`` and ``line`` locate the problem when it has a place in a file;
    ``str()`` reads like a compiler message: ``/etc/mta/access:3: message``.
    """

    def __init__(self, message: str, file: str | None = None, line: int | None = None) -> None:
        super().__init__(message, file, line)
        self.message = message
        self.file = file
        self.line = line

    def __str__(self) -> str:
        if self.file is None:
            return self.message
        if self.line is None:
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}: {self.message}"


@runtime_checkable
class LookupTable(Protocol):
    """A loaded, immutable ``type:name`` table.

    ``lookup`` returns the value for a key, or None when the key is not found.
    Tables are read completely when opened; a reload opens them again.
    """

    @property
    def spec(self) -> str:
        """The ``type:name`` the table was opened as."""
        ...

    def lookup(self, key: str) -> str | None:
        """The value stored for ``key``, or None."""
        ...


def table_type(spec: str) -> str:
    """The type part of ``type:name`` (``proxy:`` is looked through)."""
    kind, _, rest = spec.partition(":")
    if kind == "proxy":
        return table_type(rest)
    return kind


def accepts_partial_keys(table: LookupTable) -> bool:
    """Whether the search order may try partial keys (parent domains,
    ``user@``, address prefixes) on this table: true for fixed-string
    tables, false for pattern tables such as ``cidr:`` and ``regexp:``.
    A table made of other tables says so itself (``partial_keys``)."""
    own = getattr(table, "partial_keys", None)
    if isinstance(own, bool):
        return own
    return table_type(table.spec) not in PATTERN_TYPES


def resolve_path(name: str, base_dir: Path) -> Path:
    """A table file name: absolute as given, else relative to ``base_dir``
    (the directory that holds main.cf)."""
    if not name:
        raise TableError("missing file name")
    path = Path(name)
    return path if path.is_absolute() else base_dir / path


def read_table_file(path: Path) -> bytes:
    """The bytes of a table file; any OS error becomes a TableError."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TableError(f"cannot open: {exc.strerror or exc}", str(path)) from None


@dataclass(frozen=True)
class LogicalLine:
    """One logical line of a table file and the number of its first line."""

    lineno: int
    text: str


def logical_lines(data: bytes, file: str, warnings: list[str]) -> Iterator[LogicalLine]:
    """Split table file bytes into logical lines, as Postfix readllines().

    Empty lines, white-space-only lines and lines whose first non-white-space
    character is ``#`` are ignored, also between a line and its continuation.
    A line that starts with white space continues the logical line before it;
    the pieces are joined without the newline, so the continuation keeps its
    leading white space.  A continuation with nothing to continue, and text
    that is not UTF-8, are skipped with a warning (Postfix does the same).
    """
    pieces: list[bytes] = []
    first = 0

    def finish() -> Iterator[LogicalLine]:
        raw = b"".join(pieces)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            warnings.append(f"{file}:{first}: non-UTF-8 input -- ignoring this line")
            return
        yield LogicalLine(first, text)

    for lineno, line in enumerate(data.split(b"\n"), start=1):
        stripped = line.lstrip(b" \t\r\f\v")
        if not stripped or stripped.startswith(b"#"):
            continue
        if len(stripped) != len(line):
            if pieces:
                pieces.append(line)
            else:
                preview = line[:30].decode("utf-8", "replace")
                warnings.append(
                    f"{file}:{lineno}: logical line must not start with white space: "
                    f'"{preview}" -- ignoring this line'
                )
            continue
        if pieces:
            yield from finish()
        pieces = [line]
        first = lineno
    if pieces:
        yield from finish()


def split_ws(text: str) -> tuple[str, str]:
    """Split at the first ASCII white space: (first word, rest with its
    leading and trailing white space removed)."""
    for i, ch in enumerate(text):
        if ch in WHITESPACE:
            return text[:i], text[i:].strip(WHITESPACE)
    return text, ""
