"""Postfix match lists: the "list of patterns" parameters.

Input: the elements of a list parameter, already split and with ``/file``
elements expanded by the configuration layer: mydestination, relay_domains,
... for :class:`DomainList`; mynetworks and the like for :class:`NetworkList`.
Output: a precompiled matcher whose ``matches`` answers for one domain or one
client address.

As Postfix match_list: elements are tried in order and the first that
matches decides; ``!pattern`` makes that decision "no"; when no element
matches the answer is "no".  Matching is case-insensitive.  A ``type:table``
element matches when the table has the key, whatever its value.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from mta.tables import TABLE_TYPES, open_table
from mta.tables.base import WHITESPACE, LookupTable, TableError, accepts_partial_keys
from mta.tables.cidr import address_key, parse_address_pattern
from mta.tables.search import domain_keys

TableOpener = Callable[[str], LookupTable]

_TABLE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*:")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _negation(element: str) -> tuple[bool, str]:
    """(decision when the pattern matches, the pattern without ``!``s)."""
    result = True
    pattern = element.strip(WHITESPACE)
    while pattern.startswith("!"):
        result = not result
        pattern = pattern[1:].lstrip(WHITESPACE)
    if not pattern:
        raise TableError(f'empty pattern in "{element}"')
    if pattern.startswith("/"):
        raise TableError(f'"{pattern}": a /file element must be expanded by the caller')
    return result, pattern


def _default_opener(base_dir: Path) -> TableOpener:
    return lambda spec: open_table(spec, base_dir=base_dir)


# -- domains ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _DomainPatterns:
    """Consecutive literal patterns with the same decision; the order among
    them cannot change the answer, so they are sets."""

    result: bool
    exact: frozenset[str]
    parents: frozenset[str]  # names whose subdomains match


@dataclass(frozen=True, slots=True)
class _DomainTable:
    result: bool
    table: LookupTable
    partial: bool


class DomainList:
    """A domain match list (mydestination, relay_domains, ...).

    ``example.com`` matches that domain, and its subdomains too when
    ``parent_matches_subdomains`` (the parameter is listed in Postfix's
    ``parent_domain_matches_subdomains``); ``.example.com`` matches the
    subdomains only; a ``type:table`` is asked for the domain and, unless it
    is a pattern table, its parents (or ``.parent`` forms).  Trailing dots
    are ignored.
    """

    __slots__ = ("_matchers", "elements", "parent_matches_subdomains")

    def __init__(
        self,
        elements: Iterable[str],
        *,
        parent_matches_subdomains: bool,
        base_dir: Path,
        opener: TableOpener | None = None,
    ) -> None:
        self.elements = tuple(e for e in elements if e.strip(WHITESPACE))
        self.parent_matches_subdomains = parent_matches_subdomains
        open_spec = opener or _default_opener(base_dir)
        matchers: list[_DomainPatterns | _DomainTable] = []
        exact: set[str] = set()
        parents: set[str] = set()
        current: bool | None = None

        def flush() -> None:
            if current is not None and (exact or parents):
                matchers.append(_DomainPatterns(current, frozenset(exact), frozenset(parents)))
            exact.clear()
            parents.clear()

        for element in self.elements:
            result, pattern = _negation(element)
            if not pattern.startswith("[") and ":" in pattern:
                flush()
                current = None
                table = open_spec(pattern)
                matchers.append(_DomainTable(result, table, accepts_partial_keys(table)))
                continue
            if result is not current:
                flush()
                current = result
            name = pattern.casefold().rstrip(".")
            if name.startswith("."):
                if not name.strip("."):
                    raise TableError(f'bad domain pattern "{pattern}"')
                parents.add(name[1:])
            elif not name:
                raise TableError(f'bad domain pattern "{pattern}"')
            else:
                exact.add(name)
                if parent_matches_subdomains:
                    parents.add(name)
        flush()
        self._matchers = tuple(matchers)

    def matches(self, domain: str) -> bool:
        """Whether ``domain`` is in the list."""
        name = domain.casefold().rstrip(".")
        if not name:
            return False
        ancestors: list[str] | None = None
        for matcher in self._matchers:
            if isinstance(matcher, _DomainPatterns):
                if name in matcher.exact:
                    return matcher.result
                if matcher.parents:
                    if ancestors is None:
                        ancestors = _ancestors(name)
                    if any(a in matcher.parents for a in ancestors):
                        return matcher.result
            else:
                keys = domain_keys(name, self.parent_matches_subdomains, partial=matcher.partial)
                if any(matcher.table.lookup(key) is not None for key in keys):
                    return matcher.result
        return False

    def __repr__(self) -> str:
        return f"DomainList({list(self.elements)!r})"


def _ancestors(name: str) -> list[str]:
    """``a.b.c`` -> ``["b.c", "c"]``."""
    out: list[str] = []
    dot = name.find(".")
    while dot >= 0:
        out.append(name[dot + 1 :])
        dot = name.find(".", dot + 1)
    return out


# -- networks -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Network:
    result: bool
    version: int
    network: int
    mask: int


@dataclass(frozen=True, slots=True)
class _NetworkTable:
    result: bool
    table: LookupTable


class NetworkList:
    """A network match list (mynetworks, ...): ``192.0.2.1``,
    ``192.0.2.0/24``, ``[2001:db8::]/32`` or ``2001:db8::/32``, and
    ``type:table`` elements that are asked for the client address.

    Host names and domains are not supported here (they would need DNS for
    every session); they are refused at construction.  An IPv4-mapped IPv6
    client (``::ffff:192.0.2.1``) matches IPv4 networks.
    """

    __slots__ = ("_entries", "elements")

    def __init__(
        self,
        elements: Iterable[str],
        *,
        base_dir: Path,
        opener: TableOpener | None = None,
    ) -> None:
        self.elements = tuple(e for e in elements if e.strip(WHITESPACE))
        open_spec = opener or _default_opener(base_dir)
        entries: list[_Network | _NetworkTable] = []
        for element in self.elements:
            result, pattern = _negation(element)
            try:
                network = parse_address_pattern(pattern)
            except ValueError as exc:
                if _is_table(pattern):
                    entries.append(_NetworkTable(result, open_spec(pattern)))
                    continue
                if _looks_numeric(pattern):
                    raise TableError(str(exc)) from None
                raise TableError(
                    f'"{pattern}": host names and domains are not supported in a network '
                    "list; use an address, network/prefix or type:table"
                ) from None
            entries.append(
                _Network(
                    result,
                    network.version,
                    int(network.network_address),
                    int(network.netmask),
                )
            )
        self._entries = tuple(entries)

    def matches(self, ip: str) -> bool:
        """Whether the client address ``ip`` is in the list; a string that
        is not an address matches nothing."""
        parsed = address_key(ip)
        if parsed is None:
            return False
        version, value = parsed
        for entry in self._entries:
            if isinstance(entry, _Network):
                if entry.version == version and value & entry.mask == entry.network:
                    return entry.result
            elif entry.table.lookup(_address_text(version, value)) is not None:
                return entry.result
        return False

    def __repr__(self) -> str:
        return f"NetworkList({list(self.elements)!r})"


def _address_text(version: int, value: int) -> str:
    if version == 4:
        return str(ipaddress.IPv4Address(value))
    return str(ipaddress.IPv6Address(value))


def _is_table(pattern: str) -> bool:
    # "fe80::1" also has the form word:rest; a table type is a registered
    # name, or at least not all hex digits.
    if pattern.startswith("[") or not _TABLE_RE.match(pattern):
        return False
    kind = pattern.partition(":")[0]
    return kind in TABLE_TYPES or not _HEX_DIGITS.issuperset(kind)


def _looks_numeric(pattern: str) -> bool:
    # Meant as an address: IPv6-like (a colon but no table type), or digits
    # and dots only.
    if ":" in pattern:
        return True
    return any(ch.isdigit() for ch in pattern) and all(ch in "0123456789./[]" for ch in pattern)
