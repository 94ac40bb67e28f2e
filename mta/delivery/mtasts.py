"""MTA-STS (RFC 8461): a recipient domain's published demand for verified TLS.

Inputs: a recipient domain; DNS (the ``_mta-sts.<domain>`` TXT record,
through the delivery resolver) and HTTPS (the policy at
``https://mta-sts.<domain>/.well-known/mta-sts.txt``, fetched with
Twisted's web client Agent, certificate checked against the trust store).
Outputs: :class:`StsPolicy` (mode, MX patterns, max_age) from
:meth:`PolicyCache.get`, which keeps policies for their max_age and fetches
again only when the TXT id changes (RFC 8461 5.1), and
:func:`mx_allowed`, the MX name check of RFC 8461 4.1.

Enforcement (by the delivery agent): with mode ``enforce`` only MX hosts
that match the policy are used, and TLS must verify against the MX name
(PKIX), else the mail is deferred; ``testing`` only logs; ``none`` and no
policy change nothing.  A fetch that fails leaves a cached policy in force
and otherwise means no policy (RFC 8461 5.1, 4.3).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.resolver
from twisted.internet import defer, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.ssl import (
    Certificate,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from zope.interface import implementer

from mta.delivery import mx

MAX_POLICY_SIZE = 64 * 1024  # RFC 8461 3.3: 64 KiB is enough
MAX_AGE_LIMIT = 31557600  # RFC 8461 3.2
FETCH_TIMEOUT = 60.0

_log = Logger()
_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")


@dataclass(frozen=True)
class StsPolicy:
    mode: str  # "enforce", "testing" or "none"
    mx: tuple[str, ...]
    max_age: int
    policy_id: str = ""


class StsError(ValueError):
    """A policy or record that does not follow RFC 8461."""


def parse_txt(records: list[str]) -> str | None:
    """The policy id of the ``_mta-sts`` TXT records, or None when there
    is no valid STSv1 record (RFC 8461 3.1: exactly one)."""
    found = [r for r in records if r.startswith("v=STSv1")]
    if len(found) != 1:
        return None
    fields = {}
    for part in found[0].split(";"):
        key, sep, value = part.strip().partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    policy_id = fields.get("id", "")
    return policy_id if _ID.match(policy_id) else None


def parse_policy(text: str, policy_id: str = "") -> StsPolicy:
    """The policy file (RFC 8461 3.2); raises StsError."""
    fields: dict[str, list[str]] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise StsError(f"bad policy line: {line[:60]!r}")
        fields.setdefault(key.strip(), []).append(value.strip())
    if fields.get("version") != ["STSv1"]:
        raise StsError("policy version is not STSv1")
    modes = fields.get("mode", [])
    if len(modes) != 1 or modes[0] not in ("enforce", "testing", "none"):
        raise StsError("bad or missing policy mode")
    ages = fields.get("max_age", [])
    if len(ages) != 1 or not ages[0].isdigit():
        raise StsError("bad or missing max_age")
    patterns = tuple(m.lower().rstrip(".") for m in fields.get("mx", []))
    if modes[0] != "none" and not patterns:
        raise StsError("policy lists no mx")
    return StsPolicy(modes[0], patterns, min(int(ages[0]), MAX_AGE_LIMIT), policy_id)


def mx_allowed(policy: StsPolicy, host: str) -> bool:
    """RFC 8461 4.1: an MX name matches a pattern exactly, or ``*.domain``
    matches one extra leftmost label."""
    name = host.lower().rstrip(".")
    for pattern in policy.mx:
        if pattern.startswith("*."):
            head, _, rest = name.partition(".")
            if head and rest == pattern[2:]:
                return True
        elif name == pattern:
            return True
    return False


@implementer(IStreamClientEndpoint)
class _ResolvingEndpoint:
    """HTTPS to a host name resolved through the delivery resolver (so
    ``dns_nameservers`` applies), certificate checked for that name."""

    def __init__(
        self, reactor: Any, resolver: dns.resolver.Resolver, host: str, port: int, trust: Any
    ) -> None:
        self.reactor = reactor
        self.resolver = resolver
        self.host = host
        self.port = port
        self.trust = trust

    def connect(self, protocolFactory: Any) -> defer.Deferred[Any]:
        return defer.Deferred.fromCoroutine(self._connect(protocolFactory))

    async def _connect(self, protocolFactory: Any) -> Any:
        addresses = await mx.resolve_host(
            self.reactor, self.resolver, self.host, mx.LookupOptions()
        )
        if not addresses:
            raise ConnectionError(f"{self.host}: no address")
        address = addresses[0]
        version = ipaddress.ip_address(address).version
        tcp: Any
        if version == 4:
            tcp = TCP4ClientEndpoint(self.reactor, address, self.port, timeout=30)
        else:
            tcp = TCP6ClientEndpoint(self.reactor, address, self.port, timeout=30)  # type: ignore[no-untyped-call]
        options = optionsForClientTLS(self.host, trustRoot=self.trust)
        return await wrapClientTLS(options, tcp).connect(protocolFactory)


class _EndpointFactory:
    def __init__(self, fetcher: PolicyFetcher) -> None:
        self.fetcher = fetcher

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        host = uri.host.decode("ascii") if isinstance(uri.host, bytes) else str(uri.host)
        f = self.fetcher
        return _ResolvingEndpoint(f.reactor, f.resolver, host, uri.port, f.trust)


class PolicyFetcher:
    """Gets policy files over HTTPS; ``https_port`` is 443 (tests change it)."""

    def __init__(
        self,
        reactor: Any,
        resolver: dns.resolver.Resolver,
        cafile: Path | None = None,
        https_port: int = 443,
    ) -> None:
        self.reactor = reactor
        self.resolver = resolver
        self.https_port = https_port
        self.trust = _trust_root(cafile)
        self.agent = Agent.usingEndpointFactory(reactor, _EndpointFactory(self))  # type: ignore[no-untyped-call]

    async def fetch(self, domain: str) -> str:
        """The policy text of ``domain``; raises on any failure."""
        port = "" if self.https_port == 443 else f":{self.https_port}"
        url = f"https://mta-sts.{domain}{port}/.well-known/mta-sts.txt"
        request = self.agent.request(b"GET", url.encode("ascii"), Headers({}), None)
        request.addTimeout(FETCH_TIMEOUT, self.reactor)
        response = await request
        if response.code != 200:  # RFC 8461 3.3: no redirects either
            raise StsError(f"HTTP status {response.code}")
        ctype = response.headers.getRawHeaders(b"content-type", [b""])[0].lower()
        if not ctype.startswith(b"text/plain"):
            raise StsError(f"content type {ctype.decode('latin-1')!r} is not text/plain")
        if isinstance(response.length, int) and response.length > MAX_POLICY_SIZE:
            raise StsError("policy too large")
        body = await readBody(response)
        if len(body) > MAX_POLICY_SIZE:
            raise StsError("policy too large")
        return body.decode("utf-8")


def _trust_root(cafile: Path | None) -> Any:
    if cafile is None:
        return platformTrust()  # type: ignore[no-untyped-call]
    pem = cafile.read_bytes()
    certs = [
        Certificate.loadPEM(b"-----BEGIN CERTIFICATE-----" + block)
        for block in pem.split(b"-----BEGIN CERTIFICATE-----")[1:]
    ]
    return trustRootFromCertificates(certs)  # type: ignore[no-untyped-call]


@dataclass
class _Entry:
    policy: StsPolicy
    expires: float


class PolicyCache:
    """Policies by domain, kept for their max_age (RFC 8461 5.1)."""

    def __init__(
        self,
        reactor: Any,
        resolver: dns.resolver.Resolver,
        fetcher: PolicyFetcher,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.reactor = reactor
        self.resolver = resolver
        self.fetcher = fetcher
        self._now = clock or reactor.seconds
        self._entries: dict[str, _Entry] = {}

    async def get(self, domain: str) -> StsPolicy | None:
        domain = domain.lower().rstrip(".")
        now = self._now()
        cached = self._entries.get(domain)
        if cached is not None and cached.expires <= now:
            del self._entries[domain]
            cached = None
        records = await threads.deferToThreadPool(
            self.reactor,
            self.reactor.getThreadPool(),
            mx.lookup_txt_blocking,
            self.resolver,
            f"_mta-sts.{domain}",
        )
        policy_id = parse_txt(records) if records else None
        if policy_id is None or (cached is not None and cached.policy.policy_id == policy_id):
            return cached.policy if cached is not None else None
        try:
            text = await self.fetcher.fetch(domain)
            policy = parse_policy(text, policy_id)
        except Exception as e:
            _log.info("MTA-STS policy fetch for {domain} failed: {e}", domain=domain, e=e)
            return cached.policy if cached is not None else None
        if policy.mode == "none":
            self._entries.pop(domain, None)
        self._entries[domain] = _Entry(policy, now + policy.max_age)
        return policy
