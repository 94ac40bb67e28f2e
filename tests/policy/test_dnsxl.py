"""DNS list arguments, query names, reply templates and the DNS cache."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, task

from mta.policy.dns import CachingDns, DnsResult
from mta.policy.dnsxl import (
    DEFAULT_RBL_REPLY,
    DnsList,
    DnsxlError,
    ReplyFilter,
    expand,
    rbl_reply,
    reverse_query,
    rhs_domain,
)


@pytest.mark.parametrize(
    ("pattern", "address", "matches"),
    [
        ("127.0.0.2", "127.0.0.2", True),
        ("127.0.0.2", "127.0.0.3", False),
        ("127.0.0.[2..11]", "127.0.0.11", True),
        ("127.0.0.[2..11;13]", "127.0.0.13", True),
        ("127.0.0.[2..11;13]", "127.0.0.12", False),
        ("127.[0;1].0.2", "127.1.0.2", True),
    ],
)
def test_reply_filter(pattern: str, address: str, matches: bool) -> None:
    """=d.d.d.d with [list;ranges] octets, as Postfix ip_match."""
    assert ReplyFilter.parse(pattern).matches(address) is matches


@pytest.mark.parametrize(
    "bad", ["127.0.0", "127.0.0.256", "127.0.0.[3..2]", "127.0.0.[2", "a.b.c.d"]
)
def test_reply_filter_errors(bad: str) -> None:
    """A malformed filter is an error at configuration time."""
    with pytest.raises(DnsxlError):
        DnsList.parse(f"zen.test={bad}")


def test_query_names() -> None:
    """IPv4 octets and IPv6 nibbles reversed; RHSBL domains of addresses and
    names, skipping literals and numeric names."""
    assert reverse_query("192.0.2.10") == "10.2.0.192"
    assert reverse_query("::ffff:192.0.2.10") == "10.2.0.192"
    assert reverse_query("2001:db8::1") == (
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"
    )
    assert rhs_domain("user@Example.ORG") == "Example.ORG"
    assert rhs_domain("user@[192.0.2.1]") is None
    assert rhs_domain("host.123") is None
    assert rhs_domain("bad..name") is None


def test_templates() -> None:
    """$name, ${name?text}, ${name:text}; unknown names are errors."""
    names = {"a": "x", "empty": ""}
    assert expand("$a-${a}-${a?yes}-${empty?no}-${empty:fallback}-$$", names.get) == (
        "x-x-yes--fallback-$"
    )
    with pytest.raises(DnsxlError):
        expand("$nosuch", names.get)
    reply = rbl_reply(
        DEFAULT_RBL_REPLY,
        code=554,
        dnslist=DnsList.parse("zen.test=127.0.0.2"),
        what="192.0.2.1",
        reply_class="Client host",
        txt="",
        attributes={},
    )
    assert reply == "554 Service unavailable; Client host [192.0.2.1] blocked using zen.test"


class _CountingDns:
    def __init__(self) -> None:
        self.calls = 0
        self.waiters: list[defer.Deferred[DnsResult]] = []

    async def query(self, name: str, rtype: str) -> DnsResult:  # type: ignore[override]
        self.calls += 1
        d: defer.Deferred[DnsResult] = defer.Deferred()
        self.waiters.append(d)
        return await d


def test_cache_joins_queries_and_keeps_answers_for_their_ttl() -> None:
    """Two sessions asking at once cause one query; the answer is reused
    until its TTL; temporary failures are not kept."""
    clock = task.Clock()
    inner = _CountingDns()
    dns = CachingDns(inner, clock)  # type: ignore[arg-type]
    first = defer.Deferred.fromCoroutine(dns.query("x.test", "A"))
    second = defer.Deferred.fromCoroutine(dns.query("X.test.", "A"))
    assert inner.calls == 1
    inner.waiters[0].callback(DnsResult("ok", ("127.0.0.2",), 30))
    assert first.result == second.result
    third = defer.Deferred.fromCoroutine(dns.query("x.test", "A"))
    assert third.called and inner.calls == 1
    clock.advance(31)
    defer.Deferred.fromCoroutine(dns.query("x.test", "A"))
    assert inner.calls == 2
    inner.waiters[1].callback(DnsResult("retry"))
    defer.Deferred.fromCoroutine(dns.query("x.test", "A"))
    assert inner.calls == 3


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789.[];=az", max_size=30))
def test_list_arguments_raise_only_dnsxl_errors(arg: str) -> None:
    """Any list argument parses or is a DnsxlError."""
    try:
        DnsList.parse(arg)
    except DnsxlError:
        pass
