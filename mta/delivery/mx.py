"""MX and address lookup for delivery (dnspython), off the reactor thread.

Input: a destination domain (or a host when MX lookup is suppressed).
Output: the hosts to try, in order, each with its addresses, or a Reply that
says why there are none (permanent for NXDOMAIN and null MX, temporary for
SERVFAIL and timeouts).  RFC 5321 5.1: MX records by preference, equal
preferences shuffled, the domain's own A/AAAA records when it has no MX.
RFC 7505: a single "0 ." MX means the domain accepts no mail.

The resolver honours ``dns_nameservers`` (``host[:port]``) so tests and
split-horizon sites can name their servers.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import dns.exception
import dns.rdatatype
import dns.resolver
from twisted.internet import threads
from twisted.internet.interfaces import IReactorThreads

from mta.reply import Reply


@dataclass(frozen=True)
class MXHost:
    name: str
    preference: int
    addresses: tuple[str, ...] = field(default=())


class LookupFailed(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.one_line())
        self.reply = reply


def make_resolver(nameservers: Sequence[str], timeout: float = 10.0) -> dns.resolver.Resolver:
    """A resolver for ``dns_nameservers`` (empty: the system's)."""
    if not nameservers:
        res = dns.resolver.Resolver()
    else:
        res = dns.resolver.Resolver(configure=False)
        res.nameservers = []
        ports: dict[str, int] = {}
        for item in nameservers:
            host, port = split_host_port(item, 53)
            res.nameservers.append(host)
            ports[host] = port
        res.nameserver_ports = ports
    res.lifetime = timeout
    res.timeout = min(timeout, 5.0)
    return res


def split_host_port(item: str, default_port: int) -> tuple[str, int]:
    """``1.2.3.4``, ``1.2.3.4:53``, ``[::1]:53``, ``::1`` → (host, port)."""
    item = item.strip()
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    try:
        ipaddress.ip_address(item)
        return item, default_port  # a bare IPv6 address has colons of its own
    except ValueError:
        pass
    host, sep, port = item.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return item, default_port


def _addresses(res: dns.resolver.Resolver, host: str, families: str) -> list[str]:
    """A and/or AAAA of ``host``; empty when it has none."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    out: list[str] = []
    types = []
    if families in ("all", "ipv4", "any"):
        types.append("A")
    if families in ("all", "ipv6", "any"):
        types.append("AAAA")
    for rtype in types:
        try:
            ans = res.resolve(host, rtype, search=False)
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
            continue
        out.extend(r.to_text() for r in ans)
    return out


def _not_found(domain: str, rtype: str) -> LookupFailed:
    return LookupFailed(
        Reply(
            550,
            "1.2",
            f"Host or domain name not found. Name service error for name={domain} "
            f"type={rtype}: Host not found",
        )
    )


def _temp(domain: str, why: str) -> LookupFailed:
    return LookupFailed(
        Reply(450, "4.4.3", f"Host or domain name not found. {why} for name={domain}")
    )


def resolve_mx_blocking(
    res: dns.resolver.Resolver, domain: str, *, use_mx: bool, families: str = "all"
) -> list[MXHost]:
    """The hosts to try for ``domain``; raises LookupFailed.  Blocking:
    call it through :func:`resolve_mx`."""
    try:
        if use_mx:
            try:
                ans = res.resolve(domain, "MX", search=False)
            except dns.resolver.NoAnswer:
                ans = None
            if ans is not None:
                records = sorted(ans, key=lambda r: r.preference)
                if len(records) == 1 and records[0].exchange.to_text() == ".":
                    raise LookupFailed(
                        Reply(556, "1.10", f"Domain {domain} does not accept mail (nullMX)")
                    )
                by_pref: dict[int, list[str]] = {}
                for r in records:
                    by_pref.setdefault(r.preference, []).append(
                        r.exchange.to_text(omit_final_dot=True)
                    )
                hosts: list[MXHost] = []
                for pref in sorted(by_pref):
                    names = by_pref[pref]
                    random.shuffle(names)  # RFC 5321 5.1: spread load among equals
                    for name in names:
                        addrs = _addresses(res, name, families)
                        if addrs:
                            hosts.append(MXHost(name, pref, tuple(addrs)))
                if not hosts:
                    raise _temp(domain, "MX hosts have no address records")
                return hosts
        addrs = _addresses(res, domain, families)
        if not addrs:
            raise _not_found(domain, "A")
        return [MXHost(domain, 0, tuple(addrs))]
    except dns.resolver.NXDOMAIN:
        raise _not_found(domain, "MX") from None
    except dns.resolver.NoNameservers:
        raise _temp(domain, "Name service error (SERVFAIL)")
    except dns.exception.Timeout:
        raise _temp(domain, "Name service timeout")
    except dns.exception.DNSException as e:
        raise _temp(domain, f"Name service error ({e.__class__.__name__})")


async def resolve_mx(
    reactor: IReactorThreads,
    res: dns.resolver.Resolver,
    domain: str,
    *,
    use_mx: bool,
    families: str = "all",
) -> list[MXHost]:
    """Non-blocking :func:`resolve_mx_blocking` (runs in the thread pool)."""
    result: list[MXHost] = await threads.deferToThreadPool(
        reactor,
        reactor.getThreadPool(),
        resolve_mx_blocking,
        res,
        domain,
        use_mx=use_mx,
        families=families,
    )
    return result
