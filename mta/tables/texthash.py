"""Tables in the postmap(1) input format: ``texthash:``, ``hash:``, ``btree:``, ...

Input: a text file of ``key whitespace value`` lines (postmap(1) "INPUT FILE
FORMAT"): ``#`` comment lines and blank lines are ignored, a line that starts
with white space continues the one before, a key may be written in double
quotes to hold white space (``"a key" value``, Postfix 3.8), keys are folded
to lower case as postmap does by default.
Output: a :class:`TextHashTable` held in memory.

``hash:``, ``btree:``, ``lmdb:``, ``cdb:``, ``dbm:`` and ``sdbm:`` read the
same text directly instead of a database compiled by postmap, so there is no
compile step and edits apply on reload.  A name written with the database
suffix (``hash:/etc/mta/access.db``) falls back to the text file beside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType

from mta.tables.base import (
    WHITESPACE,
    TableError,
    logical_lines,
    read_table_file,
    resolve_path,
    split_ws,
)

# The files postmap would have compiled for each type; used to find the
# source text when a configuration names the compiled file.
DATABASE_SUFFIXES: Mapping[str, tuple[str, ...]] = {
    "hash": (".db",),
    "btree": (".db",),
    "lmdb": (".lmdb", ".db"),
    "cdb": (".cdb", ".db"),
    "dbm": (".dir", ".pag", ".db"),
    "sdbm": (".dir", ".pag", ".db"),
}


class TextHashTable:
    """An immutable in-memory table of case-folded keys."""

    __slots__ = ("_entries", "_spec", "_warnings")

    def __init__(self, spec: str, entries: Mapping[str, str], warnings: Iterable[str] = ()):
        self._spec = spec
        self._entries = MappingProxyType({k.casefold(): v for k, v in entries.items()})
        self._warnings = tuple(warnings)

    @classmethod
    def from_bytes(cls, spec: str, data: bytes, *, file: str) -> TextHashTable:
        """Parse postmap input text; ``file`` names it in messages."""
        warnings: list[str] = []
        entries = parse_entries(data, file, warnings)
        return cls(spec, entries, warnings)

    @property
    def spec(self) -> str:
        return self._spec

    @property
    def warnings(self) -> tuple[str, ...]:
        """Problems that did not stop loading (duplicate keys, ...)."""
        return self._warnings

    @property
    def entries(self) -> Mapping[str, str]:
        """The folded keys and their values (read-only)."""
        return self._entries

    def lookup(self, key: str) -> str | None:
        return self._entries.get(key.casefold())

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __repr__(self) -> str:
        return f"<TextHashTable {self._spec} ({len(self._entries)} keys)>"


def parse_entries(data: bytes, file: str, warnings: list[str]) -> dict[str, str]:
    """The key/value pairs of postmap input text, keys case-folded.

    A line without a value is an error.  A repeated key keeps its first value
    and is reported in ``warnings``, as postmap reports "duplicate entry".
    """
    entries: dict[str, str] = {}
    for line in logical_lines(data, file, warnings):
        key, value = _split_entry(line.text, file, line.lineno)
        if key.endswith(":"):
            warnings.append(
                f'{file}:{line.lineno}: record is in "key: value" format; is this an alias file?'
            )
        folded = key.casefold()
        if folded in entries:
            warnings.append(f'{file}:{line.lineno}: duplicate entry: "{folded}" -- ignored')
            continue
        entries[folded] = value
    return entries


def _split_entry(text: str, file: str, lineno: int) -> tuple[str, str]:
    if text.startswith('"'):
        key, rest = _quoted_key(text, file, lineno)
        value = rest.strip(WHITESPACE)
    else:
        key, value = split_ws(text)
    if not key:
        raise TableError("empty key", file, lineno)
    if not value:
        raise TableError(f'missing value after key "{key}"', file, lineno)
    return key, value


def _quoted_key(text: str, file: str, lineno: int) -> tuple[str, str]:
    """Parse ``"key with space" rest``: inside the quotes a backslash makes
    the next ``"`` or ``\\`` literal (postmap(1), Postfix 3.8)."""
    out: list[str] = []
    i = 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in '"\\':
            out.append(text[i + 1])
            i += 2
            continue
        if ch == '"':
            rest = text[i + 1 :]
            if rest and rest[0] not in WHITESPACE:
                raise TableError("missing white space after quoted key", file, lineno)
            return "".join(out), rest
        out.append(ch)
        i += 1
    raise TableError("missing closing double quote in key", file, lineno)


def load(spec: str, path: Path) -> TextHashTable:
    """Read and parse one postmap input file."""
    return TextHashTable.from_bytes(spec, read_table_file(path), file=str(path))


def open_texthash(spec: str, name: str, base_dir: Path) -> TextHashTable:
    """Registry opener for ``texthash:FILE``."""
    return load(spec, resolve_path(name, base_dir))


def open_indexed(spec: str, name: str, base_dir: Path) -> TextHashTable:
    """Registry opener for ``hash:FILE`` and the other indexed types: read
    FILE's source text; ``FILE.db`` that does not exist means ``FILE``."""
    kind = spec.partition(":")[0]
    path = resolve_path(name, base_dir)
    if not path.exists():
        for suffix in DATABASE_SUFFIXES.get(kind, ()):
            if path.name.endswith(suffix) and len(path.name) > len(suffix):
                path = path.with_name(path.name[: -len(suffix)])
                break
    return load(spec, path)
