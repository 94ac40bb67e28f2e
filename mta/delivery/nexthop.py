"""Next-hop syntax: a ``relayhost``/transport next hop becomes host, port and
whether to look up MX records.

Input: a value as Postfix writes it in ``relayhost``, ``transport_maps``
results and ``lmtp``/``smtp`` next hops, and the default port of the
delivery agent.  Output: :class:`NextHop`, or ValueError naming what is
wrong.  Forms (Postfix ``smtp(8)``, "SMTP DESTINATION SYNTAX"):

- ``domain``, ``domain:port``: look up MX records for ``domain``;
- ``[host]``, ``[host]:port``: no MX lookup, connect to host's addresses;
- ``[192.0.2.1]``, ``[ipv6:2001:db8::1]``, ``[2001:db8::1]``: an address;
- a port is a number or a service name (``smtp``, ``submission``, ...);
- the ``inet:`` prefix of LMTP next hops is accepted and ignored.

An unbracketed address (``192.0.2.1``) has no MX records to look up, so it
is taken as if it were bracketed.  IPv6 addresses must be bracketed, since
their colons can't be told from a port separator.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

# Well-known services, so that parsing does not depend on /etc/services.
_SERVICES = {"smtp": 25, "lmtp": 24, "submission": 587, "submissions": 465, "smtps": 465}

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_\-\u0080-\U0010ffff]{1,63}(?<!-)$")


@dataclass(frozen=True)
class NextHop:
    """Where to deliver: ``host`` (a domain name or an IP address without
    brackets), ``port``, and ``mx``: True when MX records are to be looked up
    for ``host``."""

    host: str
    port: int
    mx: bool

    @property
    def is_address(self) -> bool:
        return _ip(self.host) is not None

    def __str__(self) -> str:
        host = self.host if self.mx else f"[{self.host}]"
        return f"{host}:{self.port}"


def parse_nexthop(value: str, default_port: int) -> NextHop:
    """Parse one next hop; raises ValueError with the reason."""
    text = value.strip()
    if not text:
        raise ValueError("empty next hop")
    if text.lower().startswith("unix:"):
        raise ValueError(f"UNIX-domain next hop not supported: {value!r}")
    if text.lower().startswith("inet:"):
        text = text[5:]
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError(f"missing ']' in next hop: {value!r}")
        host, rest = text[1:close], text[close + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"unexpected text after ']' in next hop: {value!r}")
        port = _port(rest[1:], value) if rest else default_port
        if host.lower().startswith("ipv6:"):
            host = host[5:]
            address = _ip(host)
            if address is None or address.version != 6:
                raise ValueError(f"bad IPv6 address in next hop: {value!r}")
        return NextHop(_host(host, value), port, mx=False)
    host, sep, port_text = text.partition(":")
    if ":" in port_text:
        raise ValueError(f"IPv6 address must be in brackets, as [ipv6:addr]: {value!r}")
    port = _port(port_text, value) if sep else default_port
    host = _host(host, value)
    # An address has no MX records: connect to it as if it were bracketed.
    return NextHop(host, port, mx=_ip(host) is None)


def _host(host: str, value: str) -> str:
    if not host:
        raise ValueError(f"missing host in next hop: {value!r}")
    address = _ip(host)
    if address is not None:
        return str(address)
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise ValueError(f"bad host name in next hop: {value!r}")
    return name


def _port(text: str, value: str) -> int:
    if not text:
        raise ValueError(f"missing port after ':' in next hop: {value!r}")
    if text.isdigit():
        port = int(text)
        if not 0 < port < 65536:
            raise ValueError(f"port out of range in next hop: {value!r}")
        return port
    service = text.lower()
    if service in _SERVICES:
        return _SERVICES[service]
    try:
        return socket.getservbyname(service, "tcp")
    except OSError:
        raise ValueError(f"unknown service {text!r} in next hop: {value!r}")


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
