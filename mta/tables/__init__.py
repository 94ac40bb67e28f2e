"""Lookup tables: a ``type:name`` string becomes a loaded :class:`LookupTable`.

Input: a table spec as written in main.cf (``hash:/etc/mta/access``,
``cidr:clients.cidr``, ``regexp:header_checks``, ``yaml:access.yaml``,
``unionmap:{...}``, ``inline:{a=b}``, ``static:OK``) and the directory that
relative file names resolve against (the one that holds main.cf).
Output: an immutable table read completely at open; a reload opens it again,
so edits apply.  Problems raise :class:`TableError`.

One module per type; :data:`TABLE_TYPES` maps the type to its opener, so a
new type is one entry.  Neighbours: ``matchlist`` (mynetworks,
mydestination, ...) and ``search`` (access(5) search order) build on this.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mta.tables.base import LookupTable, TableError, accepts_partial_keys
from mta.tables.cidr import open_cidr
from mta.tables.composite import open_pipemap, open_unionmap
from mta.tables.inline import open_inline
from mta.tables.redis import open_redis
from mta.tables.regexp import open_pcre, open_regexp
from mta.tables.static import open_static
from mta.tables.texthash import open_indexed, open_texthash
from mta.tables.yamltable import open_yaml

__all__ = [
    "TABLE_TYPES",
    "LookupTable",
    "Opener",
    "TableCache",
    "TableError",
    "accepts_partial_keys",
    "open_table",
]

# An opener gets the whole spec (for messages and ``table.spec``), the name
# after "type:", and the base directory for relative file names.
Opener = Callable[[str, str, Path], LookupTable]


def _open_proxy(spec: str, name: str, base_dir: Path) -> LookupTable:
    # Postfix's proxymap shares tables between processes; in one process
    # "proxy:hash:FILE" is simply "hash:FILE".
    return open_table(name, base_dir=base_dir)


TABLE_TYPES: dict[str, Opener] = {
    "texthash": open_texthash,
    "hash": open_indexed,
    "btree": open_indexed,
    "lmdb": open_indexed,
    "cdb": open_indexed,
    "dbm": open_indexed,
    "sdbm": open_indexed,
    "inline": open_inline,
    "static": open_static,
    "cidr": open_cidr,
    "regexp": open_regexp,
    "pcre": open_pcre,
    "yaml": open_yaml,
    "unionmap": open_unionmap,
    "pipemap": open_pipemap,
    "proxy": _open_proxy,
    "redis": open_redis,
}


def open_table(spec: str, *, base_dir: Path) -> LookupTable:
    """Open the table ``spec`` (``type:name``); relative file names resolve
    against ``base_dir``.  Raises TableError."""
    kind, sep, name = spec.partition(":")
    if not sep or not kind:
        raise TableError(f'bad lookup table "{spec}": need type:name')
    opener = TABLE_TYPES.get(kind)
    if opener is None:
        raise TableError(f"unsupported lookup table type: {kind}")
    return opener(spec, name, base_dir)


class TableCache:
    """Opens each spec once for one configuration: parameters that name the
    same table share it.  A reload makes a new cache, so tables are re-read."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self._tables: dict[str, LookupTable] = {}

    def open(self, spec: str) -> LookupTable:
        """The table for ``spec``, opened on first use."""
        table = self._tables.get(spec)
        if table is None:
            table = self._tables[spec] = open_table(spec, base_dir=self.base_dir)
        return table

    def __len__(self) -> int:
        return len(self._tables)
