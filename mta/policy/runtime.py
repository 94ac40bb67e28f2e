"""The long-lived I/O behind the restrictions: one per daemon, kept across reloads.

Input: the reactor; at each request, the settings the restriction was
compiled with (``dns_nameservers``, the policy service endpoint, the
address_verify_* settings).
Output: the :class:`~mta.policy.restrictions.Services` the restrictions use
— DNS with a shared cache, a connection pool per policy service, an
address verifier (and its cache file) per ``address_verify_map``.

Restriction lists are rebuilt on every reload; what they talk to must not
be, or a reload would drop open policy connections, forget the DNS cache
and lose verification probes in flight.  Objects are keyed by their
settings, so a reload that changes nothing reuses them all, and one that
changes an endpoint gets a fresh pool (the old one is closed at stop).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet import defer

from mta.policy.dns import CachingDns, Dns, TwistedDns
from mta.policy.policyclient import PolicyClient, PolicyEndpoint
from mta.policy.verify import AddressVerifier, VerifyAnswer, VerifySettings


class PolicyRuntime:
    """The I/O services of the access policy (implements ``Services``)."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self._dns: dict[tuple[str, ...], Dns] = {}
        self._policy: dict[PolicyEndpoint, PolicyClient] = {}
        self._verifiers: dict[str, AddressVerifier] = {}
        #: Where warnings of shared state (Redis down/back) go; the daemon sets it.
        self.log: Callable[[str], None] | None = None

    def dns(self, nameservers: tuple[str, ...]) -> Dns:
        found = self._dns.get(nameservers)
        if found is None:
            found = self._dns[nameservers] = CachingDns(
                TwistedDns(self.reactor, nameservers), self.reactor
            )
        return found

    async def policy_request(self, endpoint: PolicyEndpoint, attributes: Mapping[str, str]) -> str:
        client = self._policy.get(endpoint)
        if client is None:
            client = self._policy[endpoint] = PolicyClient(self.reactor, endpoint)
        return await client.request(attributes)

    def verifier(self, settings: VerifySettings) -> AddressVerifier:
        key = str(settings.map_path) if settings.map_path is not None else settings.map_spec
        verifier = self._verifiers.get(key)
        if verifier is None:
            verifier = AddressVerifier(self.reactor, settings, log=self.log)
            self._verifiers[key] = verifier
        elif verifier.settings != settings:
            verifier.reconfigure(settings)
        return verifier

    async def verify(self, settings: VerifySettings, address: str) -> VerifyAnswer:
        return await self.verifier(settings).query(address)

    async def sleep(self, seconds: float) -> None:
        d: defer.Deferred[None] = defer.Deferred()
        self.reactor.callLater(seconds, d.callback, None)
        await d

    async def close(self) -> None:
        """Daemon stop: close policy connections, write the verify caches."""
        for client in self._policy.values():
            await client.close()
        for verifier in self._verifiers.values():
            await verifier.close()
