"""Restriction lists: Postfix's smtpd_*_restrictions, evaluated per stage.

Input: a list of restriction names (as main.cf writes them, with their
arguments, e.g. ``check_client_access cidr:/etc/mta/clients``) and the
facts of the session so far (:class:`Facts`).  Output: a :class:`Verdict` —
permit, reject or defer with the SMTP reply, or no decision (DUNNO) — and
the name of the rule that made it, for the log.

Semantics follow Postfix smtpd_check.c: restrictions are tried in order and
the first one that decides wins; a list that runs out decides nothing
(which the caller treats as permit).  Lists are compiled once per
configuration (:func:`compile_restrictions`), so a bad name or a bad table is
found by ``mta check``, not by the first client that trips over it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mta.address import domain_of, is_fqdn
from mta.reply import Reply
from mta.tables import LookupTable, open_table
from mta.tables.matchlist import DomainList, NetworkList
from mta.tables.search import lookup_address, lookup_client, lookup_domain

Stage = Literal["client", "helo", "sender", "recipient", "data", "end_of_data"]
Action = Literal["permit", "reject", "defer", "dunno"]


@dataclass(frozen=True)
class Verdict:
    action: Action
    reply: Reply | None = None
    rule: str = ""

    @property
    def decided(self) -> bool:
        return self.action != "dunno"


DUNNO = Verdict("dunno")


@dataclass
class Facts:
    """What the session knows when a restriction runs."""

    client_addr: str
    client_name: str = "unknown"
    helo: str = ""
    sender: str | None = None  # None: no MAIL yet; "" is <>
    recipient: str | None = None
    sasl_username: str = ""

    @property
    def client(self) -> str:
        return f"{self.client_name}[{self.client_addr}]"


@dataclass(frozen=True)
class Domains:
    """The address classes of Postfix ADDRESS_CLASS_README that relay control needs."""

    mydestination: DomainList
    relay_domains: DomainList
    mynetworks: NetworkList
    interface_addresses: frozenset[str] = frozenset()

    def is_local_or_relay(self, domain: str) -> bool:
        domain = domain.lower().rstrip(".")
        if domain.startswith("[") and domain.endswith("]"):
            literal = domain[1:-1].removeprefix("ipv6:")
            return literal in self.interface_addresses
        return self.mydestination.matches(domain) or self.relay_domains.matches(domain)


# Postfix's default reply codes (access_map_reject_code, relay_domains_reject_code, ...).
REJECT_CODE = 554
DEFER_CODE = 450

_STAGE_WORDS = {
    "client": "Client host rejected",
    "helo": "Helo command rejected",
    "sender": "Sender address rejected",
    "recipient": "Recipient address rejected",
    "data": "Data command rejected",
    "end_of_data": "End-of-data rejected",
}


def _subject(stage: Stage, facts: Facts) -> str:
    """The thing a reply is about, as Postfix writes it."""
    if stage == "client":
        return f"<{facts.client}>"
    if stage == "helo":
        return f"<{facts.helo}>"
    if stage == "sender":
        return f"<{facts.sender or ''}>"
    if stage == "recipient":
        return f"<{facts.recipient or ''}>"
    return "<DATA>"


def _reply(code: int, status: str, stage: Stage, facts: Facts, text: str) -> Reply:
    return Reply.make(code, status, f"{_subject(stage, facts)}: {_STAGE_WORDS[stage]}: {text}")


Check = Callable[[Stage, Facts], Verdict]


@dataclass(frozen=True)
class RestrictionList:
    names: tuple[str, ...]
    checks: tuple[Check, ...] = field(repr=False)

    def evaluate(self, stage: Stage, facts: Facts) -> Verdict:
        for check in self.checks:
            verdict = check(stage, facts)
            if verdict.decided:
                return verdict
        return DUNNO


class RestrictionError(ValueError):
    """A restriction list that cannot be compiled (unknown name, bad table)."""


def _access_result(
    value: str,
    stage: Stage,
    facts: Facts,
    rule: str,
    nested: Callable[[str, Stage, Facts], Verdict],
) -> Verdict:
    """An access(5) table result: OK, REJECT text, DEFER text, DUNNO, NNN text,
    or a restriction name (evaluated in place)."""
    word, _, text = value.strip().partition(" ")
    upper = word.upper()
    text = text.strip()
    if upper == "OK" or (word.isdigit() and not text and word[0] == "2") or upper == "PERMIT":
        return Verdict("permit", None, rule)
    if upper == "DUNNO":
        return DUNNO
    if upper == "REJECT":
        return Verdict(
            "reject", _reply(REJECT_CODE, "5.7.1", stage, facts, text or "Access denied"), rule
        )
    if upper in ("DEFER", "DEFER_IF_PERMIT", "DEFER_IF_REJECT"):
        return Verdict(
            "defer", _reply(DEFER_CODE, "4.7.1", stage, facts, text or "Access denied"), rule
        )
    if len(word) == 3 and word.isdigit() and word[0] in "45":
        code = int(word)
        status = f"{word[0]}.7.1"
        head, _, rest = text.partition(" ")
        if head.count(".") == 2 and head[0] == word[0] and head.replace(".", "").isdigit():
            status, text = head, rest
        reply = _reply(code, status, stage, facts, text or "Access denied")
        return Verdict("defer" if word[0] == "4" else "reject", reply, rule)
    return nested(value.strip(), stage, facts)


def compile_restrictions(
    items: Sequence[str],
    *,
    domains: Domains,
    base_dir: Path,
    tables: dict[str, LookupTable] | None = None,
    parent_matches_subdomains: bool = True,
) -> RestrictionList:
    """Compile a restriction list; raises RestrictionError with the reason."""
    tables = tables if tables is not None else {}

    def table(spec: str) -> LookupTable:
        t = tables.get(spec)
        if t is None:
            try:
                t = tables[spec] = open_table(spec, base_dir=base_dir)
            except Exception as e:
                raise RestrictionError(f"{spec}: {e}") from e
        return t

    def one(name: str, arg: str | None) -> Check:
        rule = f"{name} {arg}" if arg else name
        if name == "permit":
            return lambda stage, f: Verdict("permit", None, rule)
        if name == "reject":
            return lambda stage, f: Verdict(
                "reject", _reply(REJECT_CODE, "5.7.1", stage, f, "Access denied"), rule
            )
        if name == "defer":
            return lambda stage, f: Verdict(
                "defer", _reply(DEFER_CODE, "4.7.1", stage, f, "Access denied"), rule
            )
        if name == "permit_mynetworks":
            return lambda stage, f: (
                Verdict("permit", None, rule)
                if domains.mynetworks.matches(f.client_addr)
                else DUNNO
            )
        if name == "permit_sasl_authenticated":
            return lambda stage, f: Verdict("permit", None, rule) if f.sasl_username else DUNNO
        if name in ("reject_unauth_destination", "defer_unauth_destination"):
            code, status = (REJECT_CODE, "5.7.1") if name[0] == "r" else (DEFER_CODE, "4.7.1")

            def unauth(stage: Stage, f: Facts) -> Verdict:
                if f.recipient is None:
                    return DUNNO
                local = f.recipient.rpartition("@")[0]
                domain = domain_of(f.recipient)
                # Postfix: sender-specified routing (%, !, @ in the local part)
                # is never authorized, so it cannot be used to relay.
                routed = any(c in local for c in "%!@")
                if domain and not routed and domains.is_local_or_relay(domain):
                    return DUNNO
                return Verdict(
                    "reject" if code >= 500 else "defer",
                    Reply.make(code, status, f"<{f.recipient}>: Relay access denied"),
                    rule,
                )

            return unauth
        if name == "reject_non_fqdn_helo_hostname":
            return lambda stage, f: (
                Verdict(
                    "reject",
                    Reply.make(
                        504,
                        "5.5.2",
                        f"<{f.helo}>: Helo command rejected: need fully-qualified hostname",
                    ),
                    rule,
                )
                if f.helo and not _helo_ok(f.helo)
                else DUNNO
            )
        if name in ("reject_non_fqdn_sender", "reject_non_fqdn_recipient"):
            which = "sender" if name.endswith("sender") else "recipient"

            def non_fqdn(stage: Stage, f: Facts) -> Verdict:
                addr = f.sender if which == "sender" else f.recipient
                if not addr:
                    return DUNNO
                dom = domain_of(addr)
                if dom and (is_fqdn(dom) or dom.startswith("[")):
                    return DUNNO
                word = "Sender" if which == "sender" else "Recipient"
                return Verdict(
                    "reject",
                    Reply.make(
                        504,
                        "5.5.2",
                        f"<{addr}>: {word} address rejected: need fully-qualified address",
                    ),
                    rule,
                )

            return non_fqdn
        if name.startswith("check_") and name.endswith("_access"):
            if not arg:
                raise RestrictionError(f"{name} needs a table argument")
            what = name[len("check_") : -len("_access")]
            if what not in ("client", "helo", "sender", "recipient"):
                raise RestrictionError(f"unknown restriction: {name}")
            t = table(arg)

            def nested(value: str, stage: Stage, f: Facts) -> Verdict:
                # An access result that names restrictions runs them in place.
                try:
                    sub = compile_restrictions(
                        [value],
                        domains=domains,
                        base_dir=base_dir,
                        tables=tables,
                        parent_matches_subdomains=parent_matches_subdomains,
                    )
                except RestrictionError:
                    # Postfix logs a warning and answers 451 for a bad table value.
                    return Verdict(
                        "defer",
                        Reply(451, "3.0", "Server configuration error"),
                        f"{rule}: bad access result {value!r}",
                    )
                return sub.evaluate(stage, f)

            def access(stage: Stage, f: Facts) -> Verdict:
                if what == "client":
                    value = lookup_client(t.lookup, f.client_name, f.client_addr)
                    sub_stage: Stage = "client"
                elif what == "helo":
                    if not f.helo:
                        return DUNNO
                    value = lookup_domain(t.lookup, f.helo, parent_matches_subdomains)
                    sub_stage = "helo"
                else:
                    addr = f.sender if what == "sender" else f.recipient
                    if addr is None:
                        return DUNNO
                    value = lookup_address(t.lookup, addr)
                    sub_stage = "sender" if what == "sender" else "recipient"
                if value is None:
                    return DUNNO
                return _access_result(value, sub_stage, f, rule, nested)

            return access
        raise RestrictionError(f"unknown restriction: {name}")

    needs_arg = {
        "check_client_access",
        "check_helo_access",
        "check_sender_access",
        "check_recipient_access",
    }
    checks: list[Check] = []
    names: list[str] = []
    i = 0
    flat = [w for item in items for w in item.replace(",", " ").split()]
    while i < len(flat):
        name = flat[i]
        arg = None
        if name in needs_arg:
            if i + 1 >= len(flat):
                raise RestrictionError(f"{name} needs a table argument")
            arg = flat[i + 1]
            i += 1
        i += 1
        checks.append(one(name, arg))
        names.append(f"{name} {arg}" if arg else name)
    return RestrictionList(tuple(names), tuple(checks))


def _helo_ok(helo: str) -> bool:
    if helo.startswith("[") and helo.endswith("]"):
        try:
            ipaddress.ip_address(helo[1:-1].removeprefix("IPv6:").removeprefix("ipv6:"))
            return True
        except ValueError:
            return False
    return is_fqdn(helo)
