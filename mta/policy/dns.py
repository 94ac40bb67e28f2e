"""DNS lookups for the access policy: DNSBL/DNSWL queries and domain checks.

Input: a name and a record type (A, AAAA, MX, TXT), the ``dns_nameservers``
list (``host[:port]``; empty means the system's resolv.conf), the reactor.
Output: a :class:`DnsResult` — ``ok`` with the records, ``notfound``
(NXDOMAIN or no record of that type) or ``retry`` (timeout, SERVFAIL,
refused: the answer is unknown, so callers give the client the benefit of
the doubt or defer, as Postfix does).

The queries run on the reactor (``twisted.names``), not in threads: a hung
DNS server costs each query at most its time limit (:data:`QUERY_TIMEOUT`)
and can never tie up the thread pool that queue file syncs use, so it never
stalls other sessions.  :class:`CachingDns` keeps answers for their TTL
(at most :data:`MAX_CACHE_TTL`) and joins identical queries in flight, like
Postfix smtpd's RBL cache; temporary failures are not cached.

Neighbours: :mod:`mta.policy.dnsxl` builds the DNSBL and domain checks on
:class:`Dns`; the delivery side uses :mod:`mta.delivery.mx` (dnspython in
threads) for MX routing, with the same ``dns_nameservers`` syntax.
"""

from __future__ import annotations

import collections
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from twisted.internet import defer
from twisted.names import client
from twisted.names import dns as tdns
from twisted.names import error as terror

from mta.delivery.mx import split_host_port

Status = Literal["ok", "notfound", "retry"]
RecordType = Literal["A", "AAAA", "MX", "TXT"]

#: Seconds per try of one query (twisted.names retries with the next value).
QUERY_TIMEOUT: tuple[int, ...] = (2, 4)
#: Answers are cached for their TTL, but never longer than this.
MAX_CACHE_TTL = 300
#: Negative answers (NXDOMAIN, no data) are cached this long.
NEGATIVE_TTL = 60

_TYPES = {"A": tdns.A, "AAAA": tdns.AAAA, "MX": tdns.MX, "TXT": tdns.TXT}


@dataclass(frozen=True)
class DnsResult:
    """The answer to one query.  ``records`` are text: addresses for A and
    AAAA, ``"preference exchange"`` for MX, the joined strings for TXT."""

    status: Status
    records: tuple[str, ...] = ()
    ttl: int = 0
    reason: str = ""


class Dns(Protocol):
    """What the policy checks need of DNS (tests provide a fake)."""

    async def query(self, name: str, rtype: RecordType) -> DnsResult: ...


class TwistedDns:
    """Queries through ``twisted.names`` on the reactor."""

    def __init__(
        self,
        reactor: Any,
        nameservers: Sequence[str],
        timeout: tuple[int, ...] = QUERY_TIMEOUT,
    ) -> None:
        self.timeout = timeout
        if nameservers:
            servers = [split_host_port(item, 53) for item in nameservers]
            self._resolver = client.Resolver(servers=servers, reactor=reactor)  # type: ignore[no-untyped-call]
        else:
            self._resolver = client.Resolver(  # type: ignore[no-untyped-call]
                resolv="/etc/resolv.conf", reactor=reactor
            )

    async def query(self, name: str, rtype: RecordType) -> DnsResult:
        qtype = _TYPES[rtype]
        try:
            answers, _authority, _additional = await self._resolver.query(  # type: ignore[no-untyped-call]
                tdns.Query(name.encode("idna") if not name.isascii() else name, qtype),
                timeout=self.timeout,
            )
        except terror.DNSNameError:
            return DnsResult("notfound", reason="Host not found")
        except (terror.DNSQueryTimeoutError, defer.TimeoutError) as e:
            return DnsResult("retry", reason=f"timeout ({e.__class__.__name__})")
        except terror.DomainError as e:
            return DnsResult("retry", reason=e.__class__.__name__)
        except (UnicodeError, ValueError) as e:
            return DnsResult("notfound", reason=f"bad name: {e}")
        records: list[str] = []
        ttl = MAX_CACHE_TTL
        for rr in answers:
            if rr.type != qtype:
                continue
            ttl = min(ttl, int(rr.ttl))
            records.append(_text(rr.payload, rtype))
        if not records:
            return DnsResult("notfound", reason="no data")
        return DnsResult("ok", tuple(records), ttl)


def _text(payload: Any, rtype: RecordType) -> str:
    if rtype == "A":
        return str(payload.dottedQuad())
    if rtype == "AAAA":
        return socket.inet_ntop(socket.AF_INET6, payload.address)
    if rtype == "MX":
        return f"{payload.preference} {payload.name.name.decode('ascii', 'replace')}"
    return "".join(part.decode("utf-8", "replace") for part in payload.data)


class CachingDns:
    """A :class:`Dns` that caches answers for their TTL and joins identical
    queries that are in flight."""

    def __init__(self, inner: Dns, clock: Any, max_entries: int = 2000) -> None:
        self.inner = inner
        self._clock = clock
        self._max = max_entries
        self._cache: collections.OrderedDict[tuple[str, str], tuple[float, DnsResult]] = (
            collections.OrderedDict()
        )
        self._inflight: dict[tuple[str, str], list[defer.Deferred[DnsResult]]] = {}

    async def query(self, name: str, rtype: RecordType) -> DnsResult:
        key = (name.lower().rstrip("."), rtype)
        now = self._clock.seconds()
        cached = self._cache.get(key)
        if cached is not None:
            if cached[0] > now:
                self._cache.move_to_end(key)
                return cached[1]
            del self._cache[key]
        waiters = self._inflight.get(key)
        if waiters is not None:
            waiter: defer.Deferred[DnsResult] = defer.Deferred()
            waiters.append(waiter)
            return await waiter
        self._inflight[key] = []
        try:
            result = await self.inner.query(name, rtype)
        except Exception as e:  # a bug must not leave waiters hanging
            result = DnsResult("retry", reason=f"lookup error: {e!r}")
        for waiter in self._inflight.pop(key, []):
            waiter.callback(result)
        if result.status != "retry":
            ttl = result.ttl if result.status == "ok" else NEGATIVE_TTL
            self._cache[key] = (now + max(1, min(ttl, MAX_CACHE_TTL)), result)
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        return result
