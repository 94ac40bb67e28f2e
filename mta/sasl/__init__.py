"""SMTP AUTH backends (RFC 4954): who the client is, and whether it proved it.

Job: the seam between the SMTP server and a SASL implementation.  Input: a
mechanism name, the client's base64 responses, the connection's facts
(:class:`ClientInfo`).  Output: steps — a challenge to send with 334, success
with the authenticated user name, a failure (535) or a temporary failure
(454).  Base64 is passed through untouched: the backend decodes.

Backends: :mod:`mta.sasl.dovecot` (the Dovecot authentication protocol over
``smtpd_sasl_path``, ``smtpd_sasl_type = dovecot``) and :mod:`mta.sasl.table`
(hashes in ``smtpd_sasl_password_maps``, ``smtpd_sasl_type = table``).
Mechanisms are filtered by ``smtpd_sasl_security_options`` (without TLS) or
``smtpd_sasl_tls_security_options`` (with TLS), as in Postfix.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ClientInfo:
    """What the backend may want to know about the connection (Dovecot logs
    and uses it: rip/lip, ``secured``)."""

    service: str  # smtpd_sasl_service
    client_addr: str
    client_port: int = 0
    local_addr: str = ""
    local_port: int = 0
    tls: bool = False


@dataclass(frozen=True)
class Challenge:
    """Send ``334 <data>``; ``data`` is base64 (may be empty)."""

    data: str


@dataclass(frozen=True)
class Success:
    username: str


@dataclass(frozen=True)
class Failure:
    """Wrong credentials or a refused exchange: 535 5.7.8."""

    reason: str = ""


@dataclass(frozen=True)
class TempFailure:
    """The backend could not decide (down, timed out): 454 4.7.0."""

    reason: str = ""


Step = Challenge | Success | Failure | TempFailure


class Exchange(Protocol):
    """One AUTH command's conversation."""

    async def step(self, response: str | None) -> Step:
        """Feed the initial response (None when the client sent none; "" for
        "=") and then each client line; returns what to answer."""

    def cancel(self) -> None:
        """The client cancelled ("*") or left: forget the exchange."""


class Backend(Protocol):
    async def mechanisms(self, tls: bool) -> tuple[str, ...]:
        """The mechanisms to offer now, filtered by the security options;
        empty when the backend is unavailable."""

    def start(self, mechanism: str, client: ClientInfo) -> Exchange: ...


#: Security option -> the mechanism property it refuses (Postfix and Dovecot names).
_REFUSES = {
    "noanonymous": "anonymous",
    "noplaintext": "plaintext",
    "nodictionary": "dictionary",
    "noactive": "active",
}
#: Security option -> the mechanism property it requires.
_REQUIRES = {"mutual_auth": "mutual-auth", "forward_secrecy": "forward-secrecy"}


def acceptable(properties: Iterable[str], options: Iterable[str]) -> bool:
    """Whether a mechanism with these properties passes the security options."""
    props = set(properties)
    for option in options:
        if _REFUSES.get(option) in props:
            return False
        required = _REQUIRES.get(option)
        if required is not None and required not in props:
            return False
    return "private" not in props  # Dovecot: never announced


@dataclass(frozen=True)
class SecurityOptions:
    """smtpd_sasl_security_options and smtpd_sasl_tls_security_options."""

    plain: tuple[str, ...] = ("noanonymous",)
    tls: tuple[str, ...] = ("noanonymous",)

    def select(self, tls: bool) -> tuple[str, ...]:
        return self.tls if tls else self.plain
