"""``inline:{ key=value, { key = value with spaces }, ... }`` tables (Postfix 3.0).

Input: the part after ``inline:`` as written in main.cf.  Elements are
separated by commas and/or white space; an element in braces may hold white
space and commas in its value.  White space around ``=`` is ignored, and the
braces around the whole list are required.
Output: an :class:`InlineTable` with case-folded keys, like the fixed-string
tables of Postfix.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mta.tables.base import WHITESPACE, TableError
from mta.tables.texthash import TextHashTable

_SEPARATORS = WHITESPACE + ","


def parse_inline(name: str) -> tuple[dict[str, str], list[str]]:
    """The key/value pairs of an inline table body ``{...}``, and warnings.

    Raises TableError for unbalanced braces, an element without ``=``, an
    element without a name, and an empty table (all as Postfix dict_inline).
    """

    def fail(reason: str) -> TableError:
        return TableError(f'{reason}: "inline:{name}"; need "inline:{{name=value...}}"')

    body = strip_braces(name)
    if body is None or not body:
        raise fail("bad syntax")
    entries: dict[str, str] = {}
    warnings: list[str] = []
    for element in split_elements(body):
        if element.startswith("{"):
            inner = strip_braces(element)
            if inner is None:
                raise fail(f'syntax error in "{element}"')
            element = inner.strip(WHITESPACE)
        key, sep, value = element.partition("=")
        key = key.strip(WHITESPACE)
        if not sep or any(ch in WHITESPACE for ch in key):
            raise fail("missing '=' after attribute name")
        if not key:
            raise fail("missing attribute name")
        folded = key.casefold()
        if folded in entries:
            warnings.append(f'inline:{name}: duplicate entry: "{folded}" -- ignored')
            continue
        entries[folded] = value.strip(WHITESPACE)
    if not entries:
        raise fail("empty table")
    return entries, warnings


def strip_braces(text: str) -> str | None:
    """The text between an opening brace at the start and its matching
    closing brace at the very end, or None if ``text`` is not like that."""
    if not text.startswith("{"):
        return None
    depth = 0
    for i, ch in enumerate(text):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[1:i] if i == len(text) - 1 else None
    return None


def split_elements(body: str) -> Iterator[str]:
    """Split at commas and white space outside braces (Postfix mystrtokq)."""
    start = None
    depth = 0
    for i, ch in enumerate(body):
        if start is None:
            if ch in _SEPARATORS:
                continue
            start = i
        if ch == "{":
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
        elif depth == 0 and ch in _SEPARATORS:
            yield body[start:i]
            start = None
    if start is not None:
        yield body[start:]


def open_inline(spec: str, name: str, base_dir: Path) -> TextHashTable:
    """Registry opener for ``inline:{...}``; ``base_dir`` is not used."""
    entries, warnings = parse_inline(name)
    return TextHashTable(spec, entries, warnings)
