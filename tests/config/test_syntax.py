"""Tests of mta.config.syntax: main.cf lines, $expansion, lists, file elements, ports."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mta.config.syntax import (
    WHITESPACE,
    ExpansionError,
    FileElementError,
    ListSyntaxError,
    Problem,
    expand,
    expand_file_elements,
    logical_lines,
    parse_main_cf,
    resolve_port,
    split_list,
    split_words,
    unbrace,
)


def values(text: str) -> dict[str, str]:
    settings, problems = parse_main_cf(text, "main.cf")
    assert problems == []
    return {name: setting.value for name, setting in settings.items()}


def lookup_in(table: dict[str, str]):  # type: ignore[no-untyped-def]
    """A lookup that expands values of ``table`` recursively (no loop guard needed)."""

    def lookup(name: str) -> str | None:
        raw = table.get(name)
        return None if raw is None else expand(raw, lookup)

    return lookup


# -- lines ----------------------------------------------------------------------------------


def test_comment_and_blank_lines_are_ignored() -> None:
    """Lines whose first non-blank character is # and blank lines carry no setting."""
    text = "# a comment\n\n   \n   # indented comment\na = 1\n"
    assert values(text) == {"a": "1"}


def test_hash_inside_a_value_is_not_a_comment() -> None:
    """Postfix semantics: a # that does not start the line is part of the value."""
    assert values("a = b # not a comment\n") == {"a": "b # not a comment"}


def test_white_space_around_name_and_value_is_stripped() -> None:
    """Leading and trailing white space of name and value does not count."""
    assert values("a\t=   x y \t\r\nb =\n") == {"a": "x y", "b": ""}


def test_continuation_lines_join_with_one_space() -> None:
    """A line that starts with white space continues the previous logical line."""
    text = "a = one,\n    two,\n\tthree\nb = 2\n"
    assert values(text) == {"a": "one, two, three", "b": "2"}


def test_comments_and_blank_lines_do_not_end_a_continued_line() -> None:
    """As in Postfix's readlline(), a comment or blank line between continuation
    lines is skipped and the logical line goes on."""
    text = "a = one\n# comment\n\n   two\nb = 2\n"
    assert values(text) == {"a": "one two", "b": "2"}


def test_line_numbers_are_those_of_the_first_physical_line() -> None:
    """Each setting remembers where its logical line starts."""
    settings, _ = parse_main_cf("# c\n\na = 1\n  2\nb = 3\n", "main.cf")
    assert (settings["a"].line, settings["b"].line) == (3, 5)
    assert [line.lines for line in logical_lines("# c\n\na = 1\n  2\nb = 3\n")] == [(3, 4), (5,)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a = 1\nnot an assignment\n", 'missing "=" in "not an assignment"'),
        ("a = 1\n= value\n", "missing parameter name"),
        ("a = 1\nbad name = value\n", 'bad parameter name "bad name"'),
        ("a = 1\nna$me = value\n", 'bad parameter name "na$me"'),
    ],
)
def test_malformed_lines_are_errors_with_line_numbers(text: str, message: str) -> None:
    """A logical line that is not name = value is an error at its line; the other
    lines are still read."""
    settings, problems = parse_main_cf(text, "main.cf")
    assert list(settings) == ["a"]
    assert len(problems) == 1
    assert problems[0].line == 2
    assert problems[0].severity == "error"
    assert message in problems[0].message
    assert str(problems[0]).startswith("main.cf:2: error: ")


def test_repeated_name_warns_and_last_wins() -> None:
    """Postfix uses the last setting of a name; mta says so."""
    settings, problems = parse_main_cf("a = 1\nb = 2\na = 3\n", "main.cf")
    assert settings["a"].value == "3"
    assert settings["a"].line == 3
    assert [(p.line, p.severity) for p in problems] == [(3, "warning")]
    assert "first at line 1" in problems[0].message


def test_indented_first_line_is_a_warning() -> None:
    """A logical line that starts with white space is read, with Postfix's warning."""
    settings, problems = parse_main_cf("  a = 1\n", "main.cf")
    assert settings["a"].value == "1"
    assert [(p.line, p.severity) for p in problems] == [(1, "warning")]


def test_problem_str_without_line() -> None:
    """A problem about a whole file names the file only."""
    assert str(Problem("/etc/mta/main.cf", None, "error", "x")) == "/etc/mta/main.cf: error: x"


# -- expansion ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("$host", "mail.example"),
        ("${host}", "mail.example"),
        ("$(host)", "mail.example"),
        ("<$host>", "<mail.example>"),
        ("$host.$domain", "mail.example.example"),
        ("${host}x", "mail.examplex"),
        ("$hostx", ""),
        ("$$host", "$host"),
        ("cost $", "cost $"),
        ("a $ b", "a $ b"),
        ("$nested", "[mail.example]"),
        ("$unknown", ""),
        ("${host?yes}", "yes"),
        ("${empty?yes}", ""),
        ("${unknown?yes}", ""),
        ("${host:no}", ""),
        ("${empty:no}", "no"),
        ("${unknown:no}", "no"),
        ("${host?{a b}}", "a b"),
        ("${empty:{ a b }}", "a b"),
        ("${host?{yes}:{no}}", "yes"),
        ("${empty?{yes}:{no}}", "no"),
        ("${host?{ $domain }:{no}}", "example"),
        ("${empty?{yes} : {no}}", "no"),
        ("${host?$domain}", "example"),
        ("$(host?x)", "x"),
        ("${host?{${empty:{inner}}}}", "inner"),
    ],
)
def test_expand_forms(value: str, expected: str) -> None:
    """Every Postfix form of $ expansion, including the conditional forms."""
    table = {"host": "mail.example", "domain": "example", "empty": "", "nested": "[$host]"}
    assert expand(value, lookup_in(table)) == expected


@pytest.mark.parametrize(
    "value",
    ["${host", "$(host", "${host?{a}", "${ho-st}", "${host!x}", "${host?{a} b}", "${{a} == {b}}"],
)
def test_expand_syntax_errors(value: str) -> None:
    """Malformed expressions are ExpansionErrors, not crashes."""
    with pytest.raises(ExpansionError):
        expand(value, lookup_in({"host": "h"}))


def test_expand_reports_undefined_names_to_the_lookup() -> None:
    """The lookup sees every referenced name (so the caller can warn about unknown
    ones), and an undefined name expands to empty."""
    seen: list[str] = []

    def lookup(name: str) -> str | None:
        seen.append(name)
        return None

    assert expand("a${x}b$y${z:c}", lookup) == "abc"
    assert seen == ["x", "y", "z"]


def test_expand_nesting_is_bounded() -> None:
    """Deeply nested conditionals stop with an error instead of a RecursionError."""
    value = "x"
    for _ in range(200):
        value = "${a?{" + value + "}}"
    with pytest.raises(ExpansionError, match="nesting"):
        expand(value, lambda name: "1")


# -- lists ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", []),
        ("a", ["a"]),
        ("a,b c", ["a", "b", "c"]),
        (" , a ,, b\t,\n c ,", ["a", "b", "c"]),
        ("127.0.0.0/8 [::1]/128", ["127.0.0.0/8", "[::1]/128"]),
        ("inline:{ a=b, { c = d e } } x", ["inline:{ a=b, { c = d e } }", "x"]),
        ("{ a b }, c", ["{ a b }", "c"]),
        (
            "check_policy_service { inet:127.0.0.1:9998, timeout=10s }, permit",
            ["check_policy_service", "{ inet:127.0.0.1:9998, timeout=10s }", "permit"],
        ),
    ],
)
def test_split_list(value: str, expected: list[str]) -> None:
    """Commas and/or white space separate; braces group, nested braces balance."""
    assert split_list(value) == expected


@pytest.mark.parametrize("value", ["inline:{ a=b", "a } b", "{ { }"])
def test_split_list_unbalanced_braces(value: str) -> None:
    """Unbalanced braces are a ListSyntaxError."""
    with pytest.raises(ListSyntaxError):
        split_list(value)


def test_split_words_keeps_commas() -> None:
    """master.cf fields split on white space only."""
    assert split_words("a,b { c d } e") == ["a,b", "{ c d }", "e"]


@pytest.mark.parametrize(
    ("element", "expected"),
    [("{ a b }", "a b"), ("{a}", "a"), ("a", "a"), ("{a} {b}", "{a} {b}"), ("x{a}", "x{a}")],
)
def test_unbrace(element: str, expected: str) -> None:
    """Only a whole-element brace group loses its braces."""
    assert unbrace(element) == expected


def test_file_elements_are_replaced_by_the_file_contents(tmp_path: Path) -> None:
    """/file and ./file elements become the file's non-comment elements, in place,
    and files may name files."""
    (tmp_path / "nets").write_text("# trusted\n10.0.0.0/8, 10.1.0.0/16\n\n192.168.0.0/16\n")
    (tmp_path / "more").write_text(f"172.16.0.0/12 {tmp_path / 'nets'}\n")
    elements = ["127.0.0.0/8", str(tmp_path / "more"), "./nets", "[::1]/128"]
    assert expand_file_elements(elements, tmp_path) == [
        "127.0.0.0/8",
        "172.16.0.0/12",
        "10.0.0.0/8",
        "10.1.0.0/16",
        "192.168.0.0/16",
        "10.0.0.0/8",
        "10.1.0.0/16",
        "192.168.0.0/16",
        "[::1]/128",
    ]


def test_missing_file_element_is_an_error(tmp_path: Path) -> None:
    """An unreadable file element names the file."""
    with pytest.raises(FileElementError, match=r"cannot read .*absent"):
        expand_file_elements(["./absent"], tmp_path)


def test_self_including_file_element_stops(tmp_path: Path) -> None:
    """A file that names itself is an error, not endless recursion."""
    (tmp_path / "loop").write_text("./loop\n")
    with pytest.raises(FileElementError, match="nested too deeply"):
        expand_file_elements(["./loop"], tmp_path)


# -- ports -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "port"),
    [("25", 25), ("2525", 2525), ("smtp", 25), ("submission", 587), ("smtps", 465)],
)
def test_resolve_port(text: str, port: int) -> None:
    """A port is a number or a service name."""
    assert resolve_port(text) == port


@pytest.mark.parametrize("text", ["0", "65536", "", "no-such-service-name", "-1"])
def test_resolve_port_rejects(text: str) -> None:
    """Out-of-range numbers and unknown names are ValueErrors."""
    with pytest.raises(ValueError):
        resolve_port(text)


# -- properties ----------------------------------------------------------------------------------

_names = st.from_regex(r"[a-z0-9_]{1,24}", fullmatch=True)
_values = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="$"),
    max_size=60,
).filter(lambda value: value == value.strip(WHITESPACE))
_filler = st.lists(
    st.one_of(
        st.just(""),
        st.sampled_from([" ", "\t", "  \t "]),
        st.text(
            alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"),
            max_size=20,
        ).map(lambda text: "#" + text),
        st.text(
            alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n")
        ).map(lambda text: "   # " + text),
    ),
    max_size=2,
)


def _split_points(value: str) -> list[int]:
    """Where a value can be folded onto a continuation line without changing it: at a
    single space between non-blank characters, not before a # (which would start a
    comment line)."""
    return [
        index
        for index in range(1, len(value) - 1)
        if value[index] == " "
        and value[index - 1] not in WHITESPACE
        and value[index + 1] not in WHITESPACE + "#"
    ]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_names, _values, max_size=8), st.data())
def test_round_trip(table: dict[str, str], data: st.DataObject) -> None:
    """Parameters written as main.cf, with comments, blank lines and continuation
    lines scattered in, parse back to the same values and no problems."""
    lines: list[str] = []
    for name, value in table.items():
        lines.extend(data.draw(_filler))
        folds = sorted(data.draw(st.sets(st.sampled_from(_split_points(value) or [0]))) - {0})
        pieces, start = [], 0
        for fold in folds:
            pieces.append(value[start:fold])
            start = fold + 1
        pieces.append(value[start:])
        equals = data.draw(st.sampled_from(["=", " = ", "\t=  "]))
        lines.append(f"{name}{equals}{pieces[0]}".rstrip(WHITESPACE))
        for piece in pieces[1:]:
            lines.extend(data.draw(_filler))
            lines.append(data.draw(st.sampled_from([" ", "\t", "    "])) + piece)
    lines.extend(data.draw(_filler))
    text = "\n".join(lines) + data.draw(st.sampled_from(["", "\n"]))
    settings_, problems = parse_main_cf(text, "main.cf")
    assert problems == []
    assert {name: setting.value for name, setting in settings_.items()} == table


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parser_never_raises(text: str) -> None:
    """Any text yields settings and Problems, never an exception."""
    settings_, problems = parse_main_cf(text, "main.cf")
    assert all(isinstance(problem, Problem) for problem in problems)
    assert all(setting.name for setting in settings_.values())


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="${}():?ab ,x"))
def test_expand_and_split_raise_only_their_errors(text: str) -> None:
    """Expansion raises only ExpansionError and splitting only ListSyntaxError."""
    try:
        expand(text, lambda name: name)
    except ExpansionError:
        pass
    try:
        split_list(text)
    except ListSyntaxError:
        pass
