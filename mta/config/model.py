"""The frozen configuration: main.cf and master.cf read, expanded, validated.

Job: assemble a configuration directory into one immutable ``Config`` with typed
accessors, and report every problem (errors that stop the daemon, warnings that do not)
with its file and line. Reload builds a new ``Config`` and swaps it whole.

Inputs: a configuration directory holding ``main.cf`` (required), ``master.cf``
(optional) and ``properties.yaml`` (optional appliance properties, ``properties.py``).
Outputs: ``Config``; ``Problem`` lists; ``ConfigError`` from ``load``.

Values are expanded and checked once, when the configuration is read, so that an
accessor never fails on a loaded configuration. A master.cf service's ``-o`` overrides
make a derived configuration (``Config.for_service``) in which the overrides also take
part in the ``$name`` expansion of other parameters, as in Postfix.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from mta.config.master import MasterService, default_services, parse_master_cf
from mta.config.parameters import PARAMETERS, DefaultContext, Kind, Parameter, Value
from mta.config.properties import layer as layer_properties
from mta.config.syntax import (
    MAX_NESTING,
    WHITESPACE,
    ExpansionError,
    FileElementError,
    Problem,
    Setting,
    Severity,
    expand,
    expand_file_elements,
    parse_main_cf,
)

MAIN_CF = "main.cf"
MASTER_CF = "master.cf"


class ConfigError(Exception):
    """A configuration that cannot be used; ``problems`` holds every finding (warnings
    too) and the message is the first error, on one line."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        errors = [p for p in self.problems if p.severity == "error"] or self.problems
        message = str(errors[0]) if errors else "unusable configuration"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more errors)"
        super().__init__(message)


@dataclass(frozen=True)
class Config:
    """An immutable, validated configuration. Build it with ``load``/``check``.

    Accessors take a parameter name from the table; any other name raises KeyError
    (a programming error), and an accessor of the wrong kind raises TypeError."""

    confdir: Path
    main_cf: Path
    services: tuple[MasterService, ...]
    _settings: Mapping[str, Setting] = field(hash=False, repr=False)
    _variables: Mapping[str, str] = field(hash=False, repr=False)
    _defaults: Mapping[str, str] = field(hash=False, repr=False)
    _expanded: Mapping[str, str] = field(hash=False, repr=False)
    _values: Mapping[str, Value] = field(hash=False, repr=False)
    _failures: Mapping[str, Problem] = field(hash=False, repr=False)
    _derived: Mapping[tuple[str, str], Config] = field(hash=False, repr=False, compare=False)

    # -- typed values ---------------------------------------------------------------------
    def str(self, name: builtins.str) -> builtins.str:
        """The expanded value of any parameter, as text."""
        self._check(name, None)
        return self._expanded[name]

    def int(self, name: builtins.str) -> builtins.int:
        """An ``int`` or ``port`` parameter."""
        value = self._check(name, ("int", "port"))
        assert isinstance(value, builtins.int)
        return value

    def port(self, name: builtins.str) -> builtins.int:
        """A ``port`` parameter, resolved to a number."""
        value = self._check(name, ("port",))
        assert isinstance(value, builtins.int)
        return value

    def bool(self, name: builtins.str) -> builtins.bool:
        """A ``bool`` parameter (yes/no)."""
        value = self._check(name, ("bool",))
        assert isinstance(value, builtins.bool)
        return value

    def time(self, name: builtins.str) -> builtins.int:
        """A ``time`` parameter, in seconds."""
        value = self._check(name, ("time",))
        assert isinstance(value, builtins.int)
        return value

    def size(self, name: builtins.str) -> builtins.int:
        """A ``size`` parameter, in bytes."""
        value = self._check(name, ("size",))
        assert isinstance(value, builtins.int)
        return value

    def list(self, name: builtins.str) -> builtins.list[builtins.str]:
        """A ``list`` or ``table_list`` parameter: expanded, split, file elements
        replaced by their files' elements."""
        value = self._check(name, ("list", "table_list"))
        assert isinstance(value, tuple)
        return builtins.list(value)

    def _check(self, name: builtins.str, kinds: tuple[Kind, ...] | None) -> Value:
        parameter = _parameter(name)
        if kinds is not None and parameter.kind not in kinds:
            raise TypeError(f"{name} is a {parameter.kind} parameter")
        failure = self._failures.get(name)
        if failure is not None:
            raise ConfigError([failure])
        return self._values[name]

    # -- values as written ----------------------------------------------------------------
    def raw(self, name: builtins.str) -> builtins.str:
        """The value as written in main.cf (or by ``-o``), else the default; unexpanded."""
        _parameter(name)
        setting = self._settings.get(name)
        return self._defaults[name] if setting is None else setting.value

    def default(self, name: builtins.str) -> builtins.str:
        """The default value, unexpanded (computed defaults as computed)."""
        _parameter(name)
        return self._defaults[name]

    def is_default(self, name: builtins.str) -> builtins.bool:
        """Whether the parameter is not set in main.cf (nor by ``-o``)."""
        _parameter(name)
        return name not in self._settings

    def non_default(self) -> dict[builtins.str, builtins.str]:
        """The supported parameters that are set explicitly, by name: raw values."""
        return {
            name: self._settings[name].value
            for name in sorted(self._settings)
            if name in PARAMETERS
        }

    def origin(self, name: builtins.str) -> Setting | None:
        """Where the parameter is set (file, line), or None when it is the default."""
        _parameter(name)
        return self._settings.get(name)

    def problem(
        self, name: builtins.str, message: builtins.str, severity: Severity = "error"
    ) -> Problem:
        """A problem located where the parameter is set (for checks made elsewhere,
        e.g. of lookup tables or TLS files named by a parameter)."""
        setting = self.origin(name)
        if setting is None:
            return Problem(builtins.str(self.main_cf), None, severity, f"{name}: {message}")
        return Problem(setting.file, setting.line, severity, f"{name}: {message}")

    # -- services and paths -----------------------------------------------------------------
    @property
    def master_cf(self) -> Path:
        return self.confdir / MASTER_CF

    def listeners(self) -> tuple[MasterService, ...]:
        """The SMTP listeners: ``smtpd`` services of type ``inet``."""
        return tuple(service for service in self.services if service.is_listener)

    def for_service(self, service: MasterService) -> Config:
        """This configuration with the service's ``-o`` overrides applied; raises
        ConfigError if they make a value bad (never for a service of a loaded
        configuration: those were checked at load)."""
        if not service.overrides:
            return self
        derived = self._derived.get((service.name, service.type))
        if derived is not None and service in self.services:
            return derived
        config, problems = _derive(self, service)
        if any(problem.severity == "error" for problem in problems):
            raise ConfigError(problems)
        return config

    def path(self, value: builtins.str) -> Path:
        """A path from a parameter value; relative paths resolve against the
        directory that holds main.cf."""
        path = Path(value)
        return path if path.is_absolute() else self.confdir / path


def _parameter(name: str) -> Parameter:
    try:
        return PARAMETERS[name]
    except KeyError:
        raise KeyError(f"unknown parameter: {name}") from None


# -- evaluation ------------------------------------------------------------------------------


class _Evaluation:
    """Expands and checks every table parameter for one set of settings.

    ``variables`` are names defined by context (``service_name`` in a service)."""

    def __init__(
        self,
        confdir: Path,
        main_file: str,
        settings: Mapping[str, Setting],
        variables: Mapping[str, str],
    ) -> None:
        self.confdir = confdir
        self.main_file = main_file
        self.settings = settings
        self.variables = variables
        self.defaults: dict[str, str] = {}
        self.memo: dict[str, str] = {}
        self.stack: list[str] = []
        self.undefined: dict[tuple[str, str], None] = {}

    def default(self, name: str) -> str:
        if name not in self.defaults:
            default = PARAMETERS[name].default
            if not isinstance(default, str):
                context = DefaultContext(self.confdir, lambda other: self.expanded(other) or "")
                default = default.compute(context)
            self.defaults[name] = default
        return self.defaults[name]

    def raw(self, name: str) -> str | None:
        setting = self.settings.get(name)
        if setting is not None:
            return setting.value
        if name in self.variables:
            return self.variables[name]
        if name in PARAMETERS:
            return self.default(name)
        return None

    def expanded(self, name: str) -> str | None:
        """The expanded value of any name, None if undefined. The stack of names being
        expanded is the loop guard (a loop is an error, never a RecursionError)."""
        if name in self.memo:
            return self.memo[name]
        if name in self.stack:
            loop = [*self.stack[self.stack.index(name) :], name]
            raise ExpansionError(f"expansion loop: {' -> '.join(loop)}")
        if len(self.stack) >= MAX_NESTING:
            raise ExpansionError("unreasonable macro call nesting")
        self.stack.append(name)
        try:
            raw = self.raw(name)
            if raw is None:
                return None
            if name in PARAMETERS and PARAMETERS[name].raw:
                result = raw  # filled in at use (default_rbl_reply's $rbl_code, ...)
            else:
                result = expand(raw, lambda reference: self._reference(name, reference))
        finally:
            self.stack.pop()
        self.memo[name] = result
        return result

    def _reference(self, owner: str, name: str) -> str | None:
        value = self.expanded(name)
        if value is None:
            self.undefined[(owner, name)] = None
        return value

    def located(self, name: str, severity: Severity, message: str) -> Problem:
        setting = self.settings.get(name)
        if setting is None:
            return Problem(self.main_file, None, severity, message)
        return Problem(setting.file, setting.line, severity, message)

    def evaluate(
        self,
    ) -> tuple[dict[str, str], dict[str, Value], dict[str, Problem], list[Problem]]:
        """Expanded and typed values, the failure of each bad parameter, and all
        problems (failures and undefined-name warnings)."""
        expanded: dict[str, str] = {}
        values: dict[str, Value] = {}
        failures: dict[str, Problem] = {}
        for name, parameter in PARAMETERS.items():
            text = ""
            try:
                self.default(name)
                # Never None: a table parameter always has a value.
                text = self.expanded(name) or ""
                if parameter.file_value and text.startswith("/"):
                    text = _first_line(Path(text))
                expanded[name] = text
                values[name] = parameter.parse(text, self._files)
            except (ExpansionError, FileElementError) as exc:
                failures[name] = self.located(name, "error", f"{name}: {exc}")
            except ValueError as exc:
                where = "" if name in self.settings else f" (default: {self.raw(name)})"
                failures[name] = self.located(
                    name, "error", f'bad value for {name}: "{text}": {exc}{where}'
                )
        problems = builtins.list(failures.values())
        for owner, reference in self.undefined:
            problems.append(
                self.located(
                    owner,
                    "warning",
                    f"undefined parameter ${reference} in {owner} expands to empty",
                )
            )
        return expanded, values, failures, problems

    def _files(self, elements: list[str]) -> list[str]:
        return expand_file_elements(elements, self.confdir)


def _first_line(path: Path) -> str:
    """The first non-blank line of a file that stands for a value."""
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise FileElementError(f"cannot read {path}: {exc.strerror or exc}")
    for line in text.split("\n"):
        if line.strip(WHITESPACE):
            return line.strip(WHITESPACE)
    raise FileElementError(f"{path} is empty")


def _build(
    confdir: Path,
    main_cf: Path,
    settings: Mapping[str, Setting],
    services: tuple[MasterService, ...],
    variables: Mapping[str, str],
    derived: Mapping[tuple[str, str], Config],
) -> tuple[Config, list[Problem]]:
    evaluation = _Evaluation(confdir, str(main_cf), settings, variables)
    expanded, values, failures, problems = evaluation.evaluate()
    config = Config(
        confdir=confdir,
        main_cf=main_cf,
        services=services,
        _settings=MappingProxyType(dict(settings)),
        _variables=MappingProxyType(dict(variables)),
        _defaults=MappingProxyType(evaluation.defaults),
        _expanded=MappingProxyType(expanded),
        _values=MappingProxyType(values),
        _failures=MappingProxyType(failures),
        _derived=MappingProxyType(dict(derived)),
    )
    return config, problems


def _derive(base: Config, service: MasterService) -> tuple[Config, list[Problem]]:
    """``base`` with ``service``'s overrides; problems of override values are located
    at the service's master.cf line."""
    settings = dict(base._settings)
    for name, value in service.overrides.items():
        settings[name] = Setting(name, value, str(base.master_cf), service.line)
    variables = {**base._variables, "service_name": service.name}
    return _build(base.confdir, base.main_cf, settings, base.services, variables, {})


def _override_problems(
    base: Config, base_problems: Iterable[Problem]
) -> tuple[dict[tuple[str, str], Config], list[Problem]]:
    """Derived configurations of the services with overrides, and their problems that
    the base configuration does not already have."""
    known = set(base_problems)
    derived: dict[tuple[str, str], Config] = {}
    problems: list[Problem] = []
    for service in base.services:
        if not service.overrides:
            continue
        label = f"service {service.name}/{service.type}"
        if service.is_listener:
            # Other services' overrides (syslog_name=... in Postfix's stock file) belong
            # to daemons whose work mta does internally: they are accepted silently.
            for name in service.overrides:
                if name not in PARAMETERS:
                    problems.append(
                        Problem(
                            str(base.master_cf),
                            service.line,
                            "warning",
                            f"{label}: unsupported parameter: {name}",
                        )
                    )
        config, found = _derive(base, service)
        derived[(service.name, service.type)] = config
        for problem in found:
            if problem in known:
                continue
            known.add(problem)
            if problem.file != str(base.master_cf):
                problem = Problem(
                    problem.file,
                    problem.line,
                    problem.severity,
                    f"{problem.message} (with the -o overrides of {label})",
                )
            elif not problem.message.startswith("service "):
                problem = Problem(
                    problem.file, problem.line, problem.severity, f"{label}: {problem.message}"
                )
            problems.append(problem)
    return derived, problems


# -- reading a directory ---------------------------------------------------------------------


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="surrogateescape")


def _read_services(master_cf: Path) -> tuple[tuple[MasterService, ...], list[Problem]]:
    try:
        text = _read_text(master_cf)
    except FileNotFoundError:
        return default_services(), []
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return (), [Problem(str(master_cf), None, "error", f"cannot read master.cf: {reason}")]
    return parse_master_cf(text, str(master_cf))


def read(confdir: Path) -> tuple[Config, list[Problem]]:
    """Read ``confdir`` leniently: a Config even when there are errors (an accessor
    of a bad parameter then raises ConfigError), and every problem, in file order.
    For tools such as postconf that must work on a broken configuration."""
    confdir = Path(confdir)
    main_cf = confdir / MAIN_CF
    problems: list[Problem] = []
    try:
        text = _read_text(main_cf)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        problems.append(Problem(str(main_cf), None, "error", f"cannot read main.cf: {reason}"))
        text = ""
    settings, syntax_problems = parse_main_cf(text, str(main_cf))
    problems.extend(syntax_problems)
    for name, setting in settings.items():
        if name not in PARAMETERS:
            # Postfix keeps such names as user variables for $name expansion, and so
            # do we (they stay in the settings); mta check still names them.
            problems.append(
                Problem(setting.file, setting.line, "warning", f"unsupported parameter: {name}")
            )
    # The appliance's properties.yaml, when there is one, maps onto parameters.
    settings, property_problems, _ = layer_properties(confdir, settings)
    problems.extend(property_problems)
    services, master_problems = _read_services(confdir / MASTER_CF)
    problems.extend(master_problems)
    base, base_problems = _build(confdir, main_cf, settings, services, {}, {})
    problems.extend(base_problems)
    derived, service_problems = _override_problems(base, problems)
    problems.extend(service_problems)
    config = dataclasses.replace(base, _derived=MappingProxyType(derived))
    return config, _in_file_order(problems, str(main_cf), str(confdir / MASTER_CF))


def _in_file_order(problems: list[Problem], main_cf: str, master_cf: str) -> list[Problem]:
    # Within a file, by line; problems of the whole file or of a default value (no
    # line) come after the lines, as consequences of what is written.
    rank = {main_cf: 0, master_cf: 1}
    ordered = sorted(
        enumerate(problems),
        key=lambda item: (
            rank.get(item[1].file, 2),
            item[1].file,
            item[1].line is None,
            item[1].line or 0,
            item[0],
        ),
    )
    return [problem for _, problem in ordered]


def check(confdir: Path) -> tuple[Config | None, list[Problem]]:
    """Every problem of ``confdir``, warnings too, in file order; the Config when no
    problem is an error, else None."""
    config, problems = read(confdir)
    if any(problem.severity == "error" for problem in problems):
        return None, problems
    return config, problems


def load(confdir: Path) -> Config:
    """The Config of ``confdir``; ConfigError holding the errors (in file order) if
    there is any. Warnings are not reported here: ``check`` gives them."""
    config, problems = check(confdir)
    if config is None:
        raise ConfigError([problem for problem in problems if problem.severity == "error"])
    return config


def from_settings(main_cf: Path, settings: Mapping[str, Setting]) -> tuple[Config, list[Problem]]:
    """A Config of main.cf settings alone (no master.cf) and its value problems: for
    checking an edit before it is written."""
    return _build(main_cf.parent, main_cf, settings, default_services(), {}, {})
