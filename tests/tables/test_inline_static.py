"""inline:{...} and static: tables (Postfix 3.0 syntax)."""

from pathlib import Path

import pytest

from mta.tables import open_table
from mta.tables.base import TableError
from mta.tables.inline import parse_inline
from mta.tables.static import parse_static


def test_inline_forms() -> None:
    """Elements split at commas and white space; braces keep spaces and
    commas in a value; white space around = is dropped."""
    entries, warnings = parse_inline("{ a=b, { c = d e, f },G=h   i=j }")
    assert entries == {"a": "b", "c": "d e, f", "g": "h", "i": "j"}
    assert warnings == []


def test_inline_spaced_equals_outside_braces() -> None:
    """Outside braces white space separates elements, so "i = j" is three
    elements and "i" has no "=" (as Postfix)."""
    with pytest.raises(TableError, match="missing '=' after attribute name"):
        parse_inline("{ i = j }")


def test_inline_without_spaces_and_empty_value() -> None:
    """inline:{key=value} works; an empty value is allowed."""
    assert parse_inline("{key=value}")[0] == {"key": "value"}
    assert parse_inline("{key=}")[0] == {"key": ""}


def test_inline_keys_fold_case() -> None:
    """Inline keys are fixed-string keys: lookups are case-insensitive."""
    table = open_table("inline:{Example.COM=OK}", base_dir=Path("."))
    assert table.lookup("example.com") == "OK"
    assert table.spec == "inline:{Example.COM=OK}"


def test_inline_duplicate_first_wins_with_warning() -> None:
    """A repeated key keeps the first value and is reported."""
    entries, warnings = parse_inline("{a=1, A=2}")
    assert entries == {"a": "1"}
    assert len(warnings) == 1 and "duplicate" in warnings[0]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("{a}", "missing '=' after attribute name"),
        ("{a b=c}", "missing '=' after attribute name"),
        ("{=b}", "missing attribute name"),
        ("{ {x} }", "missing '=' after attribute name"),
        ("{}", "bad syntax"),
        ("{ , }", "empty table"),
        ("a=b", "bad syntax"),
        ("{a=b", "bad syntax"),
        ("{a=b}}", "bad syntax"),
        ("{a=b} x", "bad syntax"),
        ("{ {a=b}c }", "syntax error"),
    ],
)
def test_inline_errors(name: str, reason: str) -> None:
    """Bad inline syntax is a TableError that shows the table and the form."""
    with pytest.raises(TableError) as info:
        parse_inline(name)
    assert reason in str(info.value)
    assert f'"inline:{name}"' in str(info.value)


def test_static_forms() -> None:
    """static:value answers every key; static:{ ... } may hold spaces."""
    table = open_table("static:OK", base_dir=Path("."))
    assert table.lookup("anything") == "OK"
    assert table.lookup("") == "OK"
    spaced = open_table("static:{ 554 5.7.1 go away }", base_dir=Path("."))
    assert spaced.lookup("x") == "554 5.7.1 go away"
    assert parse_static("") == ""


@pytest.mark.parametrize("name", ["{a", "{a}}", "{a}b", "{}{"])
def test_static_bad_braces(name: str) -> None:
    """Unbalanced braces in static:{...} are an error."""
    with pytest.raises(TableError, match="bad syntax"):
        parse_static(name)
