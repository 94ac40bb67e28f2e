"""Tests for mta.delivery.tls and mta.delivery.dane: Postfix protocol and
policy syntax, name matching, DANE record matching."""

from __future__ import annotations

import pytest
from OpenSSL import SSL

from mta.delivery import dane
from mta.delivery.mx import TLSALookup, TLSARecord
from mta.delivery.tls import (
    Policy,
    PolicyError,
    TlsOutcome,
    TlsPlan,
    cert_matches,
    expand_match,
    make_plan,
    parse_policy,
    parse_protocols,
    policy_keys,
)
from tests.integration.deliverykit import issue, make_ca


def test_parse_protocols() -> None:
    """>=, <=, ! and plain names give OpenSSL bounds; junk is an error."""
    assert parse_protocols(">=TLSv1.2") == (SSL.TLS1_2_VERSION, None)
    assert parse_protocols("!SSLv2, !SSLv3, !TLSv1, !TLSv1.1") == (SSL.TLS1_2_VERSION, None)
    assert parse_protocols("TLSv1.2 TLSv1.3") == (SSL.TLS1_2_VERSION, None)
    assert parse_protocols("<=TLSv1.2") == (None, SSL.TLS1_2_VERSION)  # OpenSSL's floor
    with pytest.raises(PolicyError):
        parse_protocols("TLSv9")
    with pytest.raises(PolicyError):
        parse_protocols(">=TLSv1.3 <=TLSv1.2")


def test_parse_policy() -> None:
    """level [match=a:b] [protocols=...]; unknown levels and attributes fail."""
    p = parse_policy("secure match=.example.com:example.net protocols=>=TLSv1.2")
    assert p == Policy("secure", (".example.com", "example.net"), ">=TLSv1.2")
    with pytest.raises(PolicyError):
        parse_policy("paranoid")
    with pytest.raises(PolicyError):
        parse_policy("may color=blue")


def test_policy_keys() -> None:
    """The next hop as written, without port, then parent domains."""
    assert policy_keys("[relay.example]:587", "relay.example", False) == [
        "[relay.example]:587",
        "[relay.example]",
    ]
    assert policy_keys("mail.example.com", "mail.example.com", True) == [
        "mail.example.com",
        ".example.com",
        ".com",
    ]


def test_match_words_and_names(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """hostname/nexthop/dot-nexthop expand; a wildcard certificate matches
    one label; .domain matches subdomains only."""
    assert expand_match(
        ["hostname", "nexthop", "dot-nexthop"], hostname="mx.a.example", nexthop="a.example"
    ) == (
        "mx.a.example",
        "a.example",
        ".a.example",
    )
    cert = issue(tmp_path, ["*.a.example", "mail.b.example"]).cert
    assert cert_matches(cert, ["mx.a.example"])
    assert not cert_matches(cert, ["x.mx.a.example"])
    assert cert_matches(cert, [".b.example"])
    assert not cert_matches(cert, ["b.example"])


def test_plan_levels() -> None:
    """verify uses smtp_tls_verify_cert_match, secure the secure list; the
    mandatory levels use the mandatory protocols."""
    kw = dict(
        verify_match=["hostname"],
        secure_match=["nexthop", "dot-nexthop"],
        protocols=">=TLSv1",
        mandatory_protocols=">=TLSv1.2",
        trust=None,
    )
    verify = make_plan(Policy("verify"), hostname="mx.e.example", nexthop="e.example", **kw)  # type: ignore[arg-type]
    assert verify.names == ("mx.e.example",) and verify.mandatory
    assert verify.min_version == SSL.TLS1_2_VERSION
    may = make_plan(Policy("may"), hostname="mx.e.example", nexthop="e.example", **kw)  # type: ignore[arg-type]
    assert not may.mandatory and may.min_version == SSL.TLS1_VERSION
    secure = make_plan(Policy("secure"), hostname="mx.e.example", nexthop="e.example", **kw)  # type: ignore[arg-type]
    assert secure.names == ("e.example", ".e.example")


def test_dane_matching(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """DANE-EE matches the leaf's key whatever its name; DANE-TA matches
    the issuing CA in the chain and needs the name; PKIX usages are not
    usable for SMTP (RFC 7672 3.1)."""
    ca = make_ca(tmp_path)
    leaf = issue(tmp_path, ["mx.d.example"], ca).cert
    outcome = TlsOutcome(True, leaf=leaf, chain=(leaf, ca.cert))
    ee = TlsPlan(
        "dane", names=("other.example",), tlsa=(TLSARecord(3, 1, 1, dane.association(leaf, 1, 1)),)
    )
    assert dane.check(ee, outcome) is None
    ta = TlsPlan(
        "dane",
        names=("mx.d.example",),
        tlsa=(TLSARecord(2, 0, 1, dane.association(ca.cert, 0, 1)),),
    )
    assert dane.check(ta, outcome) is None
    misnamed = TlsPlan("dane", names=("x.example",), tlsa=ta.tlsa)
    assert dane.check(misnamed, outcome) == "Server certificate not trusted"
    assert dane.usable([TLSARecord(1, 1, 1, b"x"), TLSARecord(3, 1, 1, b"y")]) == (
        TLSARecord(3, 1, 1, b"y"),
    )


def test_dane_plan_for() -> None:
    """Secure usable TLSA: mandatory; insecure or none: opportunistic;
    a failed lookup: defer."""
    plan = TlsPlan("dane")
    rec = TLSARecord(3, 1, 1, b"\0" * 32)
    decided = dane.plan_for(plan, TLSALookup((rec,), True), host_secure=True)
    assert isinstance(decided, TlsPlan) and decided.mandatory and decided.tlsa == (rec,)
    insecure = dane.plan_for(plan, TLSALookup((rec,), False), host_secure=True)
    assert isinstance(insecure, TlsPlan) and insecure.level == "may"
    assert (
        dane.plan_for(plan, TLSALookup((), False, "TLSA lookup error"), host_secure=True)
        == "TLSA lookup error"
    )
