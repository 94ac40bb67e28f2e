"""MX, address and TLSA lookup for delivery (dnspython), off the reactor thread.

Input: a destination domain (or a host when MX lookup is suppressed), the
address families in use (``inet_protocols``), the family to try first
(``smtp_address_preference``) and this host's own addresses.  Output: the
hosts to try, in order, each with its addresses and whether DNSSEC vouched
for them, or a :class:`LookupFailed` whose Reply says why there are none.

- RFC 5321 5.1: MX records by preference, equal preferences shuffled, the
  domain's own A/AAAA records when it has no MX.  Addresses of one host keep
  the order DNS gave them, the preferred family first.
- RFC 7505: a single "0 ." MX means the domain accepts no mail (5.1.10).
- NXDOMAIN is permanent (5.1.2); SERVFAIL and timeouts are temporary (4.4.3).
- Postfix's loop check (smtp_addr.c): an MX host that is one of this host's
  addresses cuts the list at its preference; when nothing better is left,
  "mail for X loops back to myself" (5.4.6).  Only for SMTP to port 25, as
  Postfix does, so content filters and test set-ups on other ports work.

The resolver honours ``dns_nameservers`` (``host[:port]``) and keeps a
TTL-aware cache (dnspython's, negative answers included).  With
``dnssec=True`` queries ask for DNSSEC (EDNS DO, the AD flag) and an
answer counts as secure when the resolver set AD: the resolver named in
``dns_nameservers`` is trusted to validate, as Postfix trusts its
``smtp_dns_support_level = dnssec`` resolver.
"""

from __future__ import annotations

import ipaddress
import random
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.rdatatype
import dns.resolver
from twisted.internet import threads
from twisted.internet.interfaces import IReactorThreads

from mta.reply import Reply


@dataclass(frozen=True)
class MXHost:
    """One host to try: ``name`` (the MX exchange, or the host itself),
    its ``preference``, its addresses in the order to try, and ``secure``:
    whether the MX and address records were DNSSEC-validated."""

    name: str
    preference: int
    addresses: tuple[str, ...] = field(default=())
    secure: bool = False


@dataclass(frozen=True)
class Resolution:
    """The hosts for a destination and whether the MX lookup itself was
    secure (no MX lookup: the address lookup counts)."""

    hosts: list[MXHost]
    secure: bool = False


class LookupFailed(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.one_line())
        self.reply = reply


def make_resolver(
    nameservers: Sequence[str], timeout: float = 10.0, *, dnssec: bool = False
) -> dns.resolver.Resolver:
    """A caching resolver for ``dns_nameservers`` (empty: the system's)."""
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
    res.cache = dns.resolver.Cache()
    if dnssec:
        # Ask for DNSSEC records and for the validator's verdict (RFC 6840 5.7).
        res.use_edns(0, dns.flags.DO, 1232)
        res.flags = dns.flags.RD | dns.flags.AD
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


def is_secure(answer: dns.resolver.Answer) -> bool:
    """Whether the (trusted) resolver validated this answer (AD flag)."""
    response = answer.response
    return bool(isinstance(response, dns.message.Message) and response.flags & dns.flags.AD)


# -- families and own addresses ------------------------------------------------


def families(inet_protocols: Iterable[str]) -> tuple[bool, bool]:
    """(IPv4, IPv6) in use for ``inet_protocols`` (all, ipv4, ipv6)."""
    names = {p.lower() for p in inet_protocols} or {"all"}
    v4 = "all" in names or "ipv4" in names
    v6 = "all" in names or "ipv6" in names
    return v4, v6


def local_addresses() -> frozenset[str]:
    """Every address of this machine's interfaces (Linux /proc, else what
    the host name resolves to), with the loopback addresses."""
    found = {"127.0.0.1", "::1"}
    try:
        found |= _proc_ipv4_local(Path("/proc/net/fib_trie").read_text())
    except OSError:
        pass
    try:
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            raw = line.split()[0]
            found.add(str(ipaddress.IPv6Address(int(raw, 16))))
    except (OSError, ValueError, IndexError):
        pass
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            found.add(str(info[4][0]).split("%")[0])
    except OSError:
        pass
    return frozenset(found)


def _proc_ipv4_local(text: str) -> set[str]:
    """The "/32 host LOCAL" addresses of /proc/net/fib_trie."""
    out: set[str] = set()
    last = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|--"):
            last = stripped[3:].strip()
        elif "/32 host LOCAL" in stripped and last:
            out.add(last)
    return out


def own_addresses(inet_interfaces: Iterable[str], *, interfaces: frozenset[str]) -> frozenset[str]:
    """This host's SMTP addresses for the loop check: those of
    ``inet_interfaces`` ("all": every interface address)."""
    out: set[str] = set()
    for item in inet_interfaces:
        name = item.strip().lower().strip("[]")
        if name == "all":
            out |= interfaces
        elif name in ("loopback-only", "localhost"):
            out |= {"127.0.0.1", "::1"}
        else:
            try:
                out.add(str(ipaddress.ip_address(name.removeprefix("ipv6:"))))
            except ValueError:
                try:
                    out |= {str(i[4][0]) for i in socket.getaddrinfo(name, None)}
                except OSError:
                    pass
    return frozenset(out)


# -- lookups ---------------------------------------------------------------------


@dataclass(frozen=True)
class LookupOptions:
    """How to look up: address families, the one to try first ("any",
    "ipv4", "ipv6"), this host's addresses (empty: no loop check)."""

    ipv4: bool = True
    ipv6: bool = True
    preference: str = "any"
    self_addresses: frozenset[str] = frozenset()


def _addresses(
    res: dns.resolver.Resolver, host: str, opts: LookupOptions
) -> tuple[list[str], bool]:
    """A and/or AAAA of ``host``, and whether all answers were secure;
    empty when it has none."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        usable = opts.ipv4 if address.version == 4 else opts.ipv6
        return ([str(address)] if usable else []), True
    v4: list[str] = []
    v6: list[str] = []
    secure = True
    for rtype, into, wanted in (("A", v4, opts.ipv4), ("AAAA", v6, opts.ipv6)):
        if not wanted:
            continue
        try:
            ans = res.resolve(host, rtype, search=False)
        except dns.resolver.NoAnswer as e:
            response = e.kwargs.get("response")
            if not (isinstance(response, dns.message.Message) and response.flags & dns.flags.AD):
                secure = False
            continue
        except dns.resolver.NXDOMAIN:
            continue
        secure = secure and is_secure(ans)
        into.extend(r.to_text() for r in ans)
    if opts.preference == "ipv6":
        return v6 + v4, secure
    if opts.preference == "ipv4":
        return v4 + v6, secure
    return _interleave(v4, v6), secure


def _interleave(a: list[str], b: list[str]) -> list[str]:
    """Both families in turn, so that one broken family does not use up
    the address limit (Postfix smtp_address_preference = any)."""
    out: list[str] = []
    for i in range(max(len(a), len(b))):
        out.extend(x[i] for x in (a, b) if i < len(x))
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


def _temp(domain: str, why: str, rtype: str = "MX") -> LookupFailed:
    return LookupFailed(
        Reply(
            450,
            "4.3",
            f"Host or domain name not found. Name service error for name={domain} "
            f"type={rtype}: {why}",
        )
    )


def _loop(domain: str) -> LookupFailed:
    return LookupFailed(Reply(550, "4.6", f"mail for {domain} loops back to myself"))


def resolve_mx_blocking(
    res: dns.resolver.Resolver,
    domain: str,
    *,
    use_mx: bool,
    options: LookupOptions | None = None,
) -> Resolution:
    """The hosts to try for ``domain``; raises LookupFailed.  Blocking:
    call it through :func:`resolve_mx`."""
    opts = options or LookupOptions()
    try:
        if use_mx:
            try:
                ans = res.resolve(domain, "MX", search=False)
            except dns.resolver.NoAnswer:
                ans = None
            if ans is not None:
                return _mx_hosts(res, domain, ans, opts)
        addrs, secure = _addresses(res, domain, opts)
        if not addrs:
            raise _not_found(domain, "A")
        if opts.self_addresses and any(a in opts.self_addresses for a in addrs):
            raise _loop(domain)
        return Resolution([MXHost(domain, 0, tuple(addrs), secure)], secure)
    except dns.resolver.NXDOMAIN:
        raise _not_found(domain, "MX" if use_mx else "A") from None
    except dns.resolver.NoNameservers:
        raise _temp(domain, "Host not found, try again") from None
    except dns.exception.Timeout:
        raise _temp(domain, "Name service timeout") from None
    except dns.exception.DNSException as e:
        raise _temp(domain, f"Name service error ({e.__class__.__name__})") from None


def _mx_hosts(
    res: dns.resolver.Resolver, domain: str, ans: dns.resolver.Answer, opts: LookupOptions
) -> Resolution:
    mx_secure = is_secure(ans)
    records = sorted(ans, key=lambda r: r.preference)
    if len(records) == 1 and records[0].exchange.to_text() == ".":
        raise LookupFailed(Reply(556, "1.10", f"Domain {domain} does not accept mail (nullMX)"))
    by_pref: dict[int, list[str]] = {}
    for r in records:
        name = r.exchange.to_text(omit_final_dot=True)
        if name:  # a "." among other MX records means nothing (RFC 7505 3)
            by_pref.setdefault(r.preference, []).append(name)
    hosts: list[MXHost] = []
    errors: list[LookupFailed] = []
    for pref in sorted(by_pref):
        names = by_pref[pref]
        random.shuffle(names)  # RFC 5321 5.1: spread load among equals
        for name in names:
            try:
                addrs, secure = _addresses(res, name, opts)
            except dns.resolver.NXDOMAIN:
                continue
            except dns.exception.DNSException as e:
                errors.append(_temp(name, f"Name service error ({e.__class__.__name__})", "A"))
                continue
            if addrs:
                hosts.append(MXHost(name, pref, tuple(addrs), secure and mx_secure))
    if not hosts:
        if errors:
            raise errors[0]
        # Postfix: "no MX host for X has a valid address record" (deferred).
        raise LookupFailed(Reply(450, "4.4", f"no MX host for {domain} has a valid address record"))
    if opts.self_addresses:
        hosts = _truncate_self(domain, hosts, opts.self_addresses, best=min(by_pref))
    return Resolution(hosts, mx_secure)


def _truncate_self(
    domain: str, hosts: list[MXHost], me: frozenset[str], *, best: int
) -> list[MXHost]:
    """Postfix smtp_truncate_self: drop this host and every MX host that is
    not more preferred than it."""
    mine = [h.preference for h in hosts if any(a in me for a in h.addresses)]
    if not mine:
        return hosts
    kept = [h for h in hosts if h.preference < min(mine)]
    if kept:
        return kept
    if hosts[0].preference != best:
        # A better MX exists in DNS but has no address: we are a backup.
        raise LookupFailed(Reply(450, "4.4", f"unable to find primary relay for {domain}"))
    raise _loop(domain)


async def resolve_mx(
    reactor: IReactorThreads,
    res: dns.resolver.Resolver,
    domain: str,
    *,
    use_mx: bool,
    options: LookupOptions | None = None,
) -> Resolution:
    """Non-blocking :func:`resolve_mx_blocking` (runs in the thread pool)."""
    result: Resolution = await threads.deferToThreadPool(
        reactor,
        reactor.getThreadPool(),
        resolve_mx_blocking,
        res,
        domain,
        use_mx=use_mx,
        options=options,
    )
    return result


# -- TLSA (RFC 6698, RFC 7672) ---------------------------------------------------


@dataclass(frozen=True)
class TLSARecord:
    usage: int
    selector: int
    mtype: int
    data: bytes


@dataclass(frozen=True)
class TLSALookup:
    """The TLSA records of ``_port._tcp.host``: ``secure`` when the answer
    (or the denial) was validated; ``error`` when the lookup failed."""

    records: tuple[TLSARecord, ...] = ()
    secure: bool = False
    error: str = ""


def lookup_tlsa_blocking(res: dns.resolver.Resolver, host: str, port: int) -> TLSALookup:
    """TLSA of ``host``:``port``; never raises."""
    qname = f"_{port}._tcp.{host.rstrip('.')}"
    try:
        ans = res.resolve(qname, "TLSA", search=False)
    except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN) as e:
        response = e.kwargs.get("response") if isinstance(e, dns.resolver.NoAnswer) else None
        if response is None and isinstance(e, dns.resolver.NXDOMAIN):
            responses = e.kwargs.get("responses") or {}
            response = next(iter(responses.values()), None)
        secure = bool(isinstance(response, dns.message.Message) and response.flags & dns.flags.AD)
        return TLSALookup((), secure)
    except dns.exception.DNSException as e:
        return TLSALookup((), False, f"TLSA lookup error for {host}:{port}: {e.__class__.__name__}")
    records = tuple(
        TLSARecord(int(r.usage), int(r.selector), int(r.mtype), bytes(r.cert)) for r in ans
    )
    return TLSALookup(records, is_secure(ans))


async def lookup_tlsa(
    reactor: IReactorThreads, res: dns.resolver.Resolver, host: str, port: int
) -> TLSALookup:
    result: TLSALookup = await threads.deferToThreadPool(
        reactor, reactor.getThreadPool(), lookup_tlsa_blocking, res, host, port
    )
    return result


def lookup_txt_blocking(res: dns.resolver.Resolver, name: str) -> list[str] | None:
    """The TXT strings at ``name`` (each record's strings joined); [] when
    there are none; None when the lookup failed (try later)."""
    try:
        ans = res.resolve(name, "TXT", search=False)
    except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
        return []
    except dns.exception.DNSException:
        return None
    return [b"".join(r.strings).decode("utf-8", "replace") for r in ans]


async def lookup_txt(
    reactor: IReactorThreads, res: dns.resolver.Resolver, name: str
) -> list[str] | None:
    result: list[str] | None = await threads.deferToThreadPool(
        reactor, reactor.getThreadPool(), lookup_txt_blocking, res, name
    )
    return result


async def resolve_host(
    reactor: IReactorThreads, res: dns.resolver.Resolver, host: str, options: LookupOptions
) -> list[str]:
    """The addresses of ``host`` (no MX), [] when it has none or the
    lookup failed."""

    def run() -> list[str]:
        try:
            return _addresses(res, host, options)[0]
        except dns.exception.DNSException:
            return []

    result: list[str] = await threads.deferToThreadPool(reactor, reactor.getThreadPool(), run)
    return result
