"""DNS lists and domain existence checks, as Postfix smtpd_check.c does them.

Inputs: a :class:`~mta.policy.dns.Dns`, the thing to look up (a client
address, a domain, a mail address) and the list's domain as written in a
restriction (``zen.example.org``, ``zen.example.org=127.0.0.[2..11;13]``).
Outputs: :class:`ListedAs` (listed or not, or unknown after a DNS failure,
with the list's TXT text), :func:`mailhost_status` and
:func:`host_status` for reject_unknown_*_domain and
reject_unknown_helo_hostname, and :func:`rbl_reply` which expands
``default_rbl_reply`` or an ``rbl_reply_maps`` template.

Query names: an IPv4 client ``192.0.2.1`` is looked up as
``1.2.0.192.LIST``, an IPv6 one as its 32 reversed nibbles; a domain (RHSBL)
as ``domain.LIST``.  An A record means "listed"; with ``=pattern`` only
answers that the pattern matches count.  A DNS failure means "not listed"
for block lists (the client gets the benefit of the doubt) and is reported
as such so that allow lists can defer instead (Postfix: DEFER_IF_REJECT).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from mta.policy.dns import Dns

#: Postfix default_rbl_reply.
DEFAULT_RBL_REPLY = (
    "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using "
    "$rbl_domain${rbl_reason?; $rbl_reason}"
)
RBL_TXT_LIMIT = 500

_OCTET_RANGE = re.compile(r"^(\d{1,3})(?:\.\.(\d{1,3}))?$")


class DnsxlError(ValueError):
    """A bad list argument (``domain=pattern``) or reply template."""


@dataclass(frozen=True)
class ReplyFilter:
    """The ``=d.d.d.d`` part of a list argument: each octet a number or
    ``[a;b..c]`` (Postfix ip_match)."""

    octets: tuple[frozenset[int], ...]

    @classmethod
    def parse(cls, text: str) -> ReplyFilter:
        octets: list[frozenset[int]] = []
        rest = text
        while rest:
            if rest.startswith("["):
                end = rest.find("]")
                if end < 0:
                    raise DnsxlError(f'missing "]" in "{text}"')
                allowed: set[int] = set()
                for item in rest[1:end].split(";"):
                    m = _OCTET_RANGE.match(item)
                    if m is None:
                        raise DnsxlError(f'bad octet "{item}" in "{text}"')
                    low = int(m.group(1))
                    high = int(m.group(2) or low)
                    if low > 255 or high > 255 or low > high:
                        raise DnsxlError(f'bad octet range "{item}" in "{text}"')
                    allowed.update(range(low, high + 1))
                octets.append(frozenset(allowed))
                rest = rest[end + 1 :]
            else:
                m = re.match(r"\d{1,3}", rest)
                if m is None or int(m.group(0)) > 255:
                    raise DnsxlError(f'bad address pattern "{text}"')
                octets.append(frozenset({int(m.group(0))}))
                rest = rest[m.end() :]
            if len(octets) < 4:
                if not rest.startswith("."):
                    raise DnsxlError(f'bad address pattern "{text}": need four octets')
                rest = rest[1:]
            elif rest:
                raise DnsxlError(f'bad address pattern "{text}": text after the fourth octet')
        if len(octets) != 4:
            raise DnsxlError(f'bad address pattern "{text}": need four octets')
        return cls(tuple(octets))

    def matches(self, address: str) -> bool:
        parts = address.split(".")
        if len(parts) != 4 or not all(p.isdigit() for p in parts):
            return False
        return all(int(p) in allowed for p, allowed in zip(parts, self.octets, strict=True))


@dataclass(frozen=True)
class DnsList:
    """A list argument: the DNS domain and the optional reply filter.
    ``spec`` is the argument as written (the ``rbl_reply_maps`` key)."""

    spec: str
    domain: str
    filter: ReplyFilter | None

    @classmethod
    def parse(cls, spec: str) -> DnsList:
        domain, sep, pattern = spec.partition("=")
        domain = domain.strip().rstrip(".")
        if not domain or " " in domain:
            raise DnsxlError(f'bad DNS list domain "{spec}"')
        return cls(spec, domain, ReplyFilter.parse(pattern) if sep else None)


@dataclass(frozen=True)
class ListedAs:
    """The answer of a DNS list: ``listed`` with the TXT text, ``no``, or
    ``unknown`` (DNS failure)."""

    status: Literal["listed", "no", "unknown"]
    txt: str = ""
    reason: str = ""


def reverse_query(address: str) -> str | None:
    """``1.2.0.192`` for 192.0.2.1, 32 nibbles for IPv6; None for a bad address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.version == 4:
        return ".".join(reversed(str(ip).split(".")))
    return ".".join(reversed(ip.exploded.replace(":", "")))


def rhs_domain(what: str) -> str | None:
    """The domain an RHSBL looks up for an address or a host name, or None
    when Postfix skips the lookup (address literals, a numeric last label,
    an invalid name)."""
    domain = what.rpartition("@")[2] if "@" in what else what
    domain = domain.rstrip(".")
    if not domain or domain.startswith("["):
        return None
    if domain.rpartition(".")[2].isdigit():
        return None
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        return None
    if not _valid_hostname(ascii_domain):
        return None
    return ascii_domain


def _valid_hostname(name: str) -> bool:
    if len(name) > 255:
        return False
    for label in name.split("."):
        if not label or len(label) > 63 or label[0] == "-" or label[-1] == "-":
            return False
        if not all(c.isalnum() or c in "-_" for c in label) or not label.isascii():
            return False
    return True


async def lookup(dns: Dns, query: str, dnslist: DnsList) -> ListedAs:
    """Ask ``dnslist`` about the prepared ``query`` name (reversed address
    or domain, without the list domain)."""
    name = f"{query}.{dnslist.domain}"
    answer = await dns.query(name, "A")
    if answer.status == "retry":
        return ListedAs("unknown", reason=f"{name}: RBL lookup error: {answer.reason}")
    if answer.status != "ok":
        return ListedAs("no")
    if dnslist.filter is not None and not any(dnslist.filter.matches(a) for a in answer.records):
        return ListedAs("no")
    txt = await dns.query(name, "TXT")
    text = ""
    if txt.status == "ok":
        text = " / ".join(txt.records)[:RBL_TXT_LIMIT]
    return ListedAs("listed", txt=text)


async def lookup_address(dns: Dns, address: str, dnslist: DnsList) -> ListedAs:
    query = reverse_query(address)
    if query is None:
        return ListedAs("no")
    return await lookup(dns, query, dnslist)


async def lookup_domain(dns: Dns, what: str, dnslist: DnsList) -> ListedAs:
    domain = rhs_domain(what)
    if domain is None:
        return ListedAs("no")
    return await lookup(dns, domain, dnslist)


# -- domain existence --------------------------------------------------------------

DomainStatus = Literal["ok", "notfound", "retry", "nullmx"]


async def mailhost_status(dns: Dns, domain: str) -> DomainStatus:
    """Whether mail can be addressed to ``domain``: an MX record (a null MX
    is ``nullmx``), else an A or AAAA record (Postfix reject_unknown_mailhost)."""
    try:
        name = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        return "notfound"
    mx = await dns.query(name, "MX")
    if mx.status == "ok":
        exchanges = [r.split(" ", 1)[-1].rstrip(".") for r in mx.records]
        if len(exchanges) == 1 and exchanges[0] == "":
            return "nullmx"
        return "ok"
    retry = mx.status == "retry"
    for rtype in ("A", "AAAA"):
        answer = await dns.query(name, rtype)
        if answer.status == "ok":
            return "ok"
        retry = retry or answer.status == "retry"
    return "retry" if retry else "notfound"


async def host_status(dns: Dns, name: str) -> DomainStatus:
    """Whether a host name exists: an A, AAAA or MX record (null MX allowed;
    Postfix reject_unknown_hostname)."""
    retry = False
    for rtype in ("A", "AAAA", "MX"):
        answer = await dns.query(name, rtype)
        if answer.status == "ok":
            return "ok"
        retry = retry or answer.status == "retry"
    return "retry" if retry else "notfound"


# -- reply templates ---------------------------------------------------------------

_PRINTABLE = frozenset(chr(c) for c in range(32, 127)) | {"\t"}


def expand(template: str, lookup_name: Callable[[str], str | None]) -> str:
    """Postfix mac_expand for reply templates: ``$name``, ``${name}``,
    ``$(name)``, ``${name?text}`` (text when name is not empty),
    ``${name:text}`` (text when it is empty), ``$$``.  Raises DnsxlError for
    an unknown name or bad syntax.  Expanded values are made printable."""
    out: list[str] = []
    i = 0
    while i < len(template):
        ch = template[i]
        if ch != "$":
            out.append(ch)
            i += 1
            continue
        nxt = template[i + 1 : i + 2]
        if nxt == "$":
            out.append("$")
            i += 2
            continue
        if nxt in ("{", "("):
            close = "}" if nxt == "{" else ")"
            end = _matching(template, i + 1, nxt, close)
            inner = template[i + 2 : end]
            i = end + 1
            m = re.match(r"([A-Za-z0-9_]+)(?:([?:])(.*))?$", inner, re.DOTALL)
            if m is None:
                raise DnsxlError(f'bad macro syntax "${nxt}{inner}{close}"')
            value = _value(m.group(1), lookup_name)
            if m.group(2) == "?":
                out.append(expand(m.group(3), lookup_name) if value else "")
            elif m.group(2) == ":":
                out.append(value if value else expand(m.group(3), lookup_name))
            else:
                out.append(value)
            continue
        m = re.match(r"[A-Za-z0-9_]+", template[i + 1 :])
        if m is None:
            raise DnsxlError(f'bad macro syntax at "{template[i : i + 10]}"')
        out.append(_value(m.group(0), lookup_name))
        i += 1 + m.end()
    return "".join(out)


def _matching(text: str, start: int, opening: str, closing: str) -> int:
    depth = 0
    for i in range(start, len(text)):
        if text[i] == opening:
            depth += 1
        elif text[i] == closing:
            depth -= 1
            if depth == 0:
                return i
    raise DnsxlError(f'missing "{closing}" in "{text}"')


def _value(name: str, lookup_name: Callable[[str], str | None]) -> str:
    value = lookup_name(name)
    if value is None:
        raise DnsxlError(f'unknown macro name "{name}"')
    return "".join(c if c in _PRINTABLE else "_" for c in value)


def rbl_reply(
    template: str,
    *,
    code: int,
    dnslist: DnsList,
    what: str,
    reply_class: str,
    txt: str,
    attributes: Mapping[str, str],
) -> str:
    """The reply line for a listed client or domain: ``template`` expanded
    with rbl_code, rbl_domain, rbl_reason (= rbl_txt), rbl_what, rbl_class
    and the session ``attributes`` (client_address, helo_name, ...)."""
    names = {
        "rbl_code": str(code),
        "rbl_domain": dnslist.domain,
        "rbl_reason": txt,
        "rbl_txt": txt,
        "rbl_what": what,
        "rbl_class": reply_class,
    }
    return expand(template, lambda name: names.get(name, attributes.get(name)))
