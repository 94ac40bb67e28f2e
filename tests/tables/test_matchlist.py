"""Match lists: DomainList (mydestination, ...) and NetworkList (mynetworks)."""

from pathlib import Path

import pytest

from mta.tables import TableCache
from mta.tables.base import TableError
from mta.tables.matchlist import DomainList, NetworkList

HERE = Path(".")


def domains(*elements: str, parent: bool = True, base_dir: Path = HERE) -> DomainList:
    return DomainList(elements, parent_matches_subdomains=parent, base_dir=base_dir)


@pytest.mark.parametrize(
    ("parent", "domain", "expected"),
    [
        (True, "example.com", True),
        (True, "EXAMPLE.com.", True),  # case and trailing dot ignored
        (True, "mail.example.com", True),  # parent matches subdomains
        (False, "mail.example.com", False),  # ... only when enabled
        (False, "example.com", True),
        (True, "badexample.com", False),  # a suffix is not a parent
        (True, "a.sub.example.org", True),  # .example.org: subdomains
        (False, "a.sub.example.org", True),
        (True, "example.org", False),  # ... but not the domain itself
        (True, "", False),
    ],
)
def test_domain_patterns(parent: bool, domain: str, expected: bool) -> None:
    """Plain names, .subdomain patterns and parent matching."""
    assert domains("Example.COM.", ".example.org", parent=parent).matches(domain) is expected


def test_domain_negation_first_match_decides() -> None:
    """!pattern before a broader pattern excludes; after it, it is too late."""
    first = domains("!private.example.com", "example.com")
    assert first.matches("www.example.com")
    assert not first.matches("private.example.com")
    assert not first.matches("x.private.example.com")
    late = domains("example.com", "!private.example.com")
    assert late.matches("private.example.com")
    assert domains("!!example.com").matches("example.com")


def test_domain_table_elements(tmp_path: Path) -> None:
    """A type:table element looks up the domain, then its parents; any
    value counts as a match."""
    (tmp_path / "relay").write_text("example.com anything\n.example.net x\n")
    on = domains("hash:relay", base_dir=tmp_path)
    assert on.matches("example.com")
    assert on.matches("a.b.example.com")
    assert not on.matches("example.net")
    off = domains("hash:relay", parent=False, base_dir=tmp_path)
    assert not off.matches("a.example.com")
    assert off.matches("a.example.net")
    assert domains("!inline:{bad.example=1}", "example", base_dir=tmp_path).matches("x.example")
    assert not domains("!inline:{bad.example=1}", "example").matches("bad.example")


def test_domain_list_order_with_static_table() -> None:
    """A static: table answers every name; an earlier !pattern still wins."""
    assert domains("!a.example", "static:yes").matches("b.example")
    assert not domains("!a.example", "static:yes").matches("a.example")


def test_domain_list_errors(tmp_path: Path) -> None:
    """Bad elements are refused at construction."""
    for bad in ["!", ".", "/etc/mta/domains", "nosuch:table"]:
        with pytest.raises(TableError):
            domains(bad, base_dir=tmp_path)
    with pytest.raises(TableError, match="cannot open"):
        domains("hash:missing", base_dir=tmp_path)


def test_empty_elements_are_ignored() -> None:
    """Empty strings in the element list are skipped; an empty list matches nothing."""
    assert domains("", "  ", "example.com").elements == ("example.com",)
    assert not domains().matches("example.com")


def networks(*elements: str, base_dir: Path = HERE) -> NetworkList:
    return NetworkList(elements, base_dir=base_dir)


MYNETWORKS = ("127.0.0.0/8", "[::1]/128", "!192.0.2.7", "192.0.2.0/24", "2001:db8::/32")


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("::1", True),
        ("0:0:0:0:0:0:0:1", True),
        ("192.0.2.7", False),  # excluded before the /24 that holds it
        ("192.0.2.8", True),
        ("2001:db8:1::1", True),
        ("2001:db9::1", False),
        ("::ffff:127.0.0.1", True),  # IPv4-mapped matches IPv4 networks
        ("::ffff:192.0.2.7", False),
        ("198.51.100.1", False),
        ("localhost", False),  # not an address: no match
        ("", False),
    ],
)
def test_network_list(ip: str, expected: bool) -> None:
    """Addresses, networks, bracketed IPv6, negation, first match decides."""
    assert networks(*MYNETWORKS).matches(ip) is expected


def test_network_forms() -> None:
    """Bare IPv6 networks, bracketed IPv4, and [net/len] are accepted."""
    nets = networks("::1/128", "[2001:db8::]/32", "[192.0.2.1]", "[198.51.100.0/24]", "fe80::/10")
    for ip in ["::1", "2001:db8::5", "192.0.2.1", "198.51.100.9", "fe80::1%eth0"]:
        assert nets.matches(ip), ip


def test_network_table_elements(tmp_path: Path) -> None:
    """A table is asked the address; any value is a hit; a cidr table
    brings its own networks; mapped addresses are asked in IPv4 form."""
    (tmp_path / "clients.cidr").write_text("10.0.0.0/8 ignored-value\n")
    (tmp_path / "hosts").write_text("192.0.2.1 x\n2001:db8::1 y\n")
    nets = networks("!cidr:clients.cidr", "cidr:/dev/null", "hash:hosts", base_dir=tmp_path)
    assert not nets.matches("10.1.2.3")
    assert nets.matches("::ffff:192.0.2.1")
    assert nets.matches("2001:DB8::1")
    assert not nets.matches("192.0.2.2")


@pytest.mark.parametrize(
    ("element", "message"),
    [
        ("mail.example.com", "host names and domains are not supported"),
        (".example.com", "host names and domains are not supported"),
        ("localhost", "host names and domains are not supported"),
        ("192.0.2.1/24", 'non-null host address bits in "192.0.2.1/24"'),
        ("[2001:db8::1]/32", "non-null host address bits"),
        ("192.0.2.0/33", "bad net/mask pattern"),
        ("1.2.3", "bad address pattern"),
        ("fe80:zz::1", "bad address pattern"),
        ("nosuch:table", "unsupported lookup table type: nosuch"),
        ("!", "empty pattern"),
        ("/etc/mta/networks", "must be expanded"),
    ],
)
def test_network_list_errors(element: str, message: str) -> None:
    """Unsupported or malformed elements fail at construction, clearly."""
    with pytest.raises(TableError) as info:
        networks("127.0.0.0/8", element)
    assert message in str(info.value)


def test_hex_looking_table_type_is_a_table(tmp_path: Path) -> None:
    """cdb:FILE is a table even though "cdb" is all hex digits."""
    (tmp_path / "a").write_text("192.0.2.1 x\n")
    assert networks("cdb:a", base_dir=tmp_path).matches("192.0.2.1")


def test_shared_opener_opens_each_table_once(tmp_path: Path) -> None:
    """Lists built with one TableCache share table objects."""
    (tmp_path / "t").write_text("example.com x\n")
    cache = TableCache(tmp_path)
    d1 = DomainList(
        ["hash:t"], parent_matches_subdomains=True, base_dir=tmp_path, opener=cache.open
    )
    d2 = DomainList(
        ["hash:t"], parent_matches_subdomains=False, base_dir=tmp_path, opener=cache.open
    )
    assert d1.matches("a.example.com") and not d2.matches("a.example.com")
    assert len(cache) == 1
