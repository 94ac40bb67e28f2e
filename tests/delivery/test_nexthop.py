"""Tests for mta.delivery.nexthop: Postfix next-hop syntax."""

from __future__ import annotations

import pytest

from mta.delivery.nexthop import NextHop, parse_nexthop


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("example.com", NextHop("example.com", 25, mx=True)),
        ("example.com:2525", NextHop("example.com", 2525, mx=True)),
        ("[mail.example.com]", NextHop("mail.example.com", 25, mx=False)),
        ("[mail.example.com]:587", NextHop("mail.example.com", 587, mx=False)),
        ("[192.0.2.1]", NextHop("192.0.2.1", 25, mx=False)),
        ("[192.0.2.1]:10025", NextHop("192.0.2.1", 10025, mx=False)),
        ("[ipv6:::1]", NextHop("::1", 25, mx=False)),
        ("[IPv6:2001:db8::1]:2525", NextHop("2001:db8::1", 2525, mx=False)),
        ("[::1]:24", NextHop("::1", 24, mx=False)),
        ("[mail.example.com]:smtp", NextHop("mail.example.com", 25, mx=False)),
        ("relay.example.com:submission", NextHop("relay.example.com", 587, mx=True)),
        ("[relay.example.com]:lmtp", NextHop("relay.example.com", 24, mx=False)),
        ("  example.com  ", NextHop("example.com", 25, mx=True)),
        ("example.com.", NextHop("example.com", 25, mx=True)),
        ("inet:[127.0.0.1]:24", NextHop("127.0.0.1", 24, mx=False)),
        ("192.0.2.7", NextHop("192.0.2.7", 25, mx=False)),  # an address has no MX
        ("bücher.example", NextHop("bücher.example", 25, mx=True)),
        ("_relay.example.com", NextHop("_relay.example.com", 25, mx=True)),
    ],
)
def test_forms(value: str, expected: NextHop) -> None:
    """Each Postfix next-hop form gives host, port and whether MX applies."""
    assert parse_nexthop(value, 25) == expected


def test_default_port_is_the_agents() -> None:
    """Without a port the delivery agent's default applies (24 for LMTP)."""
    assert parse_nexthop("[10.0.0.1]", 24).port == 24


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("[mail.example.com", "missing ']'"),
        ("[mail.example.com]x", "after ']'"),
        ("[mail.example.com]:", "missing port"),
        ("example.com:", "missing port"),
        ("example.com:0", "out of range"),
        ("example.com:65536", "out of range"),
        ("example.com:nosuchservice", "unknown service"),
        ("::1", "brackets"),
        ("2001:db8::1:25", "brackets"),
        ("[ipv6:192.0.2.1]", "IPv6"),
        ("[ipv6:nonsense]", "IPv6"),
        ("[]", "missing host"),
        (":25", "missing host"),
        ("bad host", "bad host name"),
        ("-bad.example", "bad host name"),
        ("a..example", "bad host name"),
        ("x" * 64 + ".example", "bad host name"),
        ("unix:/var/run/lmtp", "UNIX-domain"),
    ],
)
def test_errors(value: str, reason: str) -> None:
    """Malformed next hops raise ValueError that says what is wrong."""
    with pytest.raises(ValueError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        parse_nexthop(value, 25)


@pytest.mark.parametrize("value", ["[192.0.2.1]:25", "example.com:25", "[::1]:24"])
def test_str_round_trips(value: str) -> None:
    """str() writes the next hop back in Postfix syntax."""
    hop = parse_nexthop(value, 25)
    assert parse_nexthop(str(hop), 25) == hop
