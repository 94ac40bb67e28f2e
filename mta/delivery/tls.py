"""Outbound TLS policy: what a delivery demands of STARTTLS, and whether a
handshake met it.

Inputs: ``smtp_tls_security_level`` and the per-destination
``smtp_tls_policy_maps`` entry (``level [match=...] [protocols=...]``), the
protocol lists, the trust store (``smtp_tls_CAfile``/``smtp_tls_CApath``,
else the system's), the next hop and MX host names.  Outputs:
:class:`TlsPlan` (what to demand of one server), :class:`ClientTLS` (the
pyOpenSSL connection creator Twisted's ``startTLS`` takes: it records
certificate problems instead of failing the handshake, so that ``may`` and
``encrypt`` can go on with any certificate), :class:`TlsOutcome` (what the
handshake gave: protocol, cipher, trust, whether the names matched) and the
Postfix-format log text.

Levels, as Postfix (TLS_README): ``none`` never; ``may`` when offered, and
a failed handshake retries in plaintext; ``encrypt`` always, any
certificate; ``verify`` a trusted chain that names the MX host
(``smtp_tls_verify_cert_match``); ``secure`` a trusted chain that names the
next hop (``smtp_tls_secure_cert_match``, default ``nexthop, dot-nexthop``),
so DNS cannot redirect it; ``dane``/``dane-only`` see :mod:`mta.delivery.dane`.
Names are checked with service-identity (RFC 6125).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from OpenSSL import SSL, crypto
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

from mta.tables import LookupTable

LEVELS = ("none", "may", "encrypt", "dane", "dane-only", "verify", "secure")
MANDATORY = frozenset({"encrypt", "dane-only", "verify", "secure"})
VERIFIED = frozenset({"verify", "secure"})

_VERSIONS = {
    "SSLv3": SSL.SSL3_VERSION,
    "TLSv1": SSL.TLS1_VERSION,
    "TLSv1.1": SSL.TLS1_1_VERSION,
    "TLSv1.2": SSL.TLS1_2_VERSION,
    "TLSv1.3": SSL.TLS1_3_VERSION,
}
_ORDER = ["SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]


class PolicyError(ValueError):
    """A TLS setting that cannot be used (a configuration error)."""


def parse_protocols(text: str) -> tuple[int | None, int | None]:
    """A Postfix protocol list (``>=TLSv1.2``, ``!SSLv2, !SSLv3``,
    ``TLSv1.2 TLSv1.3``, ``<=TLSv1.2``) → (minimum, maximum) OpenSSL
    versions; None for no bound.  Raises PolicyError."""
    allowed = set(_ORDER)
    listed: set[str] = set()
    low, high = 0, len(_ORDER) - 1
    for word in re.split(r"[\s,:]+", text.strip()):
        if not word:
            continue
        op = ""
        for prefix in (">=", "<=", "!"):
            if word.startswith(prefix):
                op, word = prefix, word[len(prefix) :]
                break
        if word not in _ORDER:
            raise PolicyError(f'unknown TLS protocol "{word}"')
        index = _ORDER.index(word)
        if op == ">=":
            low = max(low, index)
        elif op == "<=":
            high = min(high, index)
        elif op == "!":
            allowed.discard(word)
        else:
            listed.add(word)
    if listed:
        allowed &= listed
    usable = [p for i, p in enumerate(_ORDER) if low <= i <= high and p in allowed and p != "SSLv2"]
    if not usable:
        raise PolicyError(f'no usable TLS protocol in "{text}"')
    minimum = _VERSIONS[usable[0]] if usable[0] != "SSLv3" else SSL.SSL3_VERSION
    maximum = _VERSIONS[usable[-1]]
    return (
        None if usable[0] == "SSLv3" else minimum,
        None if usable[-1] == "TLSv1.3" else maximum,
    )


@dataclass(frozen=True)
class Policy:
    """A destination's TLS policy before it meets a server: the level,
    ``match`` patterns (Postfix words ``hostname``, ``nexthop``,
    ``dot-nexthop`` or names; ``.domain`` for subdomains), the protocols."""

    level: str
    match: tuple[str, ...] = ()
    protocols: str = ""


def parse_policy(value: str) -> Policy:
    """An smtp_tls_policy_maps value: ``level [name=value ...]``."""
    words = value.split()
    if not words:
        raise PolicyError("empty TLS policy")
    level = words[0].lower()
    if level == "fingerprint":
        raise PolicyError("TLS policy level fingerprint is not supported")
    if level not in LEVELS:
        raise PolicyError(f'unknown TLS security level "{words[0]}"')
    match: tuple[str, ...] = ()
    protocols = ""
    for word in words[1:]:
        name, sep, arg = word.partition("=")
        name = name.lower()
        if not sep:
            raise PolicyError(f'bad TLS policy attribute "{word}"')
        if name == "match":
            # Postfix separates match patterns with ":" in policy tables.
            match = tuple(m for m in re.split(r"[:\s,]+", arg) if m)
        elif name == "protocols":
            parse_protocols(arg)
            protocols = arg
        elif name in ("ciphers", "exclude", "tafile", "connection_reuse", "servername"):
            continue  # accepted; the OpenSSL defaults decide ciphers
        else:
            raise PolicyError(f'unknown TLS policy attribute "{name}"')
    return Policy(level, match, protocols)


def policy_keys(nexthop: str, domain: str, use_mx: bool) -> list[str]:
    """The smtp_tls_policy_maps keys for a next hop, most specific first:
    the next hop as written (``[host]:port``, ``domain``), then without the
    port, then for a domain its ``.parent`` forms."""
    keys = [nexthop]
    if nexthop.startswith("["):
        bare = nexthop.rsplit(":", 1)[0] if "]:" in nexthop else nexthop
        keys.append(bare)
    elif ":" in nexthop:
        keys.append(nexthop.rsplit(":", 1)[0])
    if use_mx:
        keys.append(domain)
        parts = domain.split(".")
        keys.extend("." + ".".join(parts[i:]) for i in range(1, len(parts)))
    return list(dict.fromkeys(k for k in keys if k))


def find_policy(tables: Sequence[LookupTable], keys: Iterable[str]) -> Policy | None:
    """The first policy the tables give for ``keys`` (each key is asked of
    every table before the next, less specific key)."""
    for key in keys:
        for table in tables:
            value = table.lookup(key)
            if value is not None:
                return parse_policy(value)
    return None


@dataclass(frozen=True)
class TrustStore:
    """``smtp_tls_CAfile``/``smtp_tls_CApath``; both empty: the system's."""

    cafile: Path | None = None
    capath: Path | None = None

    def apply(self, ctx: SSL.Context) -> None:
        if self.cafile is None and self.capath is None:
            ctx.set_default_verify_paths()
            return
        ctx.load_verify_locations(
            str(self.cafile) if self.cafile else None, str(self.capath) if self.capath else None
        )

    def check(self) -> None:
        """Raises PolicyError when a file or directory is unusable."""
        if self.cafile is not None:
            try:
                data = self.cafile.read_bytes()
            except OSError as e:
                raise PolicyError(f"smtp_tls_CAfile {self.cafile}: {e.strerror}") from None
            if b"-----BEGIN CERTIFICATE-----" not in data:
                raise PolicyError(f"smtp_tls_CAfile {self.cafile}: no PEM certificate in it")
        if self.capath is not None and not self.capath.is_dir():
            raise PolicyError(f"smtp_tls_CApath {self.capath}: not a directory")


@dataclass(frozen=True)
class TlsPlan:
    """What to demand of one server: the level, the names its certificate
    must hold (for verify/secure and DANE-TA), the protocol bounds, SNI."""

    level: str
    names: tuple[str, ...] = ()
    min_version: int | None = None
    max_version: int | None = None
    server_name: str = ""
    trust: TrustStore = field(default_factory=TrustStore)
    tlsa: tuple[Any, ...] = ()  # mx.TLSARecord, usable ones (level dane)
    source: str = ""  # "", "policy", "dane", "mta-sts": for the log

    @property
    def mandatory(self) -> bool:
        return self.level in MANDATORY or (self.level == "dane" and bool(self.tlsa))

    @property
    def wants_tls(self) -> bool:
        return self.level != "none"


def expand_match(patterns: Iterable[str], *, hostname: str, nexthop: str) -> tuple[str, ...]:
    """Postfix's match words made names: ``hostname`` (the MX host),
    ``nexthop`` (the destination), ``dot-nexthop`` (its subdomains)."""
    out: list[str] = []
    for pattern in patterns:
        word = pattern.lower()
        if word == "hostname":
            out.append(hostname)
        elif word == "nexthop":
            out.append(nexthop)
        elif word == "dot-nexthop":
            out.append("." + nexthop)
        else:
            out.append(word)
    return tuple(dict.fromkeys(n.rstrip(".") for n in out if n and n != "."))


def make_plan(
    policy: Policy,
    *,
    hostname: str,
    nexthop: str,
    verify_match: Sequence[str],
    secure_match: Sequence[str],
    protocols: str,
    mandatory_protocols: str,
    trust: TrustStore,
) -> TlsPlan:
    """The plan for one server named ``hostname`` (the MX host, or the
    relay host) of the destination ``nexthop``."""
    level = policy.level
    if level in ("verify", "secure"):
        patterns = policy.match or tuple(verify_match if level == "verify" else secure_match)
    elif level in ("dane", "dane-only"):
        patterns = ("hostname", "nexthop")
    else:
        patterns = ()
    chosen = policy.protocols or (mandatory_protocols if level in MANDATORY else protocols)
    low, high = parse_protocols(chosen)
    return TlsPlan(
        level=level,
        names=expand_match(patterns, hostname=hostname, nexthop=nexthop),
        min_version=low,
        max_version=high,
        server_name=hostname if not _is_ip(hostname) else "",
        trust=trust,
    )


def _is_ip(name: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


# -- the handshake -------------------------------------------------------------


@implementer(IOpenSSLClientConnectionCreator)
class ClientTLS:
    """Makes the client's OpenSSL connection for one STARTTLS.  The chain is
    verified against the trust store, but a failure is only recorded
    (:attr:`verify_errors`): the plan decides afterwards whether it matters."""

    def __init__(self, plan: TlsPlan) -> None:
        self.plan = plan
        self.verify_errors: list[tuple[int, int]] = []  # (depth, X509 error)
        self.connection: SSL.Connection | None = None

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        ctx = SSL.Context(SSL.TLS_METHOD)
        if self.plan.min_version is not None:
            ctx.set_min_proto_version(self.plan.min_version)
        if self.plan.max_version is not None:
            ctx.set_max_proto_version(self.plan.max_version)
        ctx.set_options(SSL.OP_NO_COMPRESSION)
        self.plan.trust.apply(ctx)
        ctx.set_verify(SSL.VERIFY_PEER, self._verify)
        conn = SSL.Connection(ctx, None)
        conn.set_app_data(tlsProtocol)
        if self.plan.server_name:
            conn.set_tlsext_host_name(self.plan.server_name.encode("idna"))
        conn.set_connect_state()
        self.connection = conn
        return conn

    def _verify(
        self, conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int
    ) -> bool:
        if not ok:
            self.verify_errors.append((depth, errno))
        return True  # decide after the handshake, by the plan

    def outcome(self) -> TlsOutcome:
        conn = self.connection
        if conn is None:
            return TlsOutcome(established=False)
        leaf = conn.get_peer_certificate()
        chain = conn.get_peer_cert_chain() or []
        version = conn.get_protocol_version_name()
        cipher = conn.get_cipher_name() or ""
        bits = conn.get_cipher_bits() or 0
        leaf_c = leaf.to_cryptography() if leaf is not None else None
        trusted = leaf is not None and not self.verify_errors
        names_ok = (
            leaf_c is not None and bool(self.plan.names) and cert_matches(leaf_c, self.plan.names)
        )
        return TlsOutcome(
            established=True,
            protocol=version,
            cipher=cipher,
            bits=bits,
            trusted=trusted,
            name_matched=names_ok,
            leaf=leaf_c,
            chain=tuple(c.to_cryptography() for c in chain),
        )


@dataclass(frozen=True)
class TlsOutcome:
    """What a handshake gave.  ``trusted``: the chain verified against the
    trust store; ``name_matched``: the certificate names one of the plan's
    names; ``dane``: it matched a TLSA record (set by the DANE check)."""

    established: bool
    protocol: str = ""
    cipher: str = ""
    bits: int = 0
    trusted: bool = False
    name_matched: bool = False
    dane: bool = False
    leaf: x509.Certificate | None = None
    chain: tuple[x509.Certificate, ...] = ()

    def grade(self, plan: TlsPlan) -> str:
        """Postfix's word for the connection: Anonymous, Untrusted,
        Trusted or Verified."""
        if self.leaf is None:
            return "Anonymous"
        if self.dane or (self.trusted and self.name_matched and plan.level in VERIFIED):
            return "Verified"
        if self.trusted:
            return "Trusted"
        return "Untrusted"

    def describe(self, peer: str) -> str:
        return f"{peer}: {self.protocol} with cipher {self.cipher} ({self.bits}/{self.bits} bits)"


def check_outcome(plan: TlsPlan, outcome: TlsOutcome) -> str | None:
    """Why the handshake does not meet the plan (Postfix's reason), or
    None.  DANE is checked by :func:`mta.delivery.dane.check`."""
    if plan.level in VERIFIED:
        if not outcome.trusted:
            return "Server certificate not trusted"
        if not outcome.name_matched:
            return "Server certificate not verified"
    return None


def cert_matches(cert: x509.Certificate, names: Iterable[str]) -> bool:
    """Whether ``cert`` names one of ``names`` (RFC 6125 via
    service-identity; ``.domain`` means any subdomain of domain).  A
    certificate without subjectAltName is checked by its CN, as Postfix."""
    dns_names = _dns_names(cert)
    for name in names:
        if name.startswith("."):
            suffix = name.lower()
            if any(n.lower().endswith(suffix) and not n.startswith("*") for n in dns_names):
                return True
            if any(
                n.startswith("*.") and ("." + n[2:]).lower().endswith(suffix) for n in dns_names
            ):
                return True
            continue
        try:
            if _is_ip(name):
                verify_certificate_ip_address(cert, name)
            else:
                verify_certificate_hostname(cert, name)
            return True
        except (VerificationError, CertificateError):
            if not _has_san(cert) and name.lower() in (n.lower() for n in dns_names):
                return True
    return False


def _has_san(cert: x509.Certificate) -> bool:
    try:
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return False
    return True


def _dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return [str(n) for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        return [str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
