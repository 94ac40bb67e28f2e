"""Transports: transport(5) lookups and the delivery agent behind a transport name.

Inputs: ``transport_maps`` tables, the master.cf services, and values
written as Postfix writes them (``smtp:[relay.example]:587``,
``error:5.1.1 no such user``, ``:[host]``, ``lmtp:unix:/run/lmtp``).
Outputs: :func:`split_transport` (transport, next hop),
:class:`TransportMap` (the transport(5) search order: ``user@domain``,
``domain``, parent domains as ``.domain`` — or ``domain`` when
``transport_maps`` is in ``parent_domain_matches_subdomains`` — then
``*``), and :class:`Transports` (transport name → delivery agent: the
command of the master.cf ``unix`` service of that name, else Postfix's
stock services: smtp, relay → smtp; lmtp; error; retry; discard; virtual;
local).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from mta.config import MasterService
from mta.tables import LookupTable, accepts_partial_keys
from mta.tables.search import domain_keys

#: The delivery agents mta has (Postfix daemon names).
AGENTS = frozenset({"smtp", "lmtp", "error", "discard", "virtual", "local"})

#: Postfix's stock master.cf delivery services: name → command.
STOCK = MappingProxyType(
    {
        "smtp": "smtp",
        "relay": "smtp",
        "lmtp": "lmtp",
        "error": "error",
        "retry": "error",
        "discard": "discard",
        "virtual": "virtual",
        "local": "local",
    }
)


def split_transport(value: str) -> tuple[str, str]:
    """``transport:nexthop`` → (transport, nexthop); either may be empty."""
    transport, _, nexthop = value.strip().partition(":")
    return transport.strip(), nexthop.strip()


@dataclass(frozen=True)
class Transports:
    """Transport name → delivery agent command, and each service's master.cf
    entry (for its ``-o`` overrides)."""

    commands: Mapping[str, str] = field(default_factory=lambda: STOCK)
    services: Mapping[str, MasterService] = field(
        default_factory=lambda: MappingProxyType({}), hash=False, compare=False
    )

    @classmethod
    def from_master(cls, services: Iterable[MasterService]) -> Transports:
        commands = dict(STOCK)
        entries: dict[str, MasterService] = {}
        for svc in services:
            if svc.type == "unix" and svc.command in AGENTS:
                commands[svc.name] = svc.command
                entries[svc.name] = svc
        return cls(MappingProxyType(commands), MappingProxyType(entries))

    def command(self, transport: str) -> str | None:
        """The delivery agent of ``transport``; None when there is none."""
        return self.commands.get(transport)


@dataclass(frozen=True)
class TransportMap:
    """``transport_maps`` with the transport(5) search order."""

    tables: Sequence[LookupTable] = ()
    parent_matches_subdomains: bool = False

    def find(self, address: str) -> str | None:
        """The first result for ``address`` (a recipient), or None."""
        if not self.tables:
            return None
        _local, at, domain = address.rpartition("@")
        domain = domain.lower().rstrip(".") if at else ""
        for table in self.tables:
            partial = accepts_partial_keys(table)
            keys = [address]
            if domain:
                keys.extend(domain_keys(domain, self.parent_matches_subdomains, partial=partial))
            if partial:
                keys.append("*")
            for key in keys:
                value = table.lookup(key)
                if value is not None:
                    return value
        return None
