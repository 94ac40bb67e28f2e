"""regexp: and pcre: tables: Postfix syntax, flags, if/endif, $n, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mta.tables import accepts_partial_keys, open_table
from mta.tables.base import TableError
from mta.tables.regexp import RegexpTable


def table(text: str, pcre: bool = False) -> RegexpTable:
    return RegexpTable.from_bytes(
        "pcre:t" if pcre else "regexp:t", text.encode(), file="t", pcre=pcre
    )


@pytest.mark.parametrize("pcre", [False, True])
def test_ciphermail_header_check_example(pcre: bool) -> None:
    """The CipherMail rule works as written, case-insensitively by default."""
    t = table("/^Subject: make money fast/     REJECT spam detected\n", pcre)
    assert t.lookup("Subject: make money fast today") == "REJECT spam detected"
    assert t.lookup("subject: MAKE MONEY FAST") == "REJECT spam detected"
    assert t.lookup("Subject: make no money") is None
    assert t.lookup("X-Subject: make money fast") is None


@pytest.mark.parametrize("pcre", [False, True])
def test_first_match_wins_and_substitution(pcre: bool) -> None:
    """Rules are tried in order; $1, ${2} and $$ expand in the result."""
    t = table(
        "/^(.*)@(example\\.com)$/  OK ${1} at $2 costs $$5\n/^.*@example\\.com$/ REJECT\n",
        pcre,
    )
    assert t.lookup("joe@example.com") == "OK joe at example.com costs $5"
    assert t.lookup("joe@example.org") is None


@pytest.mark.parametrize("pcre", [False, True])
def test_negation_if_endif_and_comments(pcre: bool) -> None:
    """!/re/ matches what the pattern does not; if/endif (nested, negated)
    guard the rules between them; comments and blank lines are skipped."""
    text = """
# comment
if /@example\\.com$/
  # a comment inside
if !/^postmaster@/
/^spam/    REJECT spam
endif
/./        OK inside
endif
!/@/       REJECT no domain
"""
    t = table(text, pcre)
    assert t.lookup("spammer@example.com") == "REJECT spam"
    assert t.lookup("postmaster@example.com") == "OK inside"
    assert t.lookup("spam@example.org") is None
    assert t.lookup("nodomain") == "REJECT no domain"


def test_two_pattern_form() -> None:
    """/pat1/!/pat2/ matches when pat1 matches and pat2 does not."""
    t = table("/example/!/^postmaster/ REJECT\n")
    assert t.lookup("joe@example.com") == "REJECT"
    assert t.lookup("postmaster@example.com") is None


def test_flags_toggle() -> None:
    """i turns case-insensitivity off; another delimiter may be used."""
    t = table("%^ABC%i exact\n/^abc/ folded\n")
    assert t.lookup("ABCd") == "exact"
    assert t.lookup("abcd") == "folded"


def test_regexp_dot_matches_newline_unless_m() -> None:
    """POSIX (no REG_NEWLINE): "." crosses the newline of a joined
    multi-line header; with "m", ^ and $ match at line breaks."""
    t = table("/^Subject:.*winner/ HIT\n")
    assert t.lookup("Subject: you are\n\ta winner") == "HIT"
    m = table("/^\\s+a winner$/m HIT\n")
    assert m.lookup("Subject: you are\n a winner") == "HIT"


def test_posix_classes_and_word_boundaries() -> None:
    """[[:digit:]], [[:space:]] and \\< \\> are POSIX syntax, translated."""
    t = table("/^[[:digit:]]+[[:space:]]\\<x\\>/ HIT\n")
    assert t.lookup("123 x") == "HIT"
    assert t.lookup("123 xy") is None


def test_basic_syntax_with_x_flag() -> None:
    """regexp "x" switches to POSIX basic syntax: \\( \\) group, ( is literal."""
    t = table("/^a\\(b*\\)(c)$/x got $1\n")
    assert t.lookup("abb(c)") == "got bb"


def test_pcre_features() -> None:
    """Named groups, back-references, \\Q..\\E, \\z, \\h and flags s/U/A/E."""
    t = table(
        "/^(?<word>\\w+) \\k<word>$/ double $1\n/^\\Q1+1\\E=2\\z/ math\n/^a\\hb$/ blank\n",
        pcre=True,
    )
    assert t.lookup("hey hey") == "double hey"
    assert t.lookup("1+1=2") == "math"
    assert t.lookup("11=2") is None
    assert t.lookup("a\tb") == "blank"
    s = table("/a.b/s dot\n/x.y/ nodot\n", pcre=True)
    assert s.lookup("a\nb") == "dot"
    assert s.lookup("x\ny") is None
    u = table("/<(.+)>/U $1\n", pcre=True)
    assert u.lookup("<a><b>") == "a"
    a = table("/b/A anchored\n", pcre=True)
    assert a.lookup("ab") is None
    assert a.lookup("ba") == "anchored"
    e = table("/a$/E end\n", pcre=True)
    assert e.lookup("a\n") is None
    assert e.lookup("a") == "end"


@pytest.mark.parametrize(
    ("text", "pcre", "reason"),
    [
        ("/abc REJECT\n", False, 'no closing regexp delimiter "/"'),
        ("/a(b/ REJECT\n", False, 'bad pattern "a(b"'),
        ("/a/q REJECT\n", False, 'unknown regexp option "q"'),
        ("/a/s REJECT\n", False, 'unknown regexp option "s"'),
        ("/a/\n", False, "missing result"),
        ("/(a)/ $2\n", False, 'out of range replacement index "2"'),
        ("!/(a)/ $1\n", False, "$number found in negative match"),
        ("/a/ ${x}\n", False, 'non-numeric replacement index "x"'),
        ("if /a/\n/b/ c\n", False, '"if" without matching "endif"'),
        ("endif\n", False, '"endif" without matching "if"'),
        ("foo bar\n", False, "unrecognized request"),
        ("/(?R)/ x\n", True, "recursion (?R) is not supported"),
        ("/\\p{L}/ x\n", True, "\\p is not supported"),
        ("/[[:nosuch:]]/ x\n", True, "unknown character class"),
    ],
)
def test_errors_name_file_line_and_reason(text: str, pcre: bool, reason: str) -> None:
    """A bad rule is a TableError with file, line number and the reason."""
    with pytest.raises(TableError) as info:
        RegexpTable.from_bytes("regexp:f", ("# c\n" + text).encode(), file="/etc/f", pcre=pcre)
    message = str(info.value)
    assert message.startswith("/etc/f:2: "), message
    assert reason in message


def test_registry_and_partial_keys(tmp_path: Path) -> None:
    """regexp: and pcre: open through the registry and take full keys only."""
    (tmp_path / "r").write_text("/x/ y\n")
    for kind in ("regexp", "pcre"):
        t = open_table(f"{kind}:r", base_dir=tmp_path)
        assert t.lookup("axb") == "y"
        assert accepts_partial_keys(t) is False


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="/!\\()[]{}$^.*+?|:aAbix0123 \n\t#-=<>ifendIFEND", max_size=60))
def test_parser_raises_only_table_errors(text: str) -> None:
    """Whatever the file holds, parsing gives a table or a TableError."""
    for pcre in (False, True):
        try:
            t = RegexpTable.from_bytes("regexp:h", text.encode(), file="h", pcre=pcre)
        except TableError:
            continue
        t.lookup("some key")
