"""master.cf: the services, one per logical line, in Postfix syntax (master(5)).

Job: read master.cf text into frozen ``MasterService`` values and report what is wrong
with each line; resolve an smtpd listener's ``[host:]port`` service name; give the
services that apply when there is no master.cf. The ``-o`` overrides are returned as
written: checking them against the parameter table is ``model.py``'s job.

Inputs: master.cf text and its file name. Outputs: a tuple of ``MasterService`` and a
list of ``Problem``.

A service line is ``service type private unpriv chroot wakeup maxproc command [args]``;
``-`` in a field means its default. The lines of Postfix's own master.cf for its internal
daemons (pickup, cleanup, qmgr, bounce, ..., pipe services) are accepted silently: mta
does those jobs internally. Only ``smtpd`` services of type ``inet`` are listeners.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from mta.config.syntax import (
    ListSyntaxError,
    Problem,
    logical_lines,
    parse_assignment,
    resolve_port,
    split_words,
    unbrace,
)

SERVICE_TYPES = ("inet", "unix", "unix-dgram", "fifo", "pass")

#: The command of the services that mta implements itself: SMTP listeners.
LISTENER_COMMAND = "smtpd"

#: Postfix daemons whose work mta does internally, or that only matter inside Postfix:
#: their master.cf lines are accepted without a word.
BUILTIN_COMMANDS = frozenset(
    {
        "anvil",
        "bounce",
        "cleanup",
        "discard",
        "dnsblog",
        "error",
        "flush",
        "lmtp",
        "local",
        "oqmgr",
        "pickup",
        "pipe",
        "postlogd",
        "proxymap",
        "qmgr",
        "scache",
        "showq",
        "smtp",
        "tlsmgr",
        "tlsproxy",
        "trivial-rewrite",
        "verify",
        "virtual",
    }
)

#: Postfix daemons that would change what mta does if honoured, but are not
#: implemented: a line with one is ignored with a warning.
UNSUPPORTED_COMMANDS = frozenset({"postscreen", "qmqpd", "spawn"})

#: Options of Postfix daemons (master(8)) that take an argument.
_OPTIONS_WITH_ARGUMENT = frozenset({"-c", "-n", "-s", "-t"})


@dataclass(frozen=True)
class MasterService:
    """One master.cf service. ``maxproc`` is None for ``-`` (default_process_limit);
    ``overrides`` are the ``-o`` settings as written, in order; ``line`` is the first
    line of the service in master.cf (None for a built-in default service)."""

    name: str
    type: str
    private: bool
    unpriv: bool
    chroot: bool
    wakeup: int
    maxproc: int | None
    command: str
    args: tuple[str, ...] = ()
    overrides: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    line: int | None = None

    @property
    def is_listener(self) -> bool:
        """Whether this is an SMTP listener (an ``smtpd`` service of type ``inet``)."""
        return self.type == "inet" and self.command == LISTENER_COMMAND

    def process_limit(self, default_process_limit: int) -> int:
        """The session limit: ``maxproc``, or ``default_process_limit`` for ``-``
        (0 means no limit, as in Postfix)."""
        return default_process_limit if self.maxproc is None else self.maxproc

    def listen_address(self) -> tuple[str, int]:
        """``(host, port)`` of an inet service from its ``[host:]port`` name; host ""
        means the addresses of ``inet_interfaces``. ValueError when the name does not
        resolve, or the service is not of type inet."""
        if self.type != "inet":
            raise ValueError(f"service {self.name}/{self.type} is not an inet service")
        return split_host_port(self.name)


def split_host_port(name: str) -> tuple[str, int]:
    """Split ``host:port``, ``[ipv6]:port`` or ``port`` (a number or a name)."""
    host, port = "", name
    if name.startswith("["):
        inner, bracket, rest = name[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f'bad address "{name}": expected [host]:port')
        host, port = inner, rest[1:]
    elif ":" in name:
        host, _, port = name.rpartition(":")
    return host, resolve_port(port)


def default_services() -> tuple[MasterService, ...]:
    """The services without a master.cf: one smtpd listener on port 25 of
    ``inet_interfaces``, like the first line of Postfix's stock master.cf."""
    return (
        MasterService(
            name="smtp",
            type="inet",
            private=False,
            unpriv=True,
            chroot=False,
            wakeup=0,
            maxproc=None,
            command=LISTENER_COMMAND,
        ),
    )


class _LineError(ValueError):
    """A master.cf line that cannot be used; the message is the reason."""


def _flag(value: str, what: str, default: bool) -> bool:
    if value == "-":
        return default
    if value in ("y", "n"):
        return value == "y"
    raise _LineError(f'bad {what} field "{value}": expected y, n or -')


def _wakeup(value: str) -> int:
    # "60?" means: wake up only when the service is used (master(5)).
    number = value[:-1] if value.endswith("?") else value
    if value == "-":
        return 0
    if not (number.isascii() and number.isdigit()):
        raise _LineError(f'bad wakeup field "{value}": expected seconds or -')
    return int(number)


def _maxproc(value: str) -> int | None:
    if value == "-":
        return None
    if not (value.isascii() and value.isdigit()):
        raise _LineError(f'bad maxproc field "{value}": expected a number or -')
    return int(value)


def _options(
    words: list[str],
) -> tuple[tuple[str, ...], list[tuple[str, str]]]:
    """Separate ``-o`` overrides from the other arguments. Like getopt in the Postfix
    daemons, option parsing stops at the first word that is not an option."""
    args: list[str] = []
    overrides: list[tuple[str, str]] = []
    index = 0
    while index < len(words):
        word = words[index]
        if not word.startswith("-") or word == "-":
            break
        if word == "--":
            index += 1
            break
        if word == "-o" or word in _OPTIONS_WITH_ARGUMENT:
            if index + 1 >= len(words):
                raise _LineError(f'"{word}" needs an argument')
            argument = words[index + 1]
            index += 2
        else:
            argument = ""
            index += 1
            if word.startswith("-o"):
                word, argument = "-o", word[2:]
        if word != "-o":
            args.extend([word, argument] if argument else [word])
            continue
        try:
            name, value = parse_assignment(unbrace(argument))
        except ValueError as exc:
            raise _LineError(f"bad -o override: {exc}")
        overrides.append((name, value))
    args.extend(words[index:])
    return tuple(args), overrides


def _service(words: list[str], line: int) -> MasterService:
    if len(words) < 8:
        raise _LineError(f"a service needs 8 fields, found {len(words)}")
    name, kind, private, unpriv, chroot, wakeup, maxproc, command = words[:8]
    if kind not in SERVICE_TYPES:
        raise _LineError(f'bad type "{kind}": expected one of {", ".join(SERVICE_TYPES)}')
    args, overrides = _options(words[8:])
    mapping: dict[str, str] = {}
    for override_name, value in overrides:
        mapping[override_name] = value  # the last -o wins, as with main.cf lines
    return MasterService(
        name=name,
        type=kind,
        # An inet service is reachable from the network, so "-" means public there.
        private=_flag(private, "private", kind != "inet"),
        unpriv=_flag(unpriv, "unpriv", True),
        chroot=_flag(chroot, "chroot", False),
        wakeup=_wakeup(wakeup),
        maxproc=_maxproc(maxproc),
        command=command,
        args=args,
        overrides=MappingProxyType(mapping),
        line=line,
    )


def _command_problem(service: MasterService) -> str | None:
    """Why a parsed service will not do what its line asks, if it will not."""
    command = service.command
    if command == LISTENER_COMMAND:
        if service.type != "inet":
            return f"service {service.name}/{service.type}: smtpd is only supported as inet"
        return None
    if command in BUILTIN_COMMANDS:
        return None
    if command in UNSUPPORTED_COMMANDS:
        return f"service {service.name}/{service.type}: unsupported command: {command}"
    return f"service {service.name}/{service.type}: unknown command: {command}"


def parse_master_cf(text: str, file: str) -> tuple[tuple[MasterService, ...], list[Problem]]:
    """Read master.cf ``text``. A line with an error is left out of the services."""
    services: list[MasterService] = []
    problems: list[Problem] = []
    first_line: dict[tuple[str, str], int | None] = {}
    for logical in logical_lines(text):
        try:
            service = _service(split_words(logical.text), logical.first)
        except (_LineError, ListSyntaxError) as exc:
            problems.append(Problem(file, logical.first, "error", str(exc)))
            continue
        if service.is_listener:
            try:
                service.listen_address()
            except ValueError as exc:
                problems.append(
                    Problem(file, logical.first, "error", f"service {service.name}/inet: {exc}")
                )
                continue
        key = (service.name, service.type)
        if key in first_line:
            problems.append(
                Problem(
                    file,
                    logical.first,
                    "error",
                    f"duplicate service {service.name}/{service.type}"
                    f" (first at line {first_line[key]})",
                )
            )
            continue
        first_line[key] = service.line
        reason = _command_problem(service)
        if reason is not None:
            problems.append(Problem(file, logical.first, "warning", reason))
        services.append(service)
    return tuple(services), problems
