"""What the statistics service is told by main.cf, and what ``mta check`` says of it.

Job: turn ``stats_listen``, ``stats_username``, ``stats_password`` and
``stats_tls_cert_file``/``stats_tls_key_file`` into frozen ``StatsOptions``, and find
the problems of that configuration: an address that cannot be used and unusable TLS
files (errors), a service that listens beyond loopback without authentication or
without TLS (warnings, in the log and in ``mta check``).

Input: a Config.  Outputs: ``StatsOptions`` or None (service off), ``Problem`` lists.

``stats_listen`` is ``host:port``, ``[ipv6]:port``, or ``port`` / ``*:port`` /
``:port`` for every address (IPv6 and IPv4 where the system has them).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from mta.config import Config, Problem
from mta.config.properties import PROPERTIES_FILE, pem_pair_problem

ALL_ADDRESSES = ""


@dataclass(frozen=True)
class StatsOptions:
    host: str  # "" for every address
    port: int
    username: str = ""
    password: str = ""
    cert_file: Path | None = None
    key_file: Path | None = None

    @property
    def tls(self) -> bool:
        return self.cert_file is not None

    @property
    def authenticated(self) -> bool:
        return bool(self.username)

    @property
    def address(self) -> str:
        """The address as people write it (log lines, warnings)."""
        host = self.host or "*"
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def bind_hosts(self) -> tuple[str, ...]:
        """Where to listen, in order of preference (the first that works)."""
        if self.host == ALL_ADDRESSES:
            return ("::", "0.0.0.0")
        return (self.host,)


def parse_listen(value: str) -> tuple[str, int]:
    """``stats_listen`` as (host, port); ValueError with the reason."""
    text = value.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f'"{value}": expected [address]:port')
        port_text = rest[1:]
    elif text.count(":") == 0:
        host, port_text = ALL_ADDRESSES, text
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        raise ValueError(f'"{value}": an IPv6 address needs brackets: [address]:port')
    if host in ("*", "0.0.0.0", "::"):
        host = ALL_ADDRESSES if host == "*" else host
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f'"{value}": the port must be a number from 1 to 65535')
    if host and host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f'"{value}": "{host}" is not an IP address') from None
    return ("127.0.0.1" if host == "localhost" else host), int(port_text)


def is_loopback(host: str) -> bool:
    if host == ALL_ADDRESSES:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def stats_options(cfg: Config) -> StatsOptions | None:
    """The service's options, None when ``stats_listen`` is empty; ValueError when
    ``stats_listen`` is bad."""
    listen = cfg.str("stats_listen").strip()
    if not listen:
        return None
    host, port = parse_listen(listen)
    cert = cfg.str("stats_tls_cert_file").strip()
    key = cfg.str("stats_tls_key_file").strip() or cert
    return StatsOptions(
        host=host,
        port=port,
        username=cfg.str("stats_username"),
        password=cfg.str("stats_password") if cfg.str("stats_username") else "",
        cert_file=cfg.path(cert) if cert else None,
        key_file=cfg.path(key) if cert else None,
    )


def exposure_warnings(options: StatsOptions) -> list[str]:
    """Why this service is exposed more than it should be (empty when it is fine)."""
    warnings: list[str] = []
    if options.username and not options.password:
        warnings.append(
            "stats_username is set but stats_password is empty: the statistics service "
            "accepts that user with an empty password"
        )
    if is_loopback(options.host):
        return warnings
    if not options.authenticated:
        warnings.append(
            f"the statistics service listens on {options.address}, beyond loopback, "
            "without authentication (set stats_username and stats_password)"
        )
    if not options.tls:
        what = "its password and figures" if options.authenticated else "its figures"
        warnings.append(
            f"the statistics service listens on {options.address}, beyond loopback, "
            f"without TLS: {what} cross the network in clear (set stats_tls_cert_file)"
        )
    return warnings


def check(cfg: Config) -> list[Problem]:
    """The problems of the statistics service configuration, for the start-up check."""
    try:
        options = stats_options(cfg)
    except ValueError as exc:
        return [cfg.problem("stats_listen", str(exc))]
    if options is None:
        return []
    problems = [cfg.problem("stats_listen", w, "warning") for w in exposure_warnings(options)]
    origin = cfg.origin("stats_tls_cert_file")
    from_properties = origin is not None and origin.file.endswith(PROPERTIES_FILE)
    if options.cert_file is not None and options.key_file is not None and not from_properties:
        # (Files named by properties.yaml have the appliance's own error.)
        reason = pem_pair_problem(options.cert_file, options.key_file)
        if reason is not None:
            problems.append(cfg.problem("stats_tls_cert_file", reason))
    return problems
