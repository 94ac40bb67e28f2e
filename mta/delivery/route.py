"""Routing: which transport and next hop a recipient goes to.

Input: a recipient address and the routing settings (address classes,
``relayhost``, the ``*_transport`` parameters, ``transport_maps``).
Output: a :class:`Route` — the transport (a master.cf service name), the
delivery agent that runs it, the next hop, and for SMTP/LMTP the host,
port and whether MX lookup applies (Postfix: ``[host]`` suppresses it).
Recipients with equal routes are delivered together.

As Postfix's trivial-rewrite (ADDRESS_CLASS_README): a domain in
``mydestination`` uses ``local_transport``, one in
``virtual_mailbox_domains`` uses ``virtual_transport``, one in
``relay_domains`` ``relay_transport``, any other ``default_transport``.
For the last two the next hop is ``relayhost`` when set, else the
recipient domain; a next hop in the transport value (``relay:[internal]``)
wins over both, which is how a gateway sends relay_domains mail to one
host and the rest to another.  ``transport_maps`` is asked first; an empty
transport or next hop in its answer keeps what the address class gave.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mta.address import domain_of
from mta.delivery.nexthop import parse_nexthop
from mta.delivery.transport import TransportMap, Transports, split_transport
from mta.tables.matchlist import DomainList


@dataclass(frozen=True)
class Route:
    """``transport``: the master.cf service name (smtp, relay, lmtp, ...);
    ``host``/``port``/``use_mx``: where SMTP/LMTP connects (a socket path
    for ``unix:`` LMTP); ``command``: the delivery agent (smtp, lmtp,
    error, discard, virtual, local; "" when the transport is unknown);
    ``nexthop``: the next hop as written (the text of ``error:``)."""

    transport: str
    host: str
    port: int
    use_mx: bool
    command: str = "smtp"
    nexthop: str = ""

    @property
    def key(self) -> str:
        """The destination name that concurrency limits count against."""
        if self.command not in ("smtp", "lmtp"):
            return f"{self.transport}:{self.nexthop}"
        if self.unix:
            return f"{self.transport}:{self.nexthop}"
        host = self.host if self.use_mx else f"[{self.host}]"
        return f"{self.transport}:{host}:{self.port}"

    @property
    def unix(self) -> bool:
        """An LMTP next hop on a UNIX-domain socket (``unix:/path``)."""
        return self.nexthop.lower().startswith("unix:")


def _never() -> DomainList:
    from pathlib import Path

    return DomainList((), parent_matches_subdomains=False, base_dir=Path("."))


@dataclass(frozen=True)
class Router:
    relayhost: str = ""
    smtp_port: int = 25
    lmtp_port: int = 24
    myhostname: str = "localhost"
    mydestination: DomainList = field(default_factory=_never, compare=False)
    virtual_mailbox_domains: DomainList = field(default_factory=_never, compare=False)
    relay_domains: DomainList = field(default_factory=_never, compare=False)
    local_transport: str = "local:$myhostname"
    virtual_transport: str = "virtual"
    relay_transport: str = "relay"
    default_transport: str = "smtp"
    transport_maps: TransportMap = field(default_factory=TransportMap, compare=False)
    transports: Transports = field(default_factory=Transports, compare=False)

    def route(self, address: str) -> Route:
        domain = domain_of(address).lower().rstrip(".") if "@" in address else ""
        if not domain or self.mydestination.matches(domain):
            transport, nexthop = split_transport(self.local_transport)
            nexthop = nexthop or self.myhostname
        elif self.virtual_mailbox_domains.matches(domain):
            transport, nexthop = split_transport(self.virtual_transport)
            nexthop = nexthop or domain
        else:
            relay = self.relay_domains.matches(domain)
            value = self.relay_transport if relay else self.default_transport
            transport, nexthop = split_transport(value)
            nexthop = nexthop or self.relayhost or domain
        found = self.transport_maps.find(address)
        if found is not None:
            mapped_transport, mapped_nexthop = split_transport(found)
            transport = mapped_transport or transport
            nexthop = mapped_nexthop or nexthop
        return self._make(transport, nexthop)

    def via(self, value: str) -> Route:
        """The route of a content filter, ``transport:destination`` (an
        access table or header_checks FILTER): every recipient goes there."""
        transport, nexthop = split_transport(value)
        return self._make(transport or self.default_transport, nexthop)

    def _make(self, transport: str, nexthop: str) -> Route:
        command = self.transports.command(transport) or ""
        if command not in ("smtp", "lmtp"):
            return Route(transport, "", 0, False, command, nexthop)
        if command == "lmtp" and nexthop.lower().startswith("unix:"):
            return Route(transport, nexthop[5:], 0, False, command, nexthop)
        try:
            hop = parse_nexthop(nexthop, self.lmtp_port if command == "lmtp" else self.smtp_port)
        except ValueError as e:
            return Route(transport, "", 0, False, "invalid", str(e))
        # LMTP never looks up MX records (Postfix lmtp(8)).
        use_mx = hop.mx and command == "smtp"
        return Route(transport, hop.host, hop.port, use_mx, command, nexthop)
