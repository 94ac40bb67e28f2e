"""``regexp:FILE`` and ``pcre:FILE`` tables: the first matching pattern wins.

Input: a file in regexp_table(5) / pcre_table(5) format, read with the
postmap logical-line rules (comments, continuation lines)::

    /pattern/flags          result      the first rule that matches decides
    !/pattern/flags         result      ... or that does not match
    /pat1/flags!/pat2/flags result      pat1 matches and pat2 does not
    if /pattern/flags                   the rules up to the matching endif
    ...                                 apply only when pattern matches
    endif                               (``if !/pattern/``: does not match)

Any character may delimit a pattern (``#pattern#``), a backslash escapes
the delimiter.  ``$1``, ``${1}`` and ``$(1)`` in a result are replaced by
the text the pattern's first group matched, ``$$`` is a ``$``.

Flags: ``i`` (toggle case-insensitive, on by default), ``m`` (multi-line),
``x`` (regexp: basic instead of extended POSIX syntax; pcre: extended
syntax with white space and comments); pcre also ``s`` (dot matches
newline), ``A`` (anchored at the start), ``E`` (``$`` only at the very
end), ``U`` (ungreedy) and ``X`` (strict escapes, which Python always is).

Output: a :class:`RegexpTable`; ``lookup`` returns the expanded result of
the first matching rule.  Every error is a :class:`TableError` naming file
and line (Postfix logs a warning and skips the rule; mta refuses the
table, so that ``mta check`` shows the mistake before the daemon uses it).

Python's ``re`` engine runs both types; patterns are translated first.
What differs from Postfix:

* regexp (POSIX): matching is leftmost-first like Perl, not POSIX's
  leftmost-longest, which changes what an alternation such as ``(a|ab)``
  captures (never whether a pattern matches at all).  Inside brackets a
  backslash escapes (POSIX takes it literally).  POSIX classes
  (``[[:alpha:]]``), ``\\<``, ``\\>``, ``\\``` and ``\\'`` are translated.
* pcre: named groups, ``\\k`` and ``\\g`` back-references, ``\\Q...\\E``,
  ``\\z``, ``\\Z``, ``\\h``, ``\\R``, ``\\e``, ``\\x{...}`` and POSIX classes are
  translated; recursion (``(?R)``, ``(?1)``, ``(?&name)``), ``(?|``,
  ``\\K``, Unicode properties (``\\p{...}``), ``\\X`` and ``(*VERB)`` are not
  supported and refused with the line that uses them.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mta.tables.base import (
    WHITESPACE,
    TableError,
    logical_lines,
    read_table_file,
    resolve_path,
)

# POSIX character classes and their Python equivalents (inside brackets).
_POSIX_CLASSES = {
    "alpha": "a-zA-Z",
    "digit": "0-9",
    "alnum": "a-zA-Z0-9",
    "upper": "A-Z",
    "lower": "a-z",
    "space": r" \t\n\r\f\v",
    "blank": r" \t",
    "punct": r"!-/:-@\[-`{-~",
    "print": r" -~",
    "graph": r"!-~",
    "cntrl": r"\x00-\x1f\x7f",
    "xdigit": "0-9A-Fa-f",
    "word": r"\w",
}

_UNSUPPORTED_PCRE = (
    ("(?R)", "recursion (?R)"),
    ("(?|", "branch reset (?|"),
    ("(?&", "subroutine call (?&name)"),
    ("(?P>", "subroutine call (?P>name)"),
    ("(*", "backtracking verb (*...)"),
    ("(?C", "callout (?C)"),
)

# A function that makes the TableError for a message (file and line bound).
_Fail = Callable[[str], TableError]

_SUBROUTINE = re.compile(r"\(\?[+-]?\d+\)")


class _Op(enum.Enum):
    MATCH = "match"
    IF = "if"
    ENDIF = "endif"


@dataclass(frozen=True, slots=True)
class _Pattern:
    regex: re.Pattern[str]
    match: bool  # False for "!/pattern/"
    anchored: bool  # pcre "A": match at the start only

    def hit(self, key: str) -> re.Match[str] | bool | None:
        """The match object, True for a negated pattern that does not match,
        or None/False when the rule does not apply."""
        found = self.regex.match(key) if self.anchored else self.regex.search(key)
        if self.match:
            return found
        return found is None


@dataclass(frozen=True, slots=True)
class _Rule:
    op: _Op
    lineno: int
    first: _Pattern | None = None
    second: _Pattern | None = None
    result: tuple[str | int, ...] = ()  # literal text and group numbers
    end: int = 0  # for IF: the index of its ENDIF


class RegexpTable:
    """An immutable, ordered list of pattern rules."""

    __slots__ = ("_rules", "_spec", "_warnings")

    def __init__(self, spec: str, rules: list[_Rule], warnings: list[str]) -> None:
        self._spec = spec
        self._rules = tuple(rules)
        self._warnings = tuple(warnings)

    @classmethod
    def from_bytes(cls, spec: str, data: bytes, *, file: str, pcre: bool) -> RegexpTable:
        """Parse regexp_table(5) (or, with ``pcre``, pcre_table(5)) text;
        ``file`` names it in messages."""
        warnings: list[str] = []
        return cls(spec, _parse_rules(data, file, warnings, pcre), warnings)

    @property
    def spec(self) -> str:
        return self._spec

    @property
    def warnings(self) -> tuple[str, ...]:
        return self._warnings

    def lookup(self, key: str) -> str | None:
        rules = self._rules
        i = 0
        while i < len(rules):
            rule = rules[i]
            if rule.op is _Op.MATCH:
                assert rule.first is not None
                found = rule.first.hit(key)
                if found and (rule.second is None or rule.second.hit(key)):
                    return _expand(rule.result, found)
            elif rule.op is _Op.IF:
                assert rule.first is not None
                if not rule.first.hit(key):
                    i = rule.end
            i += 1
        return None

    def __repr__(self) -> str:
        return f"<RegexpTable {self._spec} ({len(self._rules)} rules)>"


def _expand(parts: tuple[str | int, ...], found: re.Match[str] | bool) -> str:
    if len(parts) == 1 and isinstance(parts[0], str):
        return parts[0]
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif isinstance(found, re.Match):
            out.append(found.group(part) or "")
    return "".join(out)


# -- parsing -------------------------------------------------------------------


def _parse_rules(data: bytes, file: str, warnings: list[str], pcre: bool) -> list[_Rule]:
    kind = "pcre" if pcre else "regexp"
    rules: list[_Rule] = []
    open_ifs: list[tuple[int, int]] = []  # (rule index, line number)
    for line in logical_lines(data, file, warnings):
        text = line.text.rstrip(WHITESPACE)
        lineno = line.lineno

        def fail(message: str) -> TableError:
            return TableError(f"{kind} map: {message}", file, lineno)  # noqa: B023

        word = re.match(r"[A-Za-z0-9]+", text)
        keyword = word.group(0).lower() if word else ""
        if keyword == "endif":
            if text[5:].strip(WHITESPACE):
                raise fail(f'unexpected text after "endif": "{text[5:].strip(WHITESPACE)}"')
            if not open_ifs:
                raise fail('"endif" without matching "if"')
            index, _ = open_ifs.pop()
            rules[index] = _with_end(rules[index], len(rules))
            rules.append(_Rule(_Op.ENDIF, lineno))
            continue
        if keyword == "if":
            rest = text[2:].lstrip(WHITESPACE)
            if not rest:
                raise fail('no pattern after "if"')
            pattern, rest = _get_pattern(rest, fail, pcre)
            if rest.strip(WHITESPACE):
                raise fail(
                    f'unexpected text after "if" pattern: "{rest.strip(WHITESPACE)}" '
                    "(do not indent the rules between if and endif)"
                )
            open_ifs.append((len(rules), lineno))
            rules.append(_Rule(_Op.IF, lineno, first=pattern))
            continue
        if word is not None:
            raise fail(f'unrecognized request: "{text[:40]}"')
        first, rest = _get_pattern(text, fail, pcre)
        second = None
        if rest.startswith("!"):
            second, rest = _get_pattern(rest, fail, pcre)
        result_text = rest.strip(WHITESPACE)
        if not result_text:
            raise fail("missing result after the pattern")
        result = _parse_result(result_text, fail)
        groups = max((p for p in result if isinstance(p, int)), default=0)
        if groups and not first.match:
            raise fail("$number found in negative match replacement text")
        if groups > first.regex.groups:
            raise fail(f'out of range replacement index "{groups}"')
        rules.append(_Rule(_Op.MATCH, lineno, first=first, second=second, result=result))
    if open_ifs:
        raise TableError(f'{kind} map: "if" without matching "endif"', file, open_ifs[-1][1])
    return rules


def _with_end(rule: _Rule, end: int) -> _Rule:
    return _Rule(rule.op, rule.lineno, rule.first, rule.second, rule.result, end)


def _get_pattern(text: str, fail: _Fail, pcre: bool) -> tuple[_Pattern, str]:
    """Parse ``[!...]<d>pattern<d>flags`` at the start of ``text``; returns
    the compiled pattern and the text after the flags."""
    match = True
    i = 0
    while i < len(text) and text[i] == "!":
        match = not match
        i += 1
    while i < len(text) and text[i] in WHITESPACE:
        i += 1
    if i >= len(text):
        raise fail("no regexp")
    delimiter = text[i]
    i += 1
    start = i
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            i += 2
            continue
        if text[i] == delimiter:
            break
        i += 1
    else:
        raise fail(f'no closing regexp delimiter "{delimiter}"')
    # An escaped delimiter stays escaped: "\\/" means "/" to the engine.
    source = text[start:i]
    i += 1
    flags_start = i
    while i < len(text) and text[i] not in WHITESPACE and text[i] != "!":
        i += 1
    letters = text[flags_start:i]
    return _compile(source, letters, fail, pcre, match), text[i:]


def _compile(source: str, letters: str, fail: _Fail, pcre: bool, match: bool) -> _Pattern:
    caseless, multiline, dotall, verbose, basic = True, False, not pcre, False, False
    anchored = dollar_end_only = ungreedy = False
    allowed = "imsxAEUX" if pcre else "imx"
    for letter in letters:
        if letter not in allowed:
            raise fail(f'unknown regexp option "{letter}"')
        if letter == "i":
            caseless = not caseless
        elif letter == "m":
            multiline = not multiline
            if not pcre:
                # POSIX REG_NEWLINE: "." and [^...] stop at newlines, ^ and $
                # match at them.
                dotall = not multiline
        elif letter == "s":
            dotall = not dotall
        elif letter == "x":
            if pcre:
                verbose = not verbose
            else:
                basic = not basic
        elif letter == "A":
            anchored = True
        elif letter == "E":
            dollar_end_only = True
        elif letter == "U":
            ungreedy = True
    try:
        if pcre:
            translated = _translate_pcre(source, dollar_end_only and not multiline, ungreedy)
        else:
            translated = _translate_posix(source, basic)
    except ValueError as e:
        raise fail(f'bad pattern "{source}": {e}') from None
    flags = 0
    if caseless:
        flags |= re.IGNORECASE
    if multiline:
        flags |= re.MULTILINE
    if dotall:
        flags |= re.DOTALL
    if verbose:
        flags |= re.VERBOSE
    try:
        regex = re.compile(translated, flags)
    except re.error as e:
        raise fail(f'bad pattern "{source}": {e}') from None
    return _Pattern(regex, match, anchored)


def _parse_result(text: str, fail: _Fail) -> tuple[str | int, ...]:
    """Split a result into literal text and group numbers (Postfix
    mac_parse: ``$n``, ``${n}``, ``$(n)``, ``$$``)."""
    parts: list[str | int] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "$":
            literal.append(ch)
            i += 1
            continue
        nxt = text[i + 1 : i + 2]
        if nxt == "$":
            literal.append("$")
            i += 2
            continue
        if nxt in ("{", "("):
            close = "}" if nxt == "{" else ")"
            end = text.find(close, i + 2)
            if end < 0:
                raise fail(f'bad replacement syntax: missing "{close}" in "{text}"')
            name = text[i + 2 : end]
            i = end + 1
        else:
            m = re.match(r"[A-Za-z0-9_]+", text[i + 1 :])
            if m is None:
                literal.append("$")
                i += 1
                continue
            name = m.group(0)
            i += 1 + len(name)
        if not name.isdigit():
            raise fail(f'non-numeric replacement index "{name}"')
        if int(name) < 1:
            raise fail(f'out-of-range replacement index "{name}"')
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(int(name))
    if literal or not parts:
        parts.append("".join(literal))
    return tuple(parts)


# -- pattern translation ----------------------------------------------------------


def _bracket(source: str, i: int) -> tuple[str, int]:
    """Translate a bracket expression starting at ``source[i] == "["``;
    returns the Python text and the index after the closing bracket."""
    out = ["["]
    i += 1
    if i < len(source) and source[i] == "^":
        out.append("^")
        i += 1
    first = True
    while i < len(source):
        ch = source[i]
        if ch == "]" and not first:
            out.append("]")
            return "".join(out), i + 1
        if ch == "]" and first:
            out.append(r"\]")  # a leading "]" is literal in POSIX and PCRE
        elif source.startswith("[:", i):
            end = source.find(":]", i + 2)
            if end < 0:
                raise ValueError("unterminated POSIX character class")
            name = source[i + 2 : end]
            negated = name.startswith("^")
            cls = _POSIX_CLASSES.get(name.lstrip("^"))
            if cls is None:
                raise ValueError(f'unknown character class "[:{name}:]"')
            if negated:
                raise ValueError(f'negated character class "[:{name}:]" is not supported')
            out.append(cls)
            i = end + 2
            first = False
            continue
        elif source.startswith("[=", i) or source.startswith("[.", i):
            raise ValueError("collating elements and equivalence classes are not supported")
        elif ch == "[":
            out.append(r"\[")
        elif ch == "\\" and i + 1 < len(source):
            out.append(source[i : i + 2])
            i += 2
            first = False
            continue
        else:
            out.append(ch)
        i += 1
        first = False
    raise ValueError('missing "]"')


def _translate_posix(source: str, basic: bool) -> str:
    """POSIX extended (or, with ``basic``, basic) regular expression syntax
    as Python ``re`` syntax."""
    out: list[str] = []
    i = 0
    while i < len(source):
        ch = source[i]
        if ch == "[":
            text, i = _bracket(source, i)
            out.append(text)
            continue
        if ch == "\\" and i + 1 < len(source):
            nxt = source[i + 1]
            i += 2
            if nxt in "<>":
                out.append(r"\b")
            elif nxt == "`":
                out.append(r"\A")
            elif nxt == "'":
                out.append(r"\Z")
            elif basic and nxt in "(){}|+?":
                out.append(nxt)  # BRE: \( is a group, \{ an interval
            elif nxt.isdigit() or nxt in "wWsSbB":
                out.append("\\" + nxt)
            elif nxt.isalnum():
                out.append(re.escape(nxt))  # glibc: an unknown escape is the letter
            else:
                out.append(re.escape(nxt))
            continue
        if basic and ch in "(){}|+?":
            out.append("\\" + ch)  # BRE: literal
        elif basic and ch == "*" and (not out or out[-1] in ("(", "^", "|")):
            out.append(r"\*")  # BRE: a leading "*" is literal
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def _translate_pcre(source: str, dollar_end_only: bool, ungreedy: bool) -> str:
    """PCRE syntax as Python ``re`` syntax; ValueError for what Python
    cannot do."""
    for marker, what in _UNSUPPORTED_PCRE:
        if marker in source:
            raise ValueError(f"{what} is not supported")
    if _SUBROUTINE.search(source):
        raise ValueError("subroutine calls (?N) are not supported")
    out: list[str] = []
    i = 0
    n = len(source)
    while i < n:
        ch = source[i]
        if ch == "[":
            text, i = _bracket(source, i)
            out.append(text)
        elif ch == "\\" and i + 1 < n:
            text, i = _pcre_escape(source, i)
            out.append(text)
        elif source.startswith("(?<", i) and i + 3 < n and source[i + 3] not in "=!":
            out.append("(?P<")
            i += 3
        elif source.startswith("(?'", i):
            end = source.find("'", i + 3)
            if end < 0:
                raise ValueError("unterminated group name")
            out.append(f"(?P<{source[i + 3 : end]}>")
            i = end + 1
        elif ch == "$" and dollar_end_only:
            out.append(r"\Z")
            i += 1
        elif ch in "*+?}" and ungreedy:
            out.append(ch)
            i += 1
            if ch == "?" and out[-2:-1] and out[-2] in ("(",):
                continue  # "(?" starts a group, not a quantifier
            if i < n and source[i] == "?":
                i += 1  # lazy becomes greedy
            elif i < n and source[i] == "+":
                pass  # possessive stays possessive
            else:
                out.append("?")
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _pcre_escape(source: str, i: int) -> tuple[str, int]:
    nxt = source[i + 1]
    if nxt == "Q":
        end = source.find(r"\E", i + 2)
        literal = source[i + 2 :] if end < 0 else source[i + 2 : end]
        return re.escape(literal), (len(source) if end < 0 else end + 2)
    if nxt == "E":
        return "", i + 2
    if nxt == "z":
        return r"\Z", i + 2
    if nxt == "Z":
        return r"(?=\n?\Z)", i + 2
    if nxt == "h":
        return r"[ \t]", i + 2
    if nxt == "H":
        return r"[^ \t]", i + 2
    if nxt == "R":
        return r"(?:\r\n|\n|\r)", i + 2
    if nxt == "e":
        return r"\x1b", i + 2
    if nxt == "x" and source.startswith("{", i + 2):
        end = source.find("}", i + 3)
        if end < 0:
            raise ValueError(r"unterminated \x{...}")
        return re.escape(chr(int(source[i + 3 : end], 16))), end + 1
    if nxt in "kg":
        m = re.match(r"(?:<(\w+)>|'(\w+)'|\{(-?\w+)\}|(-?\d+))", source[i + 2 :])
        if m is None:
            raise ValueError(f"bad back-reference \\{nxt}")
        name = next(g for g in m.groups() if g is not None)
        if name.startswith("-"):
            raise ValueError("relative back-references are not supported")
        if name.isdigit():
            return f"(?:\\{name})", i + 2 + m.end()
        return f"(?P={name})", i + 2 + m.end()
    if nxt in "pPXK":
        raise ValueError(f"\\{nxt} is not supported")
    if nxt == "c" and i + 2 < len(source):
        return re.escape(chr(ord(source[i + 2].upper()) ^ 0x40)), i + 3
    return source[i : i + 2], i + 2


# -- registry openers ------------------------------------------------------------


def _open(spec: str, name: str, base_dir: Path, pcre: bool) -> RegexpTable:
    path = resolve_path(name, base_dir)
    return RegexpTable.from_bytes(spec, read_table_file(path), file=str(path), pcre=pcre)


def open_regexp(spec: str, name: str, base_dir: Path) -> RegexpTable:
    """Registry opener for ``regexp:FILE``."""
    return _open(spec, name, base_dir, pcre=False)


def open_pcre(spec: str, name: str, base_dir: Path) -> RegexpTable:
    """Registry opener for ``pcre:FILE``."""
    return _open(spec, name, base_dir, pcre=True)
