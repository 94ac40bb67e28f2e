"""``redis:/etc/mta/redis.cf``: where the fleet's shared state lives.

Job: read a small Postfix-style configuration file (``name = value``
lines, ``#`` comments, as mysql_table(5) files are written) into a
:class:`~mta.redisclient.RedisConfig`, and give the :class:`RedisTable`
that names it.

Input: the table spec, the file name after ``redis:`` and the directory
relative names resolve against.  Output: a :class:`RedisTable`, or a
:class:`TableError` naming the file and line.

Recognised settings (all optional)::

    hosts       = 127.0.0.1:6379   # host:port, [ipv6]:port, or unix:/path/redis.sock
    dbnum       = 0                # the SELECTed database
    username    =                  # Redis 6 ACL user (with password)
    password    =                  # AUTH
    key_prefix  = mta:             # put before every key, so nodes of one fleet share keys
    timeout     = 1s               # connect and per-command limit (s, or ms with "ms")
    retry_after = 10s              # after a failure, use local state this long

A Redis table holds state the nodes write as well as read (the address
verification cache, ...), answered asynchronously: it is not a
key-to-value table for access maps, so its synchronous ``lookup``
refuses with a TableError that says where it can be used.  Entries carry
their own expiry (Redis ``EX``), set by the user of the table from its
own parameters (``address_verify_*_expire_time``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mta.config.syntax import logical_lines, parse_assignment
from mta.redisclient import RedisConfig
from mta.tables.base import TableError, read_table_file, resolve_path

#: Where a redis: table can be named.
USED_BY = "address_verify_map"

_TIME = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


@dataclass(frozen=True)
class RedisTable:
    """A ``redis:`` table: the parsed file, for a shared-state user."""

    spec: str
    config: RedisConfig
    file: Path

    def lookup(self, key: str) -> str | None:
        raise TableError(
            f"{self.spec}: a redis: table holds shared state; it can be used for {USED_BY},"
            " not as a lookup table"
        )


def _convert(name: str, value: str) -> object:
    if name == "hosts":
        raise _Hosts(value)
    if name in ("username", "password", "key_prefix"):
        return value
    if name == "dbnum":
        if not value.isdigit():
            raise ValueError(f'dbnum: need a number, not "{value}"')
        return int(value)
    if name in ("timeout", "retry_after"):
        m = _TIME.fullmatch(value)
        if m is None:
            raise ValueError(f'{name}: need a time such as 1s or 500ms, not "{value}"')
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
        if name == "timeout" and seconds <= 0:
            raise ValueError("timeout: must be more than 0")
        return seconds
    raise ValueError(f'unknown setting "{name}"')


class _Hosts(Exception):
    pass


def _parse_hosts(value: str) -> dict[str, object]:
    first = value.replace(",", " ").split()
    if not first:
        raise ValueError("hosts: empty")
    if len(first) > 1:
        raise ValueError("hosts: name one Redis server (Sentinel and Cluster are not supported)")
    host = first[0]
    if host.startswith("unix:"):
        return {"unix": host[5:], "host": "", "port": 0}
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            raise ValueError(f'hosts: bad address "{host}"')
        name, rest = host[1:end], host[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f'hosts: bad address "{host}"')
    else:
        name, _, port_text = host.partition(":")
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise ValueError(f'hosts: bad port "{port_text}"')
    return {"host": name, "port": int(port_text) if port_text else 6379, "unix": ""}


def load_redis_config(text: str, file: str) -> RedisConfig:
    """The settings of a redis.cf file; TableError at the first bad line."""
    values: dict[str, object] = {}
    for line in logical_lines(text):
        try:
            name, value = parse_assignment(line.text)
            try:
                values[_FIELD.get(name, name)] = _convert(name, value)
            except _Hosts as h:
                values.update(_parse_hosts(str(h)))
        except ValueError as e:
            raise TableError(str(e), file, line.first) from None
    return RedisConfig(**values)  # type: ignore[arg-type]


_FIELD = {"dbnum": "database"}


def open_redis(spec: str, name: str, base_dir: Path) -> RedisTable:
    """The opener for ``redis:FILE``."""
    path = resolve_path(name, base_dir)
    data = read_table_file(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TableError("not UTF-8", str(path)) from None
    return RedisTable(spec, load_redis_config(text, str(path)), path)
