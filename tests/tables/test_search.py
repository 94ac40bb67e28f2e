"""The access(5) search order: golden key lists and first-hit lookups."""

import pytest

from mta.tables.cidr import CidrTable
from mta.tables.search import (
    address_keys,
    client_keys,
    domain_keys,
    lookup_address,
    lookup_client,
    lookup_domain,
    strip_extension,
)
from mta.tables.texthash import TextHashTable


class Recorder:
    """A lookup callable that records every key it is asked."""

    def __init__(self, entries: dict[str, str] | None = None) -> None:
        self.entries = entries or {}
        self.asked: list[str] = []

    def __call__(self, key: str) -> str | None:
        self.asked.append(key)
        return self.entries.get(key)


@pytest.mark.parametrize(
    ("domain", "parent", "keys"),
    [
        ("sub.example.com", True, ["sub.example.com", "example.com", "com"]),
        ("sub.example.com", False, ["sub.example.com", ".example.com", ".com"]),
        ("Example.COM.", True, ["Example.COM", "COM"]),
        ("localhost", True, ["localhost"]),
        ("192.0.2.1", True, ["192.0.2.1"]),  # numerical: no subdomain magic
        ("[192.0.2.1]", False, ["[192.0.2.1]"]),
        ("", True, []),
        (".", True, []),
    ],
)
def test_domain_keys(domain: str, parent: bool, keys: list[str]) -> None:
    """The domain, then parents or .parent forms, in order."""
    assert domain_keys(domain, parent) == keys


ADDRESS_GOLDEN = [
    # (address, delimiter, parent, keys)
    (
        "user+ext@sub.example.com",
        "+",
        True,
        [
            "user+ext@sub.example.com",
            "user@sub.example.com",
            "sub.example.com",
            "example.com",
            "com",
            "user+ext@",
            "user@",
        ],
    ),
    (
        "user+ext@example.com",
        "",
        False,
        ["user+ext@example.com", "example.com", ".com", "user+ext@"],
    ),
    ("user@example.com", "+", True, ["user@example.com", "example.com", "com", "user@"]),
    ("a-b+c@x.org", "+-", True, ["a-b+c@x.org", "a@x.org", "x.org", "org", "a-b+c@", "a@"]),
    ("mailer-daemon@x.org", "-", True, ["mailer-daemon@x.org", "x.org", "org", "mailer-daemon@"]),
    ("owner-list@x.org", "-", True, ["owner-list@x.org", "x.org", "org", "owner-list@"]),
    ("list-request@x.org", "-", True, ["list-request@x.org", "x.org", "org", "list-request@"]),
    ("+ext@x.org", "+", True, ["+ext@x.org", "x.org", "org", "+ext@"]),
    ("user@[192.0.2.1]", "", True, ["user@[192.0.2.1]", "[192.0.2.1]", "user@"]),
    ('"a@b"@x.org', "", True, ['"a@b"@x.org', "x.org", "org", '"a@b"@']),
    ("user+ext", "+", True, ["user+ext", "user"]),
    ("", "+", True, ["<>"]),
    ("<>", "+", True, ["<>"]),
]


@pytest.mark.parametrize(("address", "delimiter", "parent", "keys"), ADDRESS_GOLDEN)
def test_address_keys(address: str, delimiter: str, parent: bool, keys: list[str]) -> None:
    """user+ext@domain, user@domain, domain (+ parents), user+ext@, user@."""
    assert address_keys(address, delimiter, parent_matches_subdomains=parent) == keys


def test_null_sender_key_is_configurable() -> None:
    """The null sender is smtpd_null_access_lookup_key."""
    assert address_keys("", null_key="<null>") == ["<null>"]
    table = Recorder({"<>": "REJECT"})
    assert lookup_address(table, "") == "REJECT"
    assert table.asked == ["<>"]


@pytest.mark.parametrize(
    ("hostname", "ip", "keys"),
    [
        (
            "mail.example.com",
            "192.0.2.1",
            ["mail.example.com", "example.com", "com", "192.0.2.1", "192.0.2", "192.0", "192"],
        ),
        (None, "2001:db8::1", ["2001:db8::1", "2001:db8:", "2001:db8", "2001"]),
        ("", "::ffff:192.0.2.1", ["192.0.2.1", "192.0.2", "192.0", "192"]),
        ("unknown", "2001:DB8:0::5", ["unknown", "2001:db8::5", "2001:db8:", "2001:db8", "2001"]),
    ],
)
def test_client_keys(hostname: str | None, ip: str, keys: list[str]) -> None:
    """Host name and parents, then the address and its prefixes."""
    assert client_keys(hostname, ip) == keys


def test_client_keys_without_parent_matching() -> None:
    """Parent style off: .parent forms for the name; the address is the same."""
    assert client_keys("a.example.com", "192.0.2.1", parent_matches_subdomains=False)[:3] == [
        "a.example.com",
        ".example.com",
        ".com",
    ]


def test_first_hit_wins_and_stops() -> None:
    """The search stops at the first key the table knows."""
    table = Recorder({"example.com": "OK", "com": "REJECT"})
    assert lookup_domain(table, "a.example.com", True) == "OK"
    assert table.asked == ["a.example.com", "example.com"]
    table = Recorder({"user@": "U", "example.com": "D"})
    assert lookup_address(table, "user@example.com") == "D"
    assert lookup_address(Recorder({"user@": "U"}), "user+x@example.com", "+") == "U"
    assert lookup_address(Recorder(), "user@example.com") is None


def test_more_specific_client_key_wins() -> None:
    """A host name hit comes before any address key; /24-style prefixes
    come after the full address."""
    table = Recorder({"192.0.2": "NET", "192.0.2.1": "HOST", "example.com": "NAME"})
    assert lookup_client(table, "mail.example.com", "192.0.2.1") == "NAME"
    assert lookup_client(table, None, "192.0.2.1") == "HOST"
    assert lookup_client(table, None, "192.0.2.7") == "NET"
    assert lookup_client(table, None, "198.51.100.1") is None


def test_table_objects_fold_case() -> None:
    """LookupTable objects may be passed directly; their own folding applies."""
    table = TextHashTable("hash:t", {"example.com": "OK", "user@": "U"})
    assert lookup_domain(table, "Mail.EXAMPLE.com", True) == "OK"
    assert lookup_address(table, "USER@other.org") == "U"


def test_pattern_tables_get_full_keys_only() -> None:
    """A cidr (pattern) table is asked the full keys only, never prefixes
    or parents, as Postfix does for pattern tables."""
    cidr = CidrTable.from_bytes("cidr:t", b"192.0.2.0/24 NET\n", file="t")
    assert lookup_client(cidr, "mail.example.com", "192.0.2.9") == "NET"
    assert client_keys("a.example.com", "192.0.2.9", partial=False) == [
        "a.example.com",
        "192.0.2.9",
    ]
    assert address_keys("u+x@a.example.com", "+", partial=False) == ["u+x@a.example.com"]
    assert domain_keys("a.example.com", True, partial=False) == ["a.example.com"]


@pytest.mark.parametrize(
    ("localpart", "delimiter", "bare"),
    [
        ("user+ext", "+", "user"),
        ("user+a+b", "+", "user"),
        ("user-ext", "+-", "user"),
        ("user", "+", None),
        ("user+", "+", "user"),
        ("+ext", "+", None),
        ("MAILER-DAEMON", "-", None),
        ("double-bounce", "-", None),
        ("postmaster+x", "+", "postmaster"),
        ("owner-list", "-", None),
        ("list-request", "-", None),
        ("user+ext", "", None),
    ],
)
def test_strip_extension(localpart: str, delimiter: str, bare: str | None) -> None:
    """split_addr rules: role names and owner-/-request lists stay whole."""
    assert strip_extension(localpart, delimiter) == bare


def test_owner_request_special_off() -> None:
    """With owner_request_special = no, owner-foo splits like any address."""
    assert strip_extension("owner-list", "-", owner_request_special=False) == "owner"
