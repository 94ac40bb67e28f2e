"""The postmap input format: texthash:, hash:, btree:, ... read as text."""

from pathlib import Path

import pytest

from mta.tables import open_table
from mta.tables.base import TableError
from mta.tables.texthash import TextHashTable


def _table(text: str) -> TextHashTable:
    return TextHashTable.from_bytes("texthash:t", text.encode(), file="t")


def test_keys_values_comments_and_continuations() -> None:
    """Keys map to the rest of the line; continuation lines join the value."""
    table = _table(
        "# access map\n"
        "example.com    REJECT no thanks\n"
        "\n"
        "user@example.net   550 5.7.1\n"
        "  go away\n"
        "   # a comment between continuation lines\n"
        "\tnow\n"
    )
    assert table.lookup("example.com") == "REJECT no thanks"
    assert table.lookup("user@example.net") == "550 5.7.1  go away\tnow"
    assert table.lookup("example.org") is None
    assert len(table) == 2
    assert table.warnings == ()


def test_keys_are_case_folded_values_are_not() -> None:
    """postmap folds keys to lower case; lookups fold the query."""
    table = _table("User@Example.COM  Value Kept\n")
    assert list(table) == ["user@example.com"]
    assert table.lookup("USER@example.com") == "Value Kept"


def test_missing_value_is_an_error_with_line_number() -> None:
    """A key alone on its line is an error naming the file and line."""
    with pytest.raises(TableError) as info:
        _table("a b\n# c\n\nx\n")
    assert str(info.value) == 't:4: missing value after key "x"'
    assert info.value.line == 4


def test_trailing_white_space_is_not_a_value() -> None:
    """White space after a key does not make a value."""
    with pytest.raises(TableError, match=r"^t:1: missing value"):
        _table("key   \t \n")


def test_duplicate_key_first_wins_and_is_reported() -> None:
    """The first value of a repeated key is kept; the repeat is a warning."""
    table = _table("a 1\nA 2\n")
    assert table.lookup("a") == "1"
    assert table.warnings == ('t:2: duplicate entry: "a" -- ignored',)


def test_alias_style_key_is_warned() -> None:
    """A "key: value" record hints at an aliases file, as postmap warns."""
    table = _table("root: admin\n")
    assert table.lookup("root:") == "admin"
    assert "alias file" in table.warnings[0]


def test_quoted_keys_hold_white_space() -> None:
    """A double-quoted key may hold white space, \\" and \\\\ (Postfix 3.8)."""
    table = _table('"a key" v1\n"q\\"uote\\\\" v2\n')
    assert table.lookup("A KEY") == "v1"
    assert table.lookup('q"uote\\') == "v2"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('"open key value\n', "t:1: missing closing double quote in key"),
        ('"k"v\n', "t:1: missing white space after quoted key"),
        ('"" v\n', "t:1: empty key"),
        ('"k"\n', 't:1: missing value after key "k"'),
    ],
)
def test_quoted_key_errors(text: str, message: str) -> None:
    """Malformed quoted keys are errors with the line number."""
    with pytest.raises(TableError) as info:
        _table(text)
    assert str(info.value) == message


def test_entries_are_read_only() -> None:
    """A loaded table cannot be changed."""
    table = _table("a b\n")
    with pytest.raises(TypeError):
        table.entries["c"] = "d"  # type: ignore[index]


@pytest.mark.parametrize("kind", ["texthash", "hash", "btree", "lmdb", "cdb", "dbm", "sdbm"])
def test_every_indexed_type_reads_the_text(tmp_path: Path, kind: str) -> None:
    """hash:, btree:, ... read the postmap source text directly."""
    (tmp_path / "access").write_text("example.com OK\n")
    table = open_table(f"{kind}:access", base_dir=tmp_path)
    assert table.spec == f"{kind}:access"
    assert table.lookup("EXAMPLE.com") == "OK"


def test_db_suffix_falls_back_to_the_source(tmp_path: Path) -> None:
    """hash:FILE.db that does not exist reads FILE."""
    (tmp_path / "access").write_text("k v\n")
    assert open_table(f"hash:{tmp_path}/access.db", base_dir=Path("/")).lookup("k") == "v"


def test_texthash_does_not_strip_suffixes(tmp_path: Path) -> None:
    """texthash: opens the file as named, like Postfix."""
    (tmp_path / "access").write_text("k v\n")
    with pytest.raises(TableError, match="cannot open"):
        open_table("texthash:access.db", base_dir=tmp_path)


def test_missing_file_is_a_table_error(tmp_path: Path) -> None:
    """A file that cannot be read is a TableError naming the file."""
    with pytest.raises(TableError) as info:
        open_table("hash:nope", base_dir=tmp_path)
    assert info.value.file == str(tmp_path / "nope")
    assert "No such file" in str(info.value)


def test_reopen_sees_edits(tmp_path: Path) -> None:
    """Tables are immutable; opening again (a reload) reads the new text."""
    path = tmp_path / "t"
    path.write_text("k old\n")
    first = open_table("hash:t", base_dir=tmp_path)
    path.write_text("k new\n")
    assert first.lookup("k") == "old"
    assert open_table("hash:t", base_dir=tmp_path).lookup("k") == "new"
