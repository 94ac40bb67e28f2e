"""``mta postmap``: Postfix's postmap for mta's lookup tables.

Job: parse postmap's flags, open the tables named on the command line and
query, list or check them; turn every failure into one line on stderr and
an exit code.  mta reads table source files directly (no ``.db`` to build),
so ``postmap FILE`` only checks that FILE is a valid table.

Inputs: the arguments after ``postmap``; standard input for ``-q -``.
Outputs: values on stdout, warnings and errors on stderr, the exit code.

    postmap -q KEY [type:]name ...     the value of KEY in the first table that
                                       has it; exit 1 when none has it
    postmap -q - [type:]name ...       read keys from stdin, print "key<TAB>value"
                                       for each key found
    postmap -s [type:]name ...         print every "key<TAB>value" of
                                       fixed-string tables
    postmap [type:]name ...            check the tables (nothing to compile)

A name without ``type:`` is ``hash:`` (Postfix's default_database_type).
Relative file names resolve against the current directory, as postmap's do.
As in Postfix, ``-q`` looks up exactly the key given: no access(5) search
order, no parent domains.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

from mta.tables import LookupTable, TableError, open_table


class _UsageError(Exception):
    """A command line that postmap does not accept."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


def _parser() -> _Parser:
    parser = _Parser(prog="mta postmap", add_help=False, description=__doc__)
    parser.add_argument("--help", action="help", help="show this help and exit")
    parser.add_argument("-q", dest="query", metavar="KEY", help='look up KEY ("-": keys on stdin)')
    parser.add_argument("-s", dest="dump", action="store_true", help="print all entries")
    parser.add_argument("tables", nargs="+", metavar="[type:]name")
    return parser


def _spec(name: str) -> str:
    kind, sep, _ = name.partition(":")
    if sep and kind and "/" not in kind:
        return name
    return f"hash:{name}"


def _open_all(names: list[str], base_dir: Path) -> list[LookupTable]:
    tables = []
    for name in names:
        table = open_table(_spec(name), base_dir=base_dir)
        for warning in getattr(table, "warnings", ()):
            print(f"mta postmap: warning: {warning}", file=sys.stderr)
        tables.append(table)
    return tables


def _first(tables: list[LookupTable], key: str) -> str | None:
    for table in tables:
        value = table.lookup(key)
        if value is not None:
            return value
    return None


def run(args: list[str], *, base_dir: Path | None = None) -> int:
    """Run ``postmap`` with ``args``; returns the exit code."""
    try:
        options = _parser().parse_args(args)
    except _UsageError as e:
        print(f"mta postmap: {e}", file=sys.stderr)
        return 2
    if options.query is not None and options.dump:
        print("mta postmap: -q and -s cannot be used together", file=sys.stderr)
        return 2
    try:
        tables = _open_all(options.tables, base_dir or Path.cwd())
    except TableError as e:
        print(f"mta postmap: fatal: {e}", file=sys.stderr)
        return 1
    if options.query == "-":
        found = 0
        for line in sys.stdin:
            key = line.strip()
            if not key:
                continue
            value = _first(tables, key)
            if value is not None:
                print(f"{key}\t{value}")
                found += 1
        return 0 if found else 1
    if options.query is not None:
        value = _first(tables, options.query)
        if value is None:
            return 1
        print(value)
        return 0
    if options.dump:
        for table in tables:
            entries = getattr(table, "entries", None)
            if not isinstance(entries, Mapping):
                print(
                    f"mta postmap: fatal: {table.spec}: table does not support sequential access",
                    file=sys.stderr,
                )
                return 1
            for key, value in entries.items():
                print(f"{key}\t{value}")
    return 0
