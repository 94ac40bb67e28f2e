"""``unionmap:{...}`` and ``pipemap:{...}``: tables made of other tables (Postfix 3.0).

Input: the part after the type, a braced list of table specs separated by
commas and/or white space (``unionmap:{hash:/etc/a, inline:{x=y}}``), and
the directory that relative file names resolve against.
Output: a :class:`UnionTable` or :class:`PipeTable`.

* ``unionmap`` asks every table and joins the results that were found
  with a comma, in table order; not found when no table has the key.
* ``pipemap`` asks the first table, uses its result as the key for the
  second, and so on; not found as soon as one table has no answer.

Whether the search order may try partial keys (parent domains,
``user@``) follows the members: a union takes them only when all its
tables do, a pipe when its first table does.
"""

from __future__ import annotations

from pathlib import Path

from mta.tables.base import LookupTable, TableError, accepts_partial_keys
from mta.tables.inline import split_elements, strip_braces


def _members(kind: str, name: str, base_dir: Path) -> tuple[LookupTable, ...]:
    from mta.tables import open_table  # the registry imports this module

    body = strip_braces(name)
    if body is None:
        raise TableError(f'bad syntax: "{kind}:{name}"; need "{kind}:{{type:name...}}"')
    specs = list(split_elements(body))
    if not specs:
        raise TableError(f'empty table list: "{kind}:{name}"')
    return tuple(open_table(spec, base_dir=base_dir) for spec in specs)


class UnionTable:
    """Every member's result for a key, joined with commas."""

    __slots__ = ("_members", "_spec", "partial_keys")

    def __init__(self, spec: str, members: tuple[LookupTable, ...]) -> None:
        self._spec = spec
        self._members = members
        self.partial_keys = all(accepts_partial_keys(t) for t in members)

    @property
    def spec(self) -> str:
        return self._spec

    @property
    def members(self) -> tuple[LookupTable, ...]:
        return self._members

    def lookup(self, key: str) -> str | None:
        found = [v for v in (t.lookup(key) for t in self._members) if v is not None]
        return ",".join(found) if found else None

    def __repr__(self) -> str:
        return f"<UnionTable {self._spec}>"


class PipeTable:
    """Each member's result is the next member's key."""

    __slots__ = ("_members", "_spec", "partial_keys")

    def __init__(self, spec: str, members: tuple[LookupTable, ...]) -> None:
        self._spec = spec
        self._members = members
        self.partial_keys = accepts_partial_keys(members[0])

    @property
    def spec(self) -> str:
        return self._spec

    @property
    def members(self) -> tuple[LookupTable, ...]:
        return self._members

    def lookup(self, key: str) -> str | None:
        value: str | None = key
        for table in self._members:
            assert value is not None
            value = table.lookup(value)
            if value is None:
                return None
        return value

    def __repr__(self) -> str:
        return f"<PipeTable {self._spec}>"


def open_unionmap(spec: str, name: str, base_dir: Path) -> UnionTable:
    """Registry opener for ``unionmap:{...}``."""
    return UnionTable(spec, _members("unionmap", name, base_dir))


def open_pipemap(spec: str, name: str, base_dir: Path) -> PipeTable:
    """Registry opener for ``pipemap:{...}``."""
    return PipeTable(spec, _members("pipemap", name, base_dir))
