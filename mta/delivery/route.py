"""Routing: which next hop a recipient goes to.

Input: a recipient address and the routing settings (``relayhost``).
Output: a :class:`Route` — the transport and next hop, with whether MX
lookup applies (Postfix: ``[host]`` suppresses it).  Recipients with equal
routes are delivered together.  Transport maps and the relay_domains split
grow here.
"""

from __future__ import annotations

from dataclasses import dataclass

from mta.address import domain_of
from mta.delivery.nexthop import parse_nexthop


@dataclass(frozen=True)
class Route:
    transport: str  # "smtp" for now; "lmtp", "error", ... later
    host: str  # a host name, an address, or the recipient's domain
    port: int
    use_mx: bool

    @property
    def key(self) -> str:
        """The destination name that concurrency limits count against."""
        host = self.host if self.use_mx else f"[{self.host}]"
        return f"{self.transport}:{host}:{self.port}"


@dataclass(frozen=True)
class Router:
    relayhost: str = ""
    smtp_port: int = 25

    def route(self, address: str) -> Route:
        if self.relayhost:
            hop = parse_nexthop(self.relayhost, self.smtp_port)
            return Route("smtp", hop.host, hop.port, hop.mx)
        return Route("smtp", domain_of(address), self.smtp_port, True)
