"""``cidr:FILE`` tables: the first rule whose network holds the address wins.

Input: a file in cidr_table(5) format, read with the postmap logical-line
rules (comments, continuation lines)::

    192.0.2.0/24        REJECT
    2001:db8::/32       OK          (or [2001:db8::]/32)
    192.0.2.1           a host address is a /32 (/128)
    !10.0.0.0/8         an address of the same family outside the network
    if 198.51.100.0/24  rules up to the matching endif apply only
    ...                 to addresses inside (``if !net``: outside)
    endif

Output: a :class:`CidrTable` whose ``lookup`` takes an IP address string.
An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``) is matched as the IPv4
address, as Postfix smtpd turns such clients into IPv4 first; a key that is
not an address is not found.  A network written with host bits set is an
error (Postfix: "non-null host address bits").

:func:`parse_address_pattern` is the address/network syntax, shared with the
network match lists (mynetworks).
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from mta.tables.base import TableError, logical_lines, read_table_file, resolve_path, split_ws

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_ADDRESS_CHARS = frozenset("0123456789abcdefABCDEF.:")


def parse_address_pattern(pattern: str) -> Network:
    """Parse ``address``, ``address/prefix``, ``[address]/prefix`` or
    ``[address/prefix]`` (the brackets are optional for IPv6 too).

    Raises ValueError whose text is the diagnostic (as Postfix cidr_match).
    """
    text, prefix_text = pattern, None
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError(f"missing ']' character after \"{pattern}\"")
        text, after = text[1:close], text[close + 1 :]
        if after.startswith("/"):
            prefix_text = after[1:]
        elif after:
            raise ValueError(f'garbage after "[{text}]"')
    if prefix_text is None and "/" in text:
        text, prefix_text = text.split("/", 1)
    address = _parse_address(text)
    if address is None:
        shown = pattern if prefix_text is None else f"{text}/{prefix_text}"
        kind = "address" if prefix_text is None else "net/mask"
        raise ValueError(f'bad {kind} pattern: "{shown}"')
    bits: int = address.max_prefixlen
    if prefix_text is None:
        prefix = bits
    elif (
        prefix_text.isascii()
        and prefix_text.isdigit()
        and len(prefix_text.lstrip("0")) <= 3
        and int(prefix_text) <= bits
    ):
        prefix = int(prefix_text)
    else:
        raise ValueError(f'bad net/mask pattern: "{text}/{prefix_text}"')
    mask = ((1 << bits) - 1) ^ ((1 << (bits - prefix)) - 1)
    value = int(address)
    if value & ~mask:
        suggestion = type(address)(value & mask)
        raise ValueError(
            f'non-null host address bits in "{text}/{prefix_text}", '
            f'perhaps you should use "{suggestion}/{prefix}" instead'
        )
    if address.version == 4:
        return ipaddress.IPv4Network((value, prefix))
    return ipaddress.IPv6Network((value, prefix))


def _parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    # inet_pton syntax only: no zone index ("%eth0"), no other characters.
    if not text or not _ADDRESS_CHARS.issuperset(text):
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def address_key(text: str) -> tuple[int, int] | None:
    """(IP version, integer) of an address string, IPv4-mapped IPv6 taken as
    IPv4; None when ``text`` is not an address."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return 4, int(address.ipv4_mapped)
    return address.version, int(address)


class _Op(enum.Enum):
    MATCH = "match"
    IF = "if"
    ENDIF = "endif"


@dataclass(frozen=True, slots=True)
class _Rule:
    op: _Op
    version: int = 0
    network: int = 0
    mask: int = 0
    match: bool = True  # False for "!pattern": matches what is outside
    value: str = ""
    end: int = 0  # for IF: the index of its ENDIF

    def hit(self, version: int, address: int) -> bool:
        # Like Postfix, a rule never matches the other address family,
        # negated or not.
        return version == self.version and ((address & self.mask) == self.network) == self.match


class CidrTable:
    """An immutable, ordered list of CIDR rules."""

    __slots__ = ("_rules", "_spec", "_warnings")

    def __init__(self, spec: str, rules: list[_Rule], warnings: list[str]) -> None:
        self._spec = spec
        self._rules = tuple(rules)
        self._warnings = tuple(warnings)

    @classmethod
    def from_bytes(cls, spec: str, data: bytes, *, file: str) -> CidrTable:
        """Parse cidr_table(5) text; ``file`` names it in messages."""
        warnings: list[str] = []
        return cls(spec, _parse_rules(data, file, warnings), warnings)

    @property
    def spec(self) -> str:
        return self._spec

    @property
    def warnings(self) -> tuple[str, ...]:
        return self._warnings

    def lookup(self, key: str) -> str | None:
        parsed = address_key(key)
        if parsed is None:
            return None
        version, address = parsed
        rules = self._rules
        i = 0
        while i < len(rules):
            rule = rules[i]
            if rule.op is _Op.MATCH:
                if rule.hit(version, address):
                    return rule.value
            elif rule.op is _Op.IF and not rule.hit(version, address):
                i = rule.end
            i += 1
        return None

    def __repr__(self) -> str:
        return f"<CidrTable {self._spec} ({len(self._rules)} rules)>"


def _parse_rules(data: bytes, file: str, warnings: list[str]) -> list[_Rule]:
    rules: list[_Rule] = []
    open_ifs: list[tuple[int, int]] = []  # (rule index, line number)
    for line in logical_lines(data, file, warnings):
        word, rest = split_ws(line.text)
        keyword = word.lower()
        if keyword == "endif":
            if rest:
                raise TableError(f'unexpected text after "endif": "{rest}"', file, line.lineno)
            if not open_ifs:
                raise TableError('"endif" without matching "if"', file, line.lineno)
            index, _ = open_ifs.pop()
            rules[index] = _with_end(rules[index], len(rules))
            rules.append(_Rule(_Op.ENDIF))
            continue
        if keyword == "if":
            pattern, extra = split_ws(rest)
            if not pattern:
                raise TableError('no address pattern after "if"', file, line.lineno)
            if extra:
                raise TableError(f'unexpected text after "if {pattern}"', file, line.lineno)
            open_ifs.append((len(rules), line.lineno))
            rules.append(_compile(_Op.IF, pattern, "", file, line.lineno))
            continue
        if not rest:
            raise TableError(f'no lookup result after "{word}"', file, line.lineno)
        rules.append(_compile(_Op.MATCH, word, rest, file, line.lineno))
    if open_ifs:
        raise TableError('"if" without matching "endif"', file, open_ifs[-1][1])
    return rules


def _compile(op: _Op, pattern: str, value: str, file: str, lineno: int) -> _Rule:
    match = True
    while pattern.startswith("!"):
        match = not match
        pattern = pattern[1:]
    if not pattern:
        raise TableError("no address pattern", file, lineno)
    try:
        network = parse_address_pattern(pattern)
    except ValueError as exc:
        raise TableError(str(exc), file, lineno) from None
    return _Rule(
        op,
        version=network.version,
        network=int(network.network_address),
        mask=int(network.netmask),
        match=match,
        value=value,
    )


def _with_end(rule: _Rule, end: int) -> _Rule:
    return _Rule(rule.op, rule.version, rule.network, rule.mask, rule.match, rule.value, end)


def open_cidr(spec: str, name: str, base_dir: Path) -> CidrTable:
    """Registry opener for ``cidr:FILE``."""
    path = resolve_path(name, base_dir)
    return CidrTable.from_bytes(spec, read_table_file(path), file=str(path))
