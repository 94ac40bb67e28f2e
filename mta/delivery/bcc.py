"""Automatic BCC recipients: ``always_bcc``, ``sender_bcc_maps``,
``recipient_bcc_maps`` (Postfix cleanup(8); the appliance's ``cc_mta``).

Input: :class:`BccSettings` and a message's sender and recipients, when it
is queued.  Output: the addresses to add, each once and none already a
recipient.  Tables are searched in access(5) order (``user@domain``,
``domain``, ``user@``); the null sender has no sender BCC.

As Postfix 2.3 and later, the caller adds them as if with NOTIFY=NEVER
(RFC 3461): the sender hears nothing about copies it did not ask for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mta.tables import LookupTable
from mta.tables.search import lookup_address

NOTIFY = ("NEVER",)


@dataclass(frozen=True)
class BccSettings:
    always_bcc: str = ""
    sender_bcc_maps: Sequence[LookupTable] = ()
    recipient_bcc_maps: Sequence[LookupTable] = ()
    parent_matches_subdomains: bool = False

    @property
    def active(self) -> bool:
        return bool(self.always_bcc or self.sender_bcc_maps or self.recipient_bcc_maps)


def _find(tables: Sequence[LookupTable], address: str, parent: bool) -> str | None:
    for table in tables:
        value = lookup_address(table, address, parent_matches_subdomains=parent)
        if value is not None:
            return value.strip()
    return None


def extra_recipients(settings: BccSettings, sender: str, recipients: Iterable[str]) -> list[str]:
    """The BCC addresses for a message from ``sender`` to ``recipients``."""
    if not settings.active:
        return []
    have = list(recipients)
    seen = {r.lower() for r in have}
    out: list[str] = []

    def add(address: str | None) -> None:
        if address and address.lower() not in seen:
            seen.add(address.lower())
            out.append(address)

    parent = settings.parent_matches_subdomains
    if sender:
        add(_find(settings.sender_bcc_maps, sender, parent))
    for rcpt in have:
        add(_find(settings.recipient_bcc_maps, rcpt, parent))
    add(settings.always_bcc.strip())
    return out
