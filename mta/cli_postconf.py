"""``mta postconf``: Postfix's postconf for mta's main.cf.

Job: parse postconf's flags, print parameter values or edit main.cf, and turn every
failure into one line on stderr and an exit code. The formatting and editing are in
``mta.config.edit``; this module is only the command line.

Inputs: the configuration directory and the arguments after ``postconf``.
Outputs: lines on stdout (values), lines on stderr (warnings, the reason of a failure),
the exit code (0 success, 1 failure).

    postconf [-c DIR] [-n | -d] [-h] [NAME ...]     print values
    postconf [-c DIR] -e 'name = value' ...          edit main.cf in place
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mta.config.edit import EditError, Mode, edit_main_cf, postconf_lines
from mta.config.model import MAIN_CF, read


class _UsageError(Exception):
    """A command line that postconf does not accept."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


def _parser() -> _Parser:
    parser = _Parser(prog="mta postconf", add_help=False, description=__doc__)
    parser.add_argument("--help", action="help", help="show this help and exit")
    parser.add_argument("-c", dest="confdir", type=Path, help="the configuration directory")
    parser.add_argument("-n", action="store_true", help="only parameters set in main.cf")
    parser.add_argument("-d", action="store_true", help="default values")
    parser.add_argument("-h", action="store_true", help="values only, without names")
    parser.add_argument("-e", action="store_true", help="edit main.cf: set name=value ...")
    parser.add_argument("names", nargs="*", metavar="NAME", help="parameter (or name=value)")
    return parser


def run(confdir: Path, argv: list[str]) -> int:
    """Run postconf with ``argv`` on ``confdir``; return the exit code."""
    try:
        options = _parser().parse_args(argv)
        if options.n and options.d:
            raise _UsageError("-n and -d cannot be used together")
        if options.e and (options.n or options.d or options.h):
            raise _UsageError("-e cannot be combined with -n, -d or -h")
        if options.e and not options.names:
            raise _UsageError("-e needs name=value arguments")
    except _UsageError as exc:
        print(f"postconf: fatal: {exc}", file=sys.stderr)
        return 1
    confdir = options.confdir or confdir
    main_cf = Path(confdir) / MAIN_CF

    if options.e:
        try:
            warnings = edit_main_cf(main_cf, options.names)
        except EditError as exc:
            print(f"postconf: fatal: {main_cf}: {exc}", file=sys.stderr)
            return 1
        for warning in warnings:
            print(warning, file=sys.stderr)
        return 0

    mode: Mode = "non_default" if options.n else "default" if options.d else "effective"
    config, problems = read(Path(confdir))
    unreadable = [p for p in problems if p.message.startswith("cannot read main.cf")]
    if unreadable and mode != "default":
        print(f"postconf: fatal: {unreadable[0].message}: {main_cf}", file=sys.stderr)
        return 1
    warnings = []
    for line in postconf_lines(config, options.names, mode, options.h, warnings):
        print(line)
    for warning in warnings:
        print(warning, file=sys.stderr)
    return 0
