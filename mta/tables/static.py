"""``static:value`` and ``static:{ value with spaces }`` tables.

Input: the part after ``static:``.  Output: a :class:`StaticTable` whose every
lookup returns that value (Postfix dict_static; the braced form is Postfix
3.0 and strips the braces and the white space inside them).
"""

from __future__ import annotations

from pathlib import Path

from mta.tables.base import WHITESPACE, TableError


class StaticTable:
    """A table that answers every key with the same value."""

    __slots__ = ("_spec", "_value")

    def __init__(self, spec: str, value: str) -> None:
        self._spec = spec
        self._value = value

    @property
    def spec(self) -> str:
        return self._spec

    @property
    def value(self) -> str:
        return self._value

    def lookup(self, key: str) -> str | None:
        return self._value

    def __repr__(self) -> str:
        return f"<StaticTable {self._spec}>"


def parse_static(name: str) -> str:
    """The value of ``static:name``: braces around it are removed."""
    if not name.startswith("{"):
        return name
    if not name.endswith("}") or _unbalanced(name[1:-1]):
        raise TableError(f'bad syntax: "static:{name}"; need "static:{{text}}"')
    return name[1:-1].strip(WHITESPACE)


def _unbalanced(text: str) -> bool:
    depth = 0
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                return True
    return depth != 0


def open_static(spec: str, name: str, base_dir: Path) -> StaticTable:
    """Registry opener for ``static:``; ``base_dir`` is not used."""
    return StaticTable(spec, parse_static(name))
