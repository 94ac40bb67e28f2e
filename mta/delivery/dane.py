"""DANE for SMTP (RFC 7672): TLSA records decide what a server must present.

Inputs: the TLSA records of ``_25._tcp.<mx host>`` with whether DNSSEC
validated them (:func:`mta.delivery.mx.lookup_tlsa`), and after the
handshake the server's certificate chain and the names to check.  Outputs:
the plan change (:func:`plan_for`: with usable secure TLSA records TLS is
mandatory and authenticated by them; without, ``dane`` is opportunistic),
and :func:`check`, the reason a chain does not match, or None.

RFC 7672 3.1: only DANE-TA(2) and DANE-EE(3) are usable for SMTP; PKIX
usages 0 and 1 are not.  DANE-EE matches the leaf and ignores names and
dates (3.1.1); DANE-TA matches a certificate of the chain and the leaf must
chain to it and name the TLSA base domain or the next hop (3.1.2, 3.2.2).
Selectors: 0 the whole certificate, 1 its SubjectPublicKeyInfo; matching
types: 0 exact, 1 SHA-256, 2 SHA-512.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from OpenSSL import crypto

from mta.delivery.mx import TLSALookup, TLSARecord
from mta.delivery.tls import TlsOutcome, TlsPlan, cert_matches

USABLE_USAGES = frozenset({2, 3})
_NO_CHECK_TIME = 0x200000  # X509_V_FLAG_NO_CHECK_TIME, which pyOpenSSL does not name


def usable(records: Sequence[TLSARecord]) -> tuple[TLSARecord, ...]:
    """The records an SMTP client can use (RFC 7672 3.1, RFC 6698 2.1)."""
    return tuple(
        r
        for r in records
        if r.usage in USABLE_USAGES and r.selector in (0, 1) and r.mtype in (0, 1, 2)
    )


def plan_for(plan: TlsPlan, lookup: TLSALookup, *, host_secure: bool) -> TlsPlan | str:
    """The plan for one MX host at level dane/dane-only, given its TLSA
    lookup; a string is the reason to defer instead."""
    if lookup.error:
        # RFC 7672 2.2: a failed lookup of a possibly secure RRset must not
        # fall back to plaintext.
        return lookup.error
    records = usable(lookup.records) if (lookup.secure and host_secure) else ()
    if records:
        return replace(plan, level="dane", tlsa=records, source="dane")
    if lookup.secure and host_secure and lookup.records:
        # TLSA records exist but none is usable: encrypt, no authentication.
        return replace(plan, level="encrypt" if plan.level == "dane" else "dane-only")
    if plan.level == "dane-only":
        return replace(plan, level="dane-only")
    return replace(plan, level="may")


def _association(cert: x509.Certificate, selector: int, mtype: int) -> bytes:
    if selector == 0:
        data = cert.public_bytes(Encoding.DER)
    else:
        data = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if mtype == 1:
        return hashlib.sha256(data).digest()
    if mtype == 2:
        return hashlib.sha512(data).digest()
    return data


def association(cert: x509.Certificate, selector: int, mtype: int) -> bytes:
    """The TLSA certificate association data of ``cert`` (for tests and
    for publishing records)."""
    return _association(cert, selector, mtype)


def check(plan: TlsPlan, outcome: TlsOutcome) -> str | None:
    """Why the server's chain does not match the plan's TLSA records, or
    None when it does."""
    leaf = outcome.leaf
    if leaf is None:
        return "Server certificate not trusted"
    for r in plan.tlsa:
        if r.usage == 3 and _association(leaf, r.selector, r.mtype) == r.data:
            return None
    for r in plan.tlsa:
        if r.usage != 2:
            continue
        for anchor in outcome.chain:
            if _association(anchor, r.selector, r.mtype) != r.data:
                continue
            if _chains_to(leaf, anchor, outcome.chain) and cert_matches(leaf, plan.names):
                return None
    return "Server certificate not trusted"


def _chains_to(
    leaf: x509.Certificate, anchor: x509.Certificate, chain: Sequence[x509.Certificate]
) -> bool:
    """Whether ``leaf`` verifies up to ``anchor`` through ``chain``."""
    if leaf == anchor:
        return True
    store = crypto.X509Store()
    store.add_cert(crypto.X509.from_cryptography(anchor))
    # RFC 7672 3.1.2: the trust anchor's dates and the leaf's do not
    # matter less than its signature; a partial chain anchor is enough.
    store.set_flags(crypto.X509StoreFlags.PARTIAL_CHAIN | _NO_CHECK_TIME)
    intermediates = [crypto.X509.from_cryptography(c) for c in chain if c != leaf and c != anchor]
    ctx = crypto.X509StoreContext(store, crypto.X509.from_cryptography(leaf), intermediates)
    try:
        ctx.verify_certificate()
    except crypto.X509StoreContextError:
        return False
    return True
