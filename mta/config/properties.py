"""Appliance properties: ``CONFDIR/properties.yaml`` onto main.cf parameters.

Job: read the MTA appliance's properties (the appliance datasheet: ``hostname``,
``logs_enabled``, ``maillog_filename``, ``smtpd_trusted_networks``, ``smart_relay``,
``cc_mta``, ``username``, ``password``, ``ui_port``, ``ssl_disabled``, ``ssl_key_file``,
``ssl_cert_file``, ``timezone``), check them with the datasheet's start-up errors in its
own words, and turn them into main.cf settings, so that the rest of mta (and
``mta postconf``) sees one configuration.

Inputs: the configuration directory and the main.cf settings as written.
Outputs: the settings with the properties layered in (``layer``), problems located in
properties.yaml, the volume checks the start-up check runs (``check_volumes``), and the
process time zone (``apply_timezone``).

Layering. Without properties.yaml nothing changes. With it, a property written in the
file overrides the main.cf parameters it maps to (``mta check`` warns at the main.cf
line it overrides); a property left at its datasheet default only fills in parameters
that main.cf does not set. Property values are literal text: a ``$`` in a password is
a dollar sign, not an expansion.

Volumes. The datasheet's log terminal and key volume are directories here:
``appliance_log_directory`` (maillog_filename is relative to it and it must exist when
logs are enabled) and ``appliance_key_directory`` (ssl_key_file and ssl_cert_file are
relative to it).
"""

from __future__ import annotations

import os
import re
import time
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from mta.config.syntax import Problem, Setting

PROPERTIES_FILE = "properties.yaml"

#: The datasheet's start-up errors, word for word.
ERR_PRECONFIGURE = "Error: failed to preconfigure the MTA"
ERR_UI_PORT = "Error: ui_port value must be between 1 and 65535"
ERR_SSL_KEYS_MISSING = "Error: couldn't find ssl keys on the key volume!"
ERR_SSL_NOT_DEFINED = "Error: ssl_disabled=no, but ssl key files are not defined!"
ERR_LOG_TERMINAL = "Error: logs are enabled but the 'log' terminal is not connected."
ERR_LOG_SHARE = "Error: failed to mount log share."
ERR_KEY_VOLUME = "Error: failed to mount key volume."

Kind = Literal["str", "yesno", "port", "networks"]


@dataclass(frozen=True)
class Property:
    """One appliance property: its datasheet default, kind and description."""

    name: str
    kind: Kind
    default: str
    doc: str
    maps_to: str  # the main.cf parameters it sets, for the docs


PROPERTIES: tuple[Property, ...] = (
    Property(
        "hostname", "str", "localhost.localdomain", "Host name of the mail relay.", "myhostname"
    ),
    Property(
        "logs_enabled",
        "yesno",
        "no",
        "Write the mail log on the log volume.",
        "maillog_file (with maillog_filename)",
    ),
    Property(
        "maillog_filename",
        "str",
        "",
        "The mail log file, relative to the log volume; directories are created.",
        "maillog_file",
    ),
    Property(
        "smtpd_trusted_networks",
        "networks",
        "127.0.0.1",
        "Networks open for relaying (0.0.0.0/0: an open relay).",
        "mynetworks",
    ),
    Property(
        "smart_relay",
        "str",
        "",
        "A single SMTP relay for all outgoing mail.",
        "relayhost = [host]:port",
    ),
    Property(
        "cc_mta",
        "str",
        "",
        "Domain of the single SMTP host that receives a carbon copy of every message;"
        " ignored when smart_relay is set.",
        "always_bcc = cc@DOMAIN",
    ),
    Property(
        "username",
        "str",
        "",
        "User of the statistics service (empty: no authentication).",
        "stats_username",
    ),
    Property("password", "str", "", "Password of the statistics service.", "stats_password"),
    Property("ui_port", "port", "80", "Port of the statistics service.", "stats_listen"),
    Property(
        "ssl_disabled", "yesno", "yes", "Disable SSL/TLS (yes or no).", "smtpd_tls_*, stats_tls_*"
    ),
    Property(
        "ssl_key_file",
        "str",
        "server.key",
        "The PEM private key, relative to the key volume.",
        "smtpd_tls_key_file, stats_tls_key_file",
    ),
    Property(
        "ssl_cert_file",
        "str",
        "server.pem",
        "The PEM certificate, relative to the key volume.",
        "smtpd_tls_cert_file, stats_tls_cert_file",
    ),
    Property("timezone", "str", "", "The process time zone (empty: left as it is).", "TZ"),
)

BY_NAME: Mapping[str, Property] = {p.name: p for p in PROPERTIES}

_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9-]{1,63})*\.?")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Properties:
    """The properties of one properties.yaml: every property's value as text (the
    default when not written), which were written, and on which line."""

    path: Path
    values: Mapping[str, str]
    lines: Mapping[str, int]

    def explicit(self, name: str) -> bool:
        return name in self.lines

    def yes(self, name: str) -> bool:
        return self.values[name] == "yes"

    def line(self, name: str) -> int | None:
        return self.lines.get(name)

    def problem(
        self, name: str | None, message: str, severity: Literal["error", "warning"] = "error"
    ) -> Problem:
        return Problem(str(self.path), self.lines.get(name or ""), severity, message)


# -- reading -------------------------------------------------------------------------------


def _scalar_text(value: Any) -> str | None:
    """A YAML scalar as property text (YAML 1.1 reads yes/no as booleans)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float | str):
        return str(value)
    return None


def _normalise(prop: Property, raw: Any, problems: list[str]) -> str:
    """The text of a property value, or the default after recording an error."""
    if prop.kind == "networks" and isinstance(raw, list):
        parts = [_scalar_text(item) for item in raw]
        if all(part is not None for part in parts):
            raw = ", ".join(part for part in parts if part)
    if prop.kind == "port":
        if isinstance(raw, bool) or not (
            (isinstance(raw, int) and 1 <= raw <= 65535)
            or (isinstance(raw, str) and raw.strip().isdigit() and 1 <= int(raw) <= 65535)
        ):
            problems.append(ERR_UI_PORT)
            return prop.default
        return str(int(raw))
    text = _scalar_text(raw)
    if text is None:
        problems.append(f"{ERR_PRECONFIGURE}: {prop.name}: expected a single value")
        return prop.default
    text = text.strip()
    if _CONTROL_RE.search(text):
        problems.append(f"{ERR_PRECONFIGURE}: {prop.name}: control characters in the value")
        return prop.default
    if prop.kind == "yesno":
        if text.lower() not in ("yes", "no"):
            problems.append(f"Error: {prop.name} value must be yes or no")
            return prop.default
        return text.lower()
    return text


def _check_value(name: str, text: str, values: Mapping[str, str]) -> str | None:
    """The datasheet-style error of a value that cannot be used, else None."""
    if name == "hostname" and not _HOST_RE.fullmatch(text):
        return "Error: hostname value must be a host name"
    if name == "smart_relay" and text and _relay_host(text) is None:
        return "Error: smart_relay value must be a host name or [address], optionally with :port"
    if name == "cc_mta" and text:
        domain = text.rsplit("@", 1)[-1]
        if not _HOST_RE.fullmatch(domain):
            return "Error: cc_mta value must be a domain name"
    if name == "timezone" and text:
        try:
            zoneinfo.ZoneInfo(text)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return f"Error: unknown timezone: {text}"
    if (
        name == "ssl_disabled"
        and text == "no"
        and (not values["ssl_key_file"] or not values["ssl_cert_file"])
    ):
        return ERR_SSL_NOT_DEFINED
    return None


def read_properties(confdir: Path) -> tuple[Properties | None, list[Problem]]:
    """The properties of ``confdir/properties.yaml``: None when there is no such
    file; otherwise the values and every problem. A property with a bad value keeps
    its default (and the problem is an error, so the daemon does not start)."""
    path = Path(confdir) / PROPERTIES_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, []
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        return None, [
            Problem(
                str(path),
                None,
                "error",
                f"{ERR_PRECONFIGURE}: cannot read {PROPERTIES_FILE}: {reason}",
            )
        ]
    problems: list[Problem] = []
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = " ".join(str(getattr(exc, "problem", None) or exc).split())
        return None, [Problem(str(path), line, "error", f"{ERR_PRECONFIGURE}: {reason}")]
    if data is None:
        data, node = {}, None
    if not isinstance(data, dict) or (node is not None and not isinstance(node, yaml.MappingNode)):
        return None, [
            Problem(str(path), 1, "error", f"{ERR_PRECONFIGURE}: expected name: value lines")
        ]
    lines: dict[str, int] = {}
    if node is not None:
        for key_node, _ in node.value:
            key = str(key_node.value)
            if key in lines:
                problems.append(
                    Problem(
                        str(path),
                        key_node.start_mark.line + 1,
                        "warning",
                        f"property {key} is set again; this value is used",
                    )
                )
            lines[key] = key_node.start_mark.line + 1
    values = {p.name: p.default for p in PROPERTIES}
    for key, raw in data.items():
        name = str(key)
        prop = BY_NAME.get(name)
        if prop is None:
            problems.append(
                Problem(str(path), lines.get(name), "warning", f"unknown property: {name}")
            )
            continue
        found: list[str] = []
        values[name] = _normalise(prop, raw, found)
        problems.extend(Problem(str(path), lines.get(name), "error", m) for m in found)
    lines = {name: line for name, line in lines.items() if name in BY_NAME}
    props = Properties(path, values, lines)
    for name, text_value in values.items():
        message = _check_value(name, text_value, values)
        if message is not None:
            problems.append(props.problem(name, message))
    return props, problems


# -- mapping onto main.cf ------------------------------------------------------------------


def _literal(text: str) -> str:
    """A property value as a main.cf value that expands to itself."""
    return text.replace("$", "$$")


def _relay_host(text: str) -> str | None:
    """smart_relay as a relayhost: one host, no MX lookup (``[host]`` or
    ``[host]:port``); None when it is not a host."""
    match = re.fullmatch(r"\[([^\]\s]+)\](?::(\d{1,5}))?", text)
    if match:
        host, port = match.group(1), match.group(2)
    elif text.count(":") > 1:  # a bare IPv6 address
        host, port = text, None
    else:
        host, _, port_text = text.partition(":")
        port = port_text or None
        if ":" in text and not port_text.isdigit():
            return None
    if port is not None and not 1 <= int(port) <= 65535:
        return None
    ok = _HOST_RE.fullmatch(host) or (":" in host and re.fullmatch(r"[0-9A-Fa-f:.]+", host))
    if not ok:
        return None
    return f"[{host}]:{port}" if port else f"[{host}]"


def _volume_path(directory_parameter: str, name: str) -> str:
    # "relative to the root of the volume" even when written with a leading slash.
    return f"${{{directory_parameter}}}/{_literal(name.lstrip('/'))}"


def _listen_host(main: Mapping[str, Setting]) -> str:
    setting = main.get("stats_listen")
    if setting is None or not setting.value.strip():
        return "*"
    value = setting.value.strip()
    if value.startswith("["):
        return value.split("]", 1)[0] + "]"
    host, sep, _ = value.rpartition(":")
    return host if sep and host else "*"


Derived = dict[str, str]
_Mapper = Callable[[Properties, Mapping[str, Setting]], Derived]


def _map_hostname(p: Properties, main: Mapping[str, Setting]) -> Derived:
    return {"myhostname": _literal(p.values["hostname"])}


def _map_networks(p: Properties, main: Mapping[str, Setting]) -> Derived:
    return {"mynetworks": _literal(p.values["smtpd_trusted_networks"])}


def _map_relay(p: Properties, main: Mapping[str, Setting]) -> Derived:
    value = p.values["smart_relay"]
    if not value:
        return {"relayhost": ""} if p.explicit("smart_relay") else {}
    return {"relayhost": _literal(_relay_host(value) or value)}


def _map_cc(p: Properties, main: Mapping[str, Setting]) -> Derived:
    value = p.values["cc_mta"]
    if not value or p.values["smart_relay"]:
        return {}
    return {"always_bcc": _literal(value if "@" in value else f"cc@{value}")}


def _map_username(p: Properties, main: Mapping[str, Setting]) -> Derived:
    return {"stats_username": _literal(p.values["username"])} if p.explicit("username") else {}


def _map_password(p: Properties, main: Mapping[str, Setting]) -> Derived:
    return {"stats_password": _literal(p.values["password"])} if p.explicit("password") else {}


def _map_ui_port(p: Properties, main: Mapping[str, Setting]) -> Derived:
    host = _listen_host(main)
    return {"stats_listen": f"{host}:{p.values['ui_port']}"}


def _map_logs(p: Properties, main: Mapping[str, Setting]) -> Derived:
    if not p.yes("logs_enabled"):
        return {}
    name = p.values["maillog_filename"]
    return {"maillog_file": _volume_path("appliance_log_directory", name) if name else ""}


def _map_ssl(p: Properties, main: Mapping[str, Setting]) -> Derived:
    if p.yes("ssl_disabled") or not p.values["ssl_key_file"] or not p.values["ssl_cert_file"]:
        return {}
    cert = _volume_path("appliance_key_directory", p.values["ssl_cert_file"])
    key = _volume_path("appliance_key_directory", p.values["ssl_key_file"])
    return {
        "smtpd_tls_security_level": "may",
        "smtpd_tls_cert_file": cert,
        "smtpd_tls_key_file": key,
        "stats_tls_cert_file": cert,
        "stats_tls_key_file": key,
    }


#: Each mapping and the properties it reads: a mapping counts as written in
#: properties.yaml when one of them is, and is then located at its line.
_MAPPINGS: tuple[tuple[tuple[str, ...], _Mapper], ...] = (
    (("hostname",), _map_hostname),
    (("smtpd_trusted_networks",), _map_networks),
    (("smart_relay",), _map_relay),
    (("cc_mta",), _map_cc),
    (("username",), _map_username),
    (("password",), _map_password),
    (("ui_port",), _map_ui_port),
    (("logs_enabled", "maillog_filename"), _map_logs),
    (("ssl_disabled", "ssl_key_file", "ssl_cert_file"), _map_ssl),
)


def layer(
    confdir: Path, main: Mapping[str, Setting]
) -> tuple[dict[str, Setting], list[Problem], Properties | None]:
    """main.cf ``main`` settings with the properties of ``confdir`` layered in, the
    properties' problems, and the properties (None without properties.yaml)."""
    props, problems = read_properties(confdir)
    settings = dict(main)
    if props is None:
        return settings, problems, None
    path = str(props.path)
    for names, mapper in _MAPPINGS:
        written = [name for name in names if props.explicit(name)]
        line = min((props.lines[name] for name in written), default=None)
        for parameter, value in mapper(props, main).items():
            if not written:
                settings.setdefault(parameter, Setting(parameter, value, path, None))
                continue
            earlier = main.get(parameter)
            if earlier is not None and earlier.value != value:
                problems.append(
                    Problem(
                        earlier.file,
                        earlier.line,
                        "warning",
                        f"{parameter} is overridden by {PROPERTIES_FILE} {written[0]}",
                    )
                )
            settings[parameter] = Setting(parameter, value, path, line)
    if props.values["cc_mta"] and props.values["smart_relay"]:
        problems.append(
            props.problem("cc_mta", "cc_mta is ignored because smart_relay is defined", "warning")
        )
    return settings, problems, props


# -- volumes and the time zone -------------------------------------------------------------


def check_volumes(props: Properties, log_volume: Path, key_volume: Path) -> list[Problem]:
    """The start-up errors about the log and key volumes, in the datasheet's words."""
    problems: list[Problem] = []
    if props.yes("logs_enabled"):
        if not log_volume.is_dir():
            problems.append(
                props.problem("logs_enabled", f"{ERR_LOG_TERMINAL} ({log_volume} does not exist)")
            )
        elif props.values["maillog_filename"] and not os.access(log_volume, os.W_OK | os.X_OK):
            problems.append(
                props.problem(
                    "logs_enabled",
                    f"{ERR_LOG_SHARE} ({log_volume} is not writable by uid {os.getuid()})",
                )
            )
    if (
        not props.yes("ssl_disabled")
        and props.values["ssl_key_file"]
        and props.values["ssl_cert_file"]
    ):
        where = "ssl_disabled"
        if not key_volume.is_dir() or not os.access(key_volume, os.R_OK | os.X_OK):
            problems.append(
                props.problem(where, f"{ERR_KEY_VOLUME} ({key_volume} is not a readable directory)")
            )
            return problems
        cert = key_volume / props.values["ssl_cert_file"].lstrip("/")
        key = key_volume / props.values["ssl_key_file"].lstrip("/")
        reason = pem_pair_problem(cert, key)
        if reason is not None:
            problems.append(props.problem(where, f"{ERR_SSL_KEYS_MISSING} ({reason})"))
    return problems


def pem_pair_problem(cert: Path, key: Path) -> str | None:
    """Why ``cert`` and ``key`` are not a usable PEM certificate and its private key
    (unencrypted), or None when they are."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert_data = cert.read_bytes()
    except OSError as exc:
        return f"{cert}: {exc.strerror or exc}"
    try:
        key_data = key.read_bytes()
    except OSError as exc:
        return f"{key}: {exc.strerror or exc}"
    try:
        certificate = x509.load_pem_x509_certificate(cert_data)
    except ValueError:
        return f"{cert}: not a PEM certificate"
    try:
        private = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        return f"{key}: the key is protected by a password"
    except (ValueError, Exception):
        return f"{key}: not a PEM private key"
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if certificate.public_key().public_bytes(der, spki) != private.public_key().public_bytes(
        der, spki
    ):
        return f"{key} does not belong to the certificate {cert}"
    return None


def apply_timezone(props: Properties | None, environ: dict[str, str] | None = None) -> bool:
    """Set the process time zone from ``timezone`` (an empty one leaves it as it is);
    True when it changed."""
    env = os.environ if environ is None else environ
    if props is None or not props.values["timezone"]:
        return False
    zone = props.values["timezone"]
    if env.get("TZ") == zone:
        return False
    env["TZ"] = zone
    if environ is None:
        time.tzset()
    return True
