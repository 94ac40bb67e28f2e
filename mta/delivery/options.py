"""The frozen settings of the delivery agents (one set per transport).

Input: nothing at import; :mod:`mta.settings` fills
:class:`DeliverySettings` from a Config (per master.cf transport service,
after its ``-o`` overrides).  Output: plain frozen data that
:class:`mta.delivery.agent.DeliveryAgent` runs with, swapped whole on reload.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mta.delivery.mx import LookupOptions
from mta.delivery.smtp import Timeouts
from mta.delivery.tls import TrustStore
from mta.delivery.virtual import VirtualMailboxes
from mta.tables import LookupTable
from mta.tables.matchlist import DomainList


def _no_virtual() -> VirtualMailboxes:
    return VirtualMailboxes(DomainList((), parent_matches_subdomains=False, base_dir=Path(".")))


@dataclass(frozen=True)
class DeliverySettings:
    myhostname: str = "localhost"
    helo_name: str = "localhost"
    timeouts: Timeouts = field(default_factory=Timeouts)
    lookup: LookupOptions = field(default_factory=LookupOptions)  # self_addresses: loop check
    nameservers: tuple[str, ...] = ()
    dnssec: bool = False  # smtp_dns_support_level = dnssec
    dns_disabled: bool = False  # smtp_dns_support_level = disabled: no MX lookups
    # TLS
    tls_level: str = "none"
    tls_policy_maps: Sequence[LookupTable] = ()
    tls_protocols: str = ">=TLSv1"
    tls_mandatory_protocols: str = ">=TLSv1"
    tls_verify_match: tuple[str, ...] = ("hostname",)
    tls_secure_match: tuple[str, ...] = ("nexthop", "dot-nexthop")
    trust: TrustStore = field(default_factory=TrustStore)
    tls_loglevel: int = 1
    mta_sts: bool = True
    # SASL
    sasl_enabled: bool = False
    sasl_password_maps: Sequence[LookupTable] = ()
    sasl_mechanisms: tuple[str, ...] = ()
    sasl_plaintext_in_clear: bool = False
    sasl_plaintext_over_tls: bool = True
    sasl_soft_bounce: bool = True
    # hosts and sessions
    mx_address_limit: int = 5
    mx_session_limit: int = 2
    skip_5xx_greeting: bool = True
    cache_on_demand: bool = True
    cache_time_limit: float = 2.0
    reuse_time_limit: float = 300.0
    reuse_count_limit: int = 0
    # virtual(8)
    virtual: VirtualMailboxes = field(default_factory=_no_virtual)
