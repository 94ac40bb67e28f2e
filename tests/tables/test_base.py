"""Shared table plumbing: TableError text, logical lines, paths."""

from pathlib import Path

import pytest

from mta.tables.base import TableError, logical_lines, resolve_path, split_ws


def _lines(data: bytes) -> tuple[list[tuple[int, str]], list[str]]:
    warnings: list[str] = []
    lines = [(ln.lineno, ln.text) for ln in logical_lines(data, "f", warnings)]
    return lines, warnings


def test_table_error_names_file_and_line() -> None:
    """str(TableError) reads like a compiler message, with what is known."""
    assert str(TableError("bad", "/etc/mta/access", 3)) == "/etc/mta/access:3: bad"
    assert str(TableError("bad", "/etc/mta/access")) == "/etc/mta/access: bad"
    assert str(TableError("bad")) == "bad"
    err = TableError("bad", "f", 2)
    assert (err.message, err.file, err.line) == ("bad", "f", 2)


def test_comments_blank_lines_and_continuations() -> None:
    """Comment and blank lines vanish, also inside a continued line; a
    continuation keeps its leading white space; the first line's number is
    reported."""
    data = b"# head\n\na b\n# inside\n   \n  c\n\td\ne f\n"
    lines, warnings = _lines(data)
    assert lines == [(3, "a b  c\td"), (8, "e f")]
    assert warnings == []


def test_indented_comment_is_a_comment() -> None:
    """A line whose first non-blank character is # is a comment even when
    indented, so it does not continue the previous line."""
    lines, _ = _lines(b"a b\n   # not a value\n")
    assert lines == [(1, "a b")]


def test_leading_continuation_is_warned_and_skipped() -> None:
    """Continuation text with nothing before it is ignored with a warning,
    as Postfix readllines does."""
    lines, warnings = _lines(b"  orphan\nk v\n")
    assert lines == [(2, "k v")]
    assert len(warnings) == 1 and warnings[0].startswith("f:1: logical line must not start")


def test_non_utf8_line_is_warned_and_skipped() -> None:
    """A logical line that is not UTF-8 is skipped with a warning."""
    lines, warnings = _lines(b"k \xff\nok v\n")
    assert lines == [(2, "ok v")]
    assert warnings == ["f:1: non-UTF-8 input -- ignoring this line"]


def test_crlf_line_ends_are_white_space() -> None:
    """CR before LF is trailing white space, and a CR-only line is blank."""
    lines, _ = _lines(b"k v\r\n\r\n")
    assert lines == [(1, "k v\r")]
    assert split_ws(lines[0][1]) == ("k", "v")


def test_resolve_path(tmp_path: Path) -> None:
    """Relative names resolve against the base directory; absolute stay."""
    assert resolve_path("access", tmp_path) == tmp_path / "access"
    assert resolve_path("/etc/x", tmp_path) == Path("/etc/x")
    with pytest.raises(TableError, match="missing file name"):
        resolve_path("", tmp_path)


def test_split_ws_uses_ascii_white_space_only() -> None:
    """Non-ASCII white space (NBSP) belongs to the key, as in Postfix."""
    assert split_ws("a\u00a0b c ") == ("a\u00a0b", "c")
    assert split_ws("key") == ("key", "")
