"""Test doubles for the policy's I/O seam: DNS, policy servers, verification."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from twisted.internet import defer

from mta.policy.checks import SmtpdPolicy
from mta.policy.dns import DnsResult, RecordType
from mta.policy.policyclient import PolicyEndpoint, PolicyError
from mta.policy.restrictions import Compiler, Domains, Facts, PolicySettings
from mta.policy.verify import VerifyAnswer, VerifySettings
from mta.tables import LookupTable, open_table
from mta.tables.matchlist import DomainList, NetworkList


class FakeDns:
    """Answers from a dict: {(name, type): [records]}; names in ``retry``
    fail temporarily; ``pending`` makes every query wait until released."""

    def __init__(self, records: Mapping[tuple[str, str], list[str]] | None = None) -> None:
        self.records = {(n.lower(), t): list(v) for (n, t), v in (records or {}).items()}
        self.retry: set[str] = set()
        self.queries: list[tuple[str, str]] = []
        self.pending: list[defer.Deferred[None]] | None = None

    async def query(self, name: str, rtype: RecordType) -> DnsResult:
        self.queries.append((name.lower(), rtype))
        if self.pending is not None:
            d: defer.Deferred[None] = defer.Deferred()
            self.pending.append(d)
            await d
        if name.lower() in self.retry:
            return DnsResult("retry", reason="timeout")
        found = self.records.get((name.lower(), rtype))
        if found:
            return DnsResult("ok", tuple(found), 60)
        return DnsResult("notfound")


class FakeServices:
    """A ``Services`` with fake DNS, a scripted policy server and verifier."""

    def __init__(self, dns: FakeDns | None = None) -> None:
        self.fake_dns = dns or FakeDns()
        self.policy: Callable[[PolicyEndpoint, Mapping[str, str]], str] = lambda e, a: "DUNNO"
        self.policy_requests: list[dict[str, str]] = []
        self.verify_answers: dict[str, VerifyAnswer] = {}
        self.slept: list[float] = []

    def dns(self, nameservers: tuple[str, ...]) -> FakeDns:
        return self.fake_dns

    async def policy_request(self, endpoint: PolicyEndpoint, attributes: Mapping[str, str]) -> str:
        self.policy_requests.append(dict(attributes))
        return self.policy(endpoint, attributes)

    async def verify(self, settings: VerifySettings, address: str) -> VerifyAnswer:
        return self.verify_answers.get(address, VerifyAnswer("ok", "250 ok"))

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def failing_policy(endpoint: PolicyEndpoint, attributes: Mapping[str, str]) -> str:
    raise PolicyError("Connection refused")


def domains(
    mydestination: tuple[str, ...] = ("mta.test",),
    relay_domains: tuple[str, ...] = ("relay.test",),
    mynetworks: tuple[str, ...] = ("127.0.0.0/8",),
) -> Domains:
    base = Path(".")
    return Domains(
        DomainList(list(mydestination), parent_matches_subdomains=False, base_dir=base),
        DomainList(list(relay_domains), parent_matches_subdomains=True, base_dir=base),
        NetworkList(list(mynetworks), base_dir=base),
    )


def make_policy(
    base_dir: Path | None = None,
    settings: PolicySettings | None = None,
    *,
    delay_reject: bool = True,
    reject_unlisted_recipient: bool = True,
    **lists: list[str] | str,
) -> SmtpdPolicy:
    """An SmtpdPolicy from restriction lists given by stage name (relay
    defaults to permit_mynetworks, reject_unauth_destination)."""
    st = settings or PolicySettings(domains=domains())
    base = base_dir or Path(".")
    cache: dict[str, LookupTable] = {}

    def open_spec(spec: str) -> LookupTable:
        if spec not in cache:
            cache[spec] = open_table(spec, base_dir=base)
        return cache[spec]

    compiler = Compiler(st, open_spec=open_spec)
    klass = {"relay": "recipient"}

    def rl(name: str, default: list[str] | str) -> Any:
        items = lists.get(name, default)
        return compiler.compile([items] if isinstance(items, str) else items, klass.get(name, name))  # type: ignore[arg-type]

    return SmtpdPolicy(
        client=rl("client", []),
        helo=rl("helo", []),
        sender=rl("sender", []),
        relay=rl("relay", ["permit_mynetworks", "reject_unauth_destination"]),
        recipient=rl("recipient", []),
        data=rl("data", []),
        end_of_data=rl("end_of_data", []),
        settings=st,
        compiler=compiler,
        delay_reject=delay_reject,
        reject_unlisted_recipient=reject_unlisted_recipient,
    )


def facts(
    client: str = "192.0.2.10",
    helo: str = "client.example.org",
    sender: str | None = "alice@example.org",
    recipient: str | None = "bob@relay.test",
    **extra: Any,
) -> Facts:
    f = Facts(client_addr=client, helo=helo, sender=sender, recipient=recipient, protocol="ESMTP")
    for key, value in extra.items():
        setattr(f, key, value)
    return f


def run_sync(coro: Any) -> Any:
    """Drive a coroutine that must not wait for I/O; its result."""
    d = defer.Deferred.fromCoroutine(coro)
    assert d.called, "the evaluation waited although no I/O was needed"
    out: list[Any] = []
    d.addBoth(out.append)
    if isinstance(out[0], Exception) or hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]
