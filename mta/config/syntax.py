"""The text syntax of Postfix configuration files, and of values in them.

Job: turn main.cf text into ``name = value`` settings with their line numbers, expand
``$name`` references in a value, split list values into elements and replace ``/file``
elements by the file's elements, and resolve a TCP port written as a number or a name.
Nothing here knows which parameters exist or what their values mean (``parameters.py``)
or how a whole configuration is assembled (``model.py``); ``master.py`` uses the logical
line reader and the word splitter for master.cf.

Inputs: text, a lookup function for expansion, a base directory for ``/file`` elements.
Outputs: ``Setting`` and ``Problem`` values, expanded strings, lists of elements. Errors
in values are raised as ``ValueError`` subclasses whose message is the reason.

Postfix semantics (postconf(5), readlline(3), mac_expand(3), mystrtok(3)):

* a line whose first non-white-space character is ``#`` is a comment, as is a blank
  line; ``#`` anywhere else is part of the value;
* a line that starts with white space continues the logical line before it, and comment
  or blank lines in between do not end that logical line;
* ``$name``, ``${name}``, ``$(name)``, ``${name?text}``, ``${name:text}`` and
  ``${name?{text}:{text}}`` expand at use; ``$$`` is a literal ``$``;
* list elements are separated by commas and/or white space; ``{ ... }`` groups text
  with separators into one element, braces nest.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

#: The white space of Postfix's ISSPACE(): ASCII only, so that a non-breaking space or
#: other Unicode space in a value is kept as written.
WHITESPACE = " \t\r\n\v\f"

#: Names that may be assigned in main.cf or with ``-o``. Postfix derives per-transport
#: names from master.cf service names (``scalemail-backend_destination_rate_delay``),
#: so a hyphen is allowed.
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")

#: Names that ``$name`` can refer to: mac_parse(3) takes letters, digits and underscore.
_REF_RE = re.compile(r"[A-Za-z0-9_]+")

#: Postfix's own loop guard in mac_expand(3) is a nesting limit of 100.
MAX_NESTING = 100

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One finding about a configuration file; ``line`` is None when it concerns the
    file as a whole or a default value."""

    file: str
    line: int | None
    severity: Severity
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.severity}: {self.message}"


@dataclass(frozen=True)
class Setting:
    """A ``name = value`` as written (value unexpanded) and where it was written."""

    name: str
    value: str
    file: str
    line: int | None


@dataclass(frozen=True)
class LogicalLine:
    """A logical line: its text with continuation lines joined by one space, the
    physical line numbers (1-based) that make it up, and whether its first line
    started with white space (which Postfix warns about)."""

    text: str
    lines: tuple[int, ...]
    indented: bool

    @property
    def first(self) -> int:
        return self.lines[0]


class ExpansionError(ValueError):
    """A ``$`` expression that cannot be expanded (syntax, loop, nesting)."""


class ListSyntaxError(ValueError):
    """A list value whose braces do not balance."""


class FileElementError(ValueError):
    """A ``/file`` list element that cannot be read."""


# -- lines -----------------------------------------------------------------------------


def _is_skipped(physical: str) -> bool:
    stripped = physical.lstrip(WHITESPACE)
    return not stripped or stripped.startswith("#")


def logical_lines(text: str) -> Iterator[LogicalLine]:
    """Yield the logical lines of ``text``, skipping comment and blank lines.

    Only ``\\n`` ends a line (a ``\\r`` before it is trailing white space), so that
    Unicode line separators stay inside values as Postfix keeps them."""
    parts: list[str] = []
    numbers: list[int] = []
    indented = False
    for number, physical in enumerate(text.split("\n"), start=1):
        if _is_skipped(physical):
            continue
        starts_with_space = physical[0] in WHITESPACE
        if starts_with_space and parts:
            parts.append(physical.strip(WHITESPACE))
            numbers.append(number)
            continue
        if parts:
            yield LogicalLine(" ".join(parts), tuple(numbers), indented)
        parts = [physical.strip(WHITESPACE)]
        numbers = [number]
        indented = starts_with_space
    if parts:
        yield LogicalLine(" ".join(parts), tuple(numbers), indented)


def parse_assignment(text: str) -> tuple[str, str]:
    """Split ``name = value`` into a stripped name and value; ValueError with the
    reason when there is no ``=`` or the name is not a parameter name."""
    name, sep, value = text.partition("=")
    name = name.strip(WHITESPACE)
    if not sep:
        raise ValueError(f'missing "=" in "{text}"')
    if not name:
        raise ValueError(f'missing parameter name before "=" in "{text}"')
    if not NAME_RE.fullmatch(name):
        raise ValueError(f'bad parameter name "{name}"')
    return name, value.strip(WHITESPACE)


def parse_main_cf(text: str, file: str) -> tuple[dict[str, Setting], list[Problem]]:
    """Read main.cf ``text``: the settings by name (the last one wins, as in Postfix)
    and the syntax problems, each with ``file`` and its line number."""
    settings: dict[str, Setting] = {}
    problems: list[Problem] = []
    for logical in logical_lines(text):
        if logical.indented:
            problems.append(
                Problem(file, logical.first, "warning", "logical line starts with white space")
            )
        try:
            name, value = parse_assignment(logical.text)
        except ValueError as exc:
            problems.append(Problem(file, logical.first, "error", str(exc)))
            continue
        earlier = settings.get(name)
        if earlier is not None:
            problems.append(
                Problem(
                    file,
                    logical.first,
                    "warning",
                    f"{name} is set again (first at line {earlier.line}); this value is used",
                )
            )
        settings[name] = Setting(name, value, file, logical.first)
    return settings, problems


# -- expansion ---------------------------------------------------------------------------

#: Returns the expanded value of a name, or None when the name is not defined.
Lookup = Callable[[str], str | None]


def _matching(text: str, start: int, opening: str, closing: str) -> int:
    """Index of the bracket that closes the one at ``start``, or -1."""
    depth = 0
    for index in range(start, len(text)):
        char = text[index]
        if char == opening:
            depth += 1
        elif char == closing:
            depth -= 1
            if depth == 0:
                return index
    return -1


def _brace_group(text: str) -> tuple[str, str] | None:
    """Split ``{inner} rest`` into the stripped inner text and the rest after it."""
    text = text.lstrip(WHITESPACE)
    if not text.startswith("{"):
        return None
    end = _matching(text, 0, "{", "}")
    if end < 0:
        raise ExpansionError(f'missing "}}" in "{text}"')
    return text[1:end].strip(WHITESPACE), text[end + 1 :].strip(WHITESPACE)


def _branches(operator: str, text: str) -> tuple[str, str]:
    """The text used when the condition holds and the text used when it does not.

    ``?`` takes ``text``, ``{text}`` or ``{text1}:{text2}``; ``:`` takes ``text`` or
    ``{text}`` (Postfix 3.0 added the braced forms)."""
    group = _brace_group(text)
    if group is None:
        return text, ""
    chosen, rest = group
    if not rest:
        return chosen, ""
    if operator == "?" and rest.startswith(":"):
        other = _brace_group(rest[1:])
        if other is not None and not other[1]:
            return chosen, other[0]
    raise ExpansionError(f'unexpected text after "{{{chosen}}}": "{rest}"')


def _expand_macro(body: str, lookup: Lookup, depth: int) -> str:
    match = _REF_RE.match(body)
    if match is None:
        if body.lstrip(WHITESPACE).startswith("{"):
            raise ExpansionError(f'unsupported expression "${{{body}}}"')
        raise ExpansionError(f'bad parameter name in "${{{body}}}"')
    value = lookup(match.group())
    rest = body[match.end() :]
    if not rest:
        return value or ""
    operator = rest[0]
    if operator not in "?:":
        raise ExpansionError(f'unexpected "{operator}" after "${{{match.group()}"')
    when_true, when_false = _branches(operator, rest[1:])
    holds = bool(value) if operator == "?" else not value
    return _expand(when_true if holds else when_false, lookup, depth + 1)


def _expand(value: str, lookup: Lookup, depth: int) -> str:
    if depth > MAX_NESTING:
        raise ExpansionError("unreasonable macro call nesting")
    out: list[str] = []
    index = 0
    while True:
        dollar = value.find("$", index)
        if dollar < 0:
            out.append(value[index:])
            return "".join(out)
        out.append(value[index:dollar])
        after = value[dollar + 1 : dollar + 2]
        if after == "$":
            out.append("$")
            index = dollar + 2
        elif after in ("{", "("):
            closing = "}" if after == "{" else ")"
            end = _matching(value, dollar + 1, after, closing)
            if end < 0:
                raise ExpansionError(f'missing "{closing}" after "${after}" in "{value}"')
            out.append(_expand_macro(value[dollar + 2 : end], lookup, depth))
            index = end + 1
        elif after and _REF_RE.match(after):
            match = _REF_RE.match(value, dollar + 1)
            assert match is not None
            out.append(lookup(match.group()) or "")
            index = match.end()
        else:
            # A "$" that starts no reference stands for itself.
            out.append("$")
            index = dollar + 1


def expand(value: str, lookup: Lookup) -> str:
    """Expand the ``$`` references in ``value`` once, asking ``lookup`` for the
    (already expanded) value of each name; an undefined name expands to empty.

    Recursion through other parameters and its loop guard belong to ``lookup``."""
    return _expand(value, lookup, 0)


# -- lists -------------------------------------------------------------------------------


def _split(value: str, separators: str) -> list[str]:
    elements: list[str] = []
    index, size = 0, len(value)
    while True:
        while index < size and value[index] in separators:
            index += 1
        if index >= size:
            return elements
        start, depth = index, 0
        while index < size:
            char = value[index]
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth < 0:
                    raise ListSyntaxError(f'unexpected "}}" in "{value}"')
            elif depth == 0 and char in separators:
                break
            index += 1
        if depth > 0:
            raise ListSyntaxError(f'missing "}}" in "{value}"')
        elements.append(value[start:index])


def split_list(value: str) -> list[str]:
    """Split a list value on commas and/or white space; a ``{ ... }`` group (nested
    braces balanced) stays inside its element, braces included."""
    return _split(value, WHITESPACE + ",")


def split_words(value: str) -> list[str]:
    """Split on white space only, keeping ``{ ... }`` groups whole (master.cf fields)."""
    return _split(value, WHITESPACE)


def unbrace(element: str) -> str:
    """``{ text }`` becomes ``text``; anything else is returned unchanged (extpar(3))."""
    if element.startswith("{") and _matching(element, 0, "{", "}") == len(element) - 1:
        return element[1:-1].strip(WHITESPACE)
    return element


def is_file_element(element: str) -> bool:
    """A list element that names a file: ``/absolute`` as in Postfix, or ``./name`` and
    ``../name`` relative to the configuration directory (an mta addition: a bare
    relative name would be indistinguishable from a domain name)."""
    return element.startswith(("/", "./", "../"))


def expand_file_elements(elements: list[str], base: Path, _depth: int = 0) -> list[str]:
    """Replace each file element by the list elements on its non-comment lines (which
    may name files in turn); other elements are kept in place."""
    result: list[str] = []
    for element in elements:
        if not is_file_element(element):
            result.append(element)
            continue
        if _depth >= MAX_NESTING:
            raise FileElementError(f"{element}: files nested too deeply")
        path = base / element
        try:
            text = path.read_text(encoding="utf-8", errors="surrogateescape")
        except OSError as exc:
            raise FileElementError(f"cannot read {path}: {exc.strerror or exc}")
        for logical in logical_lines(text):
            try:
                inner = split_list(logical.text)
            except ListSyntaxError as exc:
                raise FileElementError(f"{path}:{logical.first}: {exc}")
            result.extend(expand_file_elements(inner, base, _depth + 1))
    return result


# -- ports -------------------------------------------------------------------------------

#: Used when /etc/services lacks a name (minimal containers have no /etc/services).
KNOWN_PORTS = {"smtp": 25, "lmtp": 24, "submission": 587, "smtps": 465, "submissions": 465}


def resolve_port(text: str) -> int:
    """A TCP port written as a number (1..65535) or a service name."""
    if text.isascii() and text.isdigit():
        port = int(text)
        if not 0 < port < 65536:
            raise ValueError("port out of range 1..65535")
        return port
    if not text:
        raise ValueError("empty port")
    try:
        return socket.getservbyname(text, "tcp")
    except (OSError, UnicodeError):
        pass
    if text in KNOWN_PORTS:
        return KNOWN_PORTS[text]
    raise ValueError(f'unknown TCP service name "{text}"')
