"""cidr: tables (cidr_table(5)): first match, if/endif, negation, errors."""

from pathlib import Path

import pytest

from mta.tables import open_table
from mta.tables.base import TableError
from mta.tables.cidr import CidrTable, parse_address_pattern


def _table(text: str) -> CidrTable:
    return CidrTable.from_bytes("cidr:t", text.encode(), file="t")


RULES = """\
# clients
192.0.2.1          HOST
192.0.2.0/24       NET24
192.0.2.0/23       NET23
2001:db8::1        V6HOST
[2001:db8::]/32    V6NET
[198.51.100.7]     BRACKETED
if 10.0.0.0/8
10.1.0.0/16        TEN-ONE
!10.1.2.0/24       NOT-TEN-ONE-TWO
endif
if !172.16.0.0/12
0.0.0.0/0          OUTSIDE-172
endif
172.16.5.5         INSIDE-172
"""

GOLDEN = [
    ("192.0.2.1", "HOST"),  # first match wins over the /24 below it
    ("192.0.2.9", "NET24"),
    ("192.0.3.9", "NET23"),
    ("2001:db8::1", "V6HOST"),
    ("2001:DB8:0:0::1", "V6HOST"),  # any spelling of the address
    ("2001:db8:ffff::5", "V6NET"),
    ("198.51.100.7", "BRACKETED"),
    ("10.1.9.9", "TEN-ONE"),
    ("10.2.0.1", "NOT-TEN-ONE-TWO"),
    ("172.16.5.5", "INSIDE-172"),  # the if !172.16/12 block is skipped
    ("8.8.8.8", "OUTSIDE-172"),
    ("::ffff:192.0.2.1", "HOST"),  # IPv4-mapped matches IPv4 rules
    ("::ffff:10.2.0.1", "NOT-TEN-ONE-TWO"),
    ("2001:db9::1", None),
    ("not-an-address", None),
    ("", None),
    ("[192.0.2.1]", None),
    ("192.0.2.1 ", None),
]


@pytest.mark.parametrize(("key", "expected"), GOLDEN)
def test_golden_lookups(key: str, expected: str | None) -> None:
    """Each key finds the result of the first rule that matches it."""
    assert _table(RULES).lookup(key) == expected


def test_value_keeps_spaces_and_continuations() -> None:
    """The result is the rest of the logical line."""
    table = _table("192.0.2.0/24  550 5.7.1\n   go away\n")
    assert table.lookup("192.0.2.3") == "550 5.7.1   go away"


def test_negation_never_matches_the_other_family() -> None:
    """ "!net" matches addresses of the same family outside net only."""
    table = _table("!192.0.2.0/24 OUT\n")
    assert table.lookup("198.51.100.1") == "OUT"
    assert table.lookup("192.0.2.1") is None
    assert table.lookup("2001:db8::1") is None


def test_double_negation_and_nested_if() -> None:
    """ "!!net" is "net"; nested if blocks need every condition."""
    table = _table(
        "if 10.0.0.0/8\nif !!10.1.0.0/16\n0.0.0.0/0 BOTH\nendif\n0.0.0.0/0 OUTER\nENDIF\n"
    )
    assert table.lookup("10.1.1.1") == "BOTH"
    assert table.lookup("10.2.1.1") == "OUTER"
    assert table.lookup("11.0.0.1") is None


def test_zero_prefix_matches_the_family() -> None:
    """0.0.0.0/0 and ::/0 match every address of their family."""
    table = _table("0.0.0.0/0 V4\n::/0 V6\n")
    assert table.lookup("203.0.113.9") == "V4"
    assert table.lookup("fe80::1") == "V6"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "192.0.2.1/24 X\n",
            'non-null host address bits in "192.0.2.1/24", perhaps you '
            'should use "192.0.2.0/24" instead',
        ),
        ("2001:db8::1/32 X\n", 'non-null host address bits in "2001:db8::1/32"'),
        ("192.0.2.0/33 X\n", 'bad net/mask pattern: "192.0.2.0/33"'),
        ("192.0.2.0/x X\n", 'bad net/mask pattern: "192.0.2.0/x"'),
        ("192.0.2 X\n", 'bad address pattern: "192.0.2"'),
        ("example.com X\n", 'bad address pattern: "example.com"'),
        ("fe80::1%eth0 X\n", "bad address pattern"),
        ("[::1 X\n", "missing ']'"),
        ("[::1]x X\n", "garbage after"),
        ("192.0.2.0/24\n", 'no lookup result after "192.0.2.0/24"'),
        ("! X\n", "no address pattern"),
        ("endif\n", '"endif" without matching "if"'),
        ("endif extra\n", 'unexpected text after "endif"'),
        ("if\n", 'no address pattern after "if"'),
        ("if 10.0.0.0/8 OK\nendif\n", 'unexpected text after "if 10.0.0.0/8"'),
    ],
)
def test_errors_name_the_line(text: str, message: str) -> None:
    """Every bad rule is an error at its own line (2, after a comment)."""
    with pytest.raises(TableError) as info:
        _table("# first line is a comment\n" + text)
    assert info.value.file == "t"
    assert info.value.line == 2
    assert message in info.value.message


def test_unclosed_if_is_reported_at_the_if() -> None:
    """An if without endif is an error at the line of the if."""
    with pytest.raises(TableError) as info:
        _table("if 10.0.0.0/8\n10.0.0.0/8 A\nif 10.0.0.0/16\n")
    assert info.value.line == 3
    assert "without matching" in info.value.message


def test_parse_address_pattern_forms() -> None:
    """Addresses and networks with and without brackets; host bits refused."""
    assert str(parse_address_pattern("192.0.2.1")) == "192.0.2.1/32"
    assert str(parse_address_pattern("[::1]/128")) == "::1/128"
    assert str(parse_address_pattern("[2001:db8::/32]")) == "2001:db8::/32"
    assert str(parse_address_pattern("::1/128")) == "::1/128"
    assert str(parse_address_pattern("10.0.0.0/008")) == "10.0.0.0/8"
    with pytest.raises(ValueError, match="non-null host address bits"):
        parse_address_pattern("[2001:db8::1]/32")
    with pytest.raises(ValueError, match="bad net/mask"):
        parse_address_pattern("10.0.0.0/" + "9" * 5000)


def test_open_cidr_relative_to_base_dir(tmp_path: Path) -> None:
    """cidr:FILE resolves FILE against base_dir and reports the full path."""
    (tmp_path / "clients.cidr").write_text("192.0.2.0/24 OK\n192.0.2.0/99 X\n")
    with pytest.raises(TableError) as info:
        open_table("cidr:clients.cidr", base_dir=tmp_path)
    assert str(info.value).startswith(f"{tmp_path}/clients.cidr:2: bad net/mask")
    (tmp_path / "clients.cidr").write_text("192.0.2.0/24 OK\n")
    assert open_table("cidr:clients.cidr", base_dir=tmp_path).lookup("192.0.2.5") == "OK"
