"""yaml: tables: the documented format, errors with lines, registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mta.tables import accepts_partial_keys, open_table
from mta.tables.base import TableError
from mta.tables.search import lookup_address
from mta.tables.yamltable import parse_yaml


def test_values_are_taken_as_written(tmp_path: Path) -> None:
    """No YAML type guessing: yes/on/010/1.50 stay text; lists join with ", ";
    keys are case-insensitive like hash:."""
    (tmp_path / "a.yaml").write_text(
        "# access\n"
        "Spammer@Example.COM: REJECT spam source\n"
        "flag: yes\n"
        "octal: 010\n"
        "float: 1.50\n"
        "'quoted key': \"OK quoted\"\n"
        "alias@example.org: [a@example.net, b@example.net]\n"
        "block:\n  - x@example.net\n  - y@example.net\n"
    )
    t = open_table("yaml:a.yaml", base_dir=tmp_path)
    assert t.lookup("spammer@example.com") == "REJECT spam source"
    assert t.lookup("FLAG") == "yes"
    assert t.lookup("octal") == "010"
    assert t.lookup("float") == "1.50"
    assert t.lookup("quoted key") == "OK quoted"
    assert t.lookup("alias@example.org") == "a@example.net, b@example.net"
    assert t.lookup("block") == "x@example.net, y@example.net"
    assert t.lookup("absent") is None
    assert accepts_partial_keys(t) is True


def test_search_order_applies(tmp_path: Path) -> None:
    """A yaml: access table answers the parent-domain keys of the search order."""
    (tmp_path / "a.yaml").write_text("example.com: REJECT\n")
    t = open_table("yaml:a.yaml", base_dir=tmp_path)
    assert lookup_address(t, "joe@mail.example.com") == "REJECT"


def test_empty_file_and_duplicates() -> None:
    """An empty file is an empty table; a repeated key keeps its first value."""
    assert parse_yaml(b"", "f") == ({}, [])
    entries, warnings = parse_yaml(b"a: 1\nA: 2\n", "f")
    assert entries == {"a": "1"}
    assert warnings == ['f:2: duplicate entry: "a" -- ignored']


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("- a\n- b\n", 1, "must be a mapping"),
        ("a: 1\nb:\n", 2, 'missing value after key "b"'),
        ("a: 1\nb: {c: d}\n", 2, 'the value of "b" must be a text or a list'),
        ("a: [[x]]\n", 1, "may hold only non-empty texts"),
        ("a: 1\nb: [unclosed\n", 3, "YAML syntax error"),
        ("a: []\n", 1, 'empty list after key "a"'),
    ],
)
def test_errors_name_file_and_line(text: str, line: int, reason: str) -> None:
    """Each malformed document is a TableError located at its line."""
    with pytest.raises(TableError) as info:
        parse_yaml(text.encode(), "/etc/t.yaml")
    assert info.value.file == "/etc/t.yaml"
    assert info.value.line == line, str(info.value)
    assert reason in str(info.value)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab:- []{}'\"#\n\t,&*!|>", max_size=50))
def test_parser_raises_only_table_errors(text: str) -> None:
    """Arbitrary input gives entries or a TableError, nothing else."""
    try:
        parse_yaml(text.encode(), "f")
    except TableError:
        pass
