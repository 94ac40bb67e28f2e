"""postconf: print parameter values as Postfix's postconf does, and edit main.cf.

Job: format ``name = value`` lines of a Config (effective, non-default or default
values, raw as written, like ``postconf`` without ``-x``), and apply ``postconf -e``
assignments to main.cf in place: a changed parameter's logical line (with its
continuation lines) is replaced where it stands, comments and order are kept, new
parameters are appended, and the file is replaced atomically only when every new value
is valid.

Inputs: a Config and parameter names; a main.cf path and ``name = value`` strings.
Outputs: lines of text; warnings as lines; ``EditError`` when an edit is refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from mta.config.model import Config, from_settings
from mta.config.parameters import PARAMETERS
from mta.config.postfix_names import POSTFIX_NAMES
from mta.config.syntax import logical_lines, parse_assignment, parse_main_cf

Mode = Literal["effective", "non_default", "default"]


class EditError(ValueError):
    """An edit that was refused; main.cf is untouched. The message is the reason."""


def format_setting(name: str, value: str) -> str:
    """``name = value`` as postconf prints and writes it (``name =`` when empty)."""
    return f"{name} = {value}" if value else f"{name} ="


def _unknown(name: str) -> str:
    what = "unsupported parameter" if name in POSTFIX_NAMES else "unknown parameter"
    return f"postconf: warning: {name}: {what}"


def postconf_lines(
    cfg: Config,
    names: Sequence[str],
    mode: Mode = "effective",
    hide_name: bool = False,
    warnings: list[str] | None = None,
) -> list[str]:
    """The lines postconf prints: for ``names`` in the order given, or for every
    parameter (``non_default``: every explicitly set one) sorted by name.

    A name that mta does not support is reported as a postconf warning line, appended
    to ``warnings``; without a ``warnings`` list it raises KeyError."""
    if not names:
        names = sorted(cfg.non_default() if mode == "non_default" else PARAMETERS)
    lines: list[str] = []
    for name in names:
        if name not in PARAMETERS:
            if warnings is None:
                raise KeyError(_unknown(name))
            warnings.append(_unknown(name))
            continue
        if mode == "non_default" and cfg.is_default(name):
            continue
        value = cfg.default(name) if mode == "default" else cfg.raw(name)
        lines.append(value if hide_name else format_setting(name, value))
    return lines


def _parse_assignments(assignments: Sequence[str]) -> dict[str, str]:
    changes: dict[str, str] = {}
    for assignment in assignments:
        if "\n" in assignment or "\r" in assignment:
            raise EditError(f'bad assignment "{assignment}": line break in value')
        try:
            name, value = parse_assignment(assignment)
        except ValueError as exc:
            raise EditError(f"bad assignment: {exc}")
        changes[name] = value
    return changes


def apply_changes(text: str, changes: Mapping[str, str]) -> str:
    """main.cf ``text`` with ``changes`` applied: the first logical line of a name is
    replaced in place, its later duplicates (which would win) are removed, comment and
    blank lines stay, names not yet present are appended in the order given."""
    replaced: dict[int, str] = {}
    removed: set[int] = set()
    seen: set[str] = set()
    for logical in logical_lines(text):
        try:
            name, _ = parse_assignment(logical.text)
        except ValueError:
            continue
        if name not in changes:
            continue
        first, *continuation = logical.lines
        if name in seen:
            removed.add(first)
        else:
            replaced[first] = format_setting(name, changes[name])
            seen.add(name)
        removed.update(continuation)
    kept = [
        replaced.get(number, line)
        for number, line in enumerate(text.split("\n"), start=1)
        if number not in removed
    ]
    result = "\n".join(kept)
    appended = [format_setting(name, value) for name, value in changes.items() if name not in seen]
    if appended:
        if result and not result.endswith("\n"):
            result += "\n"
        result += "\n".join(appended) + "\n"
    return result


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: write a temporary file beside it, fsync, rename
    over, fsync the directory, so a crash leaves the old or the new file, never half.
    The old file's mode (and owner, when permitted) is kept."""
    try:
        old = path.stat()
        mode, owner = old.st_mode & 0o7777, (old.st_uid, old.st_gid)
    except FileNotFoundError:
        mode, owner = 0o644, None
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="") as out:
            os.fchmod(out.fileno(), mode)
            if owner is not None:
                try:
                    os.fchown(out.fileno(), *owner)
                except PermissionError:
                    pass
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def edit_main_cf(path: Path, assignments: Sequence[str]) -> list[str]:
    """``postconf -e``: apply ``name = value`` assignments to the main.cf at ``path``
    (created if missing). Returns warning lines (unsupported names are written anyway,
    as Postfix does: they may be user variables). Raises EditError, leaving the file
    untouched, when an assignment or a new value is bad or the file cannot be written."""
    changes = _parse_assignments(assignments)
    if not changes:
        raise EditError("no name=value to set")
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise EditError(f"cannot read {path}: {exc.strerror or exc}")
    new_text = apply_changes(text, changes)

    settings, _ = parse_main_cf(new_text, str(path))
    _, problems = from_settings(path, settings)
    changed_lines = {settings[name].line for name in changes}
    errors: list[str] = []
    warnings = [_unknown(name) for name in changes if name not in PARAMETERS]
    for problem in problems:
        if problem.file == str(path) and problem.line in changed_lines:
            target = errors if problem.severity == "error" else warnings
            target.append(f"postconf: {problem.severity}: {problem.message}")
    if errors:
        raise EditError("; ".join(error.removeprefix("postconf: error: ") for error in errors))
    try:
        write_atomically(path, new_text)
    except OSError as exc:
        raise EditError(f"cannot write {path}: {exc.strerror or exc}")
    return warnings
