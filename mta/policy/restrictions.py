"""Restriction lists: Postfix's smtpd_*_restrictions, compiled once, evaluated per request.

Input: a restriction list as main.cf writes it (``permit_mynetworks,
check_client_access cidr:/etc/mta/clients, reject_rbl_client zen.example``),
the list's class (client, helo, sender, recipient, data, end_of_data) and
the configuration it needs (:class:`PolicySettings`).  At run time: the
session's :class:`Facts` and the long-lived I/O :class:`Services` (DNS,
policy servers, address verification).
Output: :class:`RestrictionList`; running one (:func:`run_list`, through
the per-command drivers in :mod:`mta.policy.checks`) gives a status — permit,
reject (with the reply) or no decision — and log notes, each naming the rule
that made it.

Semantics are those of Postfix smtpd_check.c: restrictions are tried in
order and the first decisive one wins; a list that runs out decides
nothing.  ``warn_if_reject`` turns the next restriction's reject into a
logged ``reject_warning``; ``defer_if_permit``/``defer_if_reject`` (and DNS
trouble, which raises them) change a later permit/reject into a 450.
Access-table results (access(5)) are OK, REJECT, DEFER, 4xx/5xx text,
DUNNO, DEFER_IF_PERMIT, DEFER_IF_REJECT, WARN, INFO, PREPEND, HOLD, DISCARD,
REDIRECT, FILTER, BCC, and restriction names, which run in place.  The
actions that act on the message (PREPEND, HOLD, DISCARD, REDIRECT, FILTER,
BCC) are recorded in :class:`Effects` for the SMTP server to apply.

Evaluation is a coroutine that awaits only when a check does I/O, so a list
of plain checks finishes synchronously when driven with
``Deferred.fromCoroutine`` (no reactor round trip).  Lists are compiled when
the configuration is loaded: an unknown name, a missing argument or a bad
table is found by ``mta check``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from mta.address import domain_of
from mta.config.syntax import split_list
from mta.policy import dnsxl
from mta.policy.dns import Dns
from mta.policy.policyclient import PolicyDefaults, PolicyEndpoint, PolicyError, parse_policy_spec
from mta.policy.verify import VerifyAnswer, VerifySettings
from mta.reply import Reply
from mta.tables import LookupTable, TableError, open_table
from mta.tables.matchlist import DomainList, NetworkList
from mta.tables.search import address_keys, client_keys, domain_keys, strip_extension

# -- results -------------------------------------------------------------------

DUNNO = 0  # SMTPD_CHECK_DUNNO: no decision
OK = 1  # SMTPD_CHECK_OK: permit (ends this list only)
REJECT = 2  # SMTPD_CHECK_REJECT: reject or defer, see Evaluation.reply

Status = int
Klass = Literal["client", "helo", "sender", "recipient", "data", "end_of_data"]
# Kept for callers that name lists by stage.
Stage = Klass

# The reply classes of Postfix (SMTPD_NAME_*).
CLIENT = "Client host"
REV_CLIENT = "Unverified Client host"
HELO = "Helo command"
SENDER = "Sender address"
RECIPIENT = "Recipient address"
DATA = "Data command"
EOD = "End-of-data"

_CLASS_NAMES: Mapping[Klass, str] = {
    "client": CLIENT,
    "helo": HELO,
    "sender": SENDER,
    "recipient": RECIPIENT,
    "data": DATA,
    "end_of_data": EOD,
}
_DEFAULT_ACL: Mapping[Klass, str | None] = {
    "client": "check_client_access",
    "helo": "check_helo_access",
    "sender": "check_sender_access",
    "recipient": "check_recipient_access",
    "data": None,
    "end_of_data": None,
}

# smtpd_dsn_fix: the address DSNs that fit a sender or recipient reject.
_SENDER_DSN = {"1": "4.1.7", "2": "4.1.8", "3": "4.1.7", "4": "4.1.7", "5": "4.1.0"}
_SENDER_DSN.update({"6": "4.1.7", "7": "4.1.7", "8": "4.1.8"})
_RCPT_DSN = {"1": "4.1.1", "2": "4.1.2", "3": "4.1.3", "4": "4.1.4", "5": "4.1.5"}
_RCPT_DSN.update({"6": "4.1.6", "7": "4.1.3", "8": "4.1.2"})

_DSN_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:[ \t]+|$)")

# Error classes that warn_if_reject may not turn into warnings.
_HARD_ERRORS = frozenset({"software", "resource", "data"})

# Local parts that reject_unlisted_recipient never refuses in local domains.
_LOCAL_ROLES = ("postmaster", "mailer-daemon")


@dataclass(frozen=True)
class Verdict:
    """The outcome of a decision point: ``permit`` (also an explicit OK),
    ``dunno`` (no list decided: the caller permits), ``reject`` (5xx) or
    ``defer`` (4xx), with the reply and the rule that made it."""

    action: Literal["permit", "reject", "defer", "dunno"]
    reply: Reply | None = None
    rule: str = ""

    @property
    def decided(self) -> bool:
        return self.action != "dunno"

    @property
    def refused(self) -> bool:
        return self.action in ("reject", "defer")


NO_DECISION = Verdict("dunno")


@dataclass(frozen=True)
class Note:
    """One mail log event of an evaluation: ``whatsup`` is Postfix's word
    (reject, reject_warning, warn, info, hold, discard, redirect, filter,
    bcc, prepend, warning) and ``text`` what follows it."""

    whatsup: str
    text: str
    rule: str = ""


@dataclass(frozen=True)
class Deferral:
    """A pending defer_if_permit or defer_if_reject: the reply it will give."""

    code: int
    dsn: str
    text: str
    rule: str
    error_class: str = "policy"


@dataclass
class Effects:
    """Access actions that apply to the message of the transaction (Postfix
    hands them to cleanup): the SMTP server applies them at end of data."""

    prepend: list[str] = field(default_factory=list)
    hold: str | None = None  # the reason text
    discard: str | None = None
    redirect: str | None = None
    filter: str | None = None
    bcc: list[str] = field(default_factory=list)

    @property
    def any(self) -> bool:
        return bool(
            self.prepend or self.hold or self.discard or self.redirect or self.filter or self.bcc
        )


@dataclass
class Facts:
    """What the session knows when a restriction runs; the SMTP server
    updates it as the session goes.  ``None`` for sender/recipient means
    "no such command yet"; ``""`` is the null sender."""

    client_addr: str
    client_name: str = "unknown"
    client_port: str = ""
    reverse_client_name: str = ""
    server_addr: str = ""
    server_port: str = ""
    helo: str = ""
    sender: str | None = None
    recipient: str | None = None
    rcpt_count: int = 0  # recipients accepted so far in this transaction
    sasl_username: str = ""
    sasl_method: str = ""
    sasl_sender: str = ""
    protocol: str = "SMTP"  # SMTP, ESMTP, ESMTPS, ESMTPSA, ...
    encryption_protocol: str = ""
    encryption_cipher: str = ""
    encryption_keysize: int = 0
    queue_id: str = ""
    size: int = 0  # SIZE= of MAIL FROM, or the message size at end of data
    instance: str = ""  # changes with each transaction (policy servers key on it)
    illegal_pipelining: bool = False  # the client talked ahead when it must not
    smtputf8: bool = False
    effects: Effects = field(default_factory=Effects)
    # defer_if_permit raised by the client/helo/sender stages (Postfix keeps
    # them across the stages of a session).
    dip_client: Deferral | None = None
    dip_helo: Deferral | None = None
    dip_sender: Deferral | None = None

    @property
    def client(self) -> str:
        """``name[address]``, as Postfix logs and replies name the client."""
        return f"{self.client_name}[{self.client_addr}]"

    def new_transaction(self) -> None:
        """Forget the transaction (MAIL rejected, RSET, end of data)."""
        self.sender = None
        self.recipient = None
        self.rcpt_count = 0
        self.size = 0
        self.queue_id = ""
        self.effects = Effects()
        self.dip_sender = None


@dataclass(frozen=True)
class Domains:
    """The address classes of Postfix ADDRESS_CLASS_README that relay control needs."""

    mydestination: DomainList
    relay_domains: DomainList
    mynetworks: NetworkList
    interface_addresses: frozenset[str] = frozenset()
    virtual_mailbox_domains: DomainList | None = None

    def is_virtual(self, domain: str) -> bool:
        """A virtual_mailbox_domains domain: delivered here, so not a relay."""
        domain = domain.lower().rstrip(".")
        vmd = self.virtual_mailbox_domains
        return vmd is not None and not domain.startswith("[") and vmd.matches(domain)

    def is_local(self, domain: str) -> bool:
        domain = domain.lower().rstrip(".")
        if domain.startswith("[") and domain.endswith("]"):
            literal = domain[1:-1].removeprefix("ipv6:")
            return literal in self.interface_addresses
        return self.mydestination.matches(domain)

    def is_relay(self, domain: str) -> bool:
        domain = domain.lower().rstrip(".")
        return not domain.startswith("[") and self.relay_domains.matches(domain)

    def is_final(self, domain: str) -> bool:
        """Delivered here: mydestination or virtual_mailbox_domains."""
        return self.is_local(domain) or self.is_virtual(domain)

    def is_local_or_relay(self, domain: str) -> bool:
        """An authorized destination (Postfix permit_auth_destination)."""
        return self.is_final(domain) or self.is_relay(domain)


@dataclass(frozen=True)
class Codes:
    """Reply codes of the restrictions (Postfix parameter names, defaults)."""

    access_map_reject_code: int = 554
    access_map_defer_code: int = 450
    reject_code: int = 554
    defer_code: int = 450
    relay_domains_reject_code: int = 554
    invalid_hostname_reject_code: int = 501
    non_fqdn_reject_code: int = 504
    unknown_address_reject_code: int = 450
    unknown_hostname_reject_code: int = 450
    unknown_relay_recipient_reject_code: int = 550
    unknown_local_recipient_reject_code: int = 550
    maps_rbl_reject_code: int = 554
    multi_recipient_bounce_reject_code: int = 550
    plaintext_reject_code: int = 450
    unverified_recipient_reject_code: int = 450
    unverified_recipient_defer_code: int = 450
    unverified_sender_reject_code: int = 450
    unverified_sender_defer_code: int = 450


TempfailAction = Literal["defer_if_permit", "defer"]


@dataclass(frozen=True)
class PolicySettings:
    """Everything the restrictions read from main.cf (after -o overrides)."""

    domains: Domains
    codes: Codes = field(default_factory=Codes)
    parent_matches_subdomains: bool = True  # "smtpd_access_maps" in parent_domain_...
    recipient_delimiter: str = ""
    null_access_key: str = "<>"  # smtpd_null_access_lookup_key
    unknown_address_tempfail_action: TempfailAction = "defer_if_permit"
    unknown_helo_hostname_tempfail_action: TempfailAction = "defer_if_permit"
    unverified_recipient_tempfail_action: TempfailAction = "defer_if_permit"
    unverified_sender_tempfail_action: TempfailAction = "defer_if_permit"
    unverified_recipient_reject_reason: str = ""
    unverified_sender_reject_reason: str = ""
    default_rbl_reply: str = dnsxl.DEFAULT_RBL_REPLY
    rbl_reply_maps: tuple[LookupTable, ...] = ()
    relay_recipient_maps: tuple[LookupTable, ...] = ()
    local_recipient_maps: tuple[LookupTable, ...] = ()
    show_user_unknown_table_name: bool = True
    restriction_classes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    policy_defaults: PolicyDefaults = field(default_factory=PolicyDefaults)
    verify: VerifySettings = field(default_factory=VerifySettings)
    nameservers: tuple[str, ...] = ()  # dns_nameservers
    soft_bounce: bool = False


# -- the I/O seam --------------------------------------------------------------


class Services(Protocol):
    """The long-lived I/O a restriction may need; one per daemon
    (:class:`mta.policy.runtime.PolicyRuntime`), faked in tests."""

    def dns(self, nameservers: tuple[str, ...]) -> Dns: ...

    async def policy_request(
        self, endpoint: PolicyEndpoint, attributes: Mapping[str, str]
    ) -> str: ...

    async def verify(self, settings: VerifySettings, address: str) -> VerifyAnswer: ...

    async def sleep(self, seconds: float) -> None: ...


# -- evaluation state ------------------------------------------------------------


class Aborted(Exception):
    """A configuration or software error mid-evaluation (Postfix longjmp):
    the reply is already set in the Evaluation."""


class Evaluation:
    """The state of one decision (Postfix's per-check SMTPD_STATE fields):
    warn_if_reject and defer_if_* flags, the reply, the log notes."""

    def __init__(
        self,
        facts: Facts,
        services: Services | None,
        settings: PolicySettings,
        where: str,
        *,
        nested: Callable[[str, str | None], RestrictionList],
    ) -> None:
        self.facts = facts
        self.services = services
        self.settings = settings
        self.where = where  # CONNECT, HELO, EHLO, MAIL, RCPT, DATA, END-OF-MESSAGE
        self.recursion = 0
        self.warn_if_reject = 0
        self.defer_if_permit: Deferral | None = None
        self.defer_if_reject: Deferral | None = None
        self.notes: list[Note] = []
        self.status: Status = DUNNO  # the result of the last stage run
        self.reply: Reply | None = None
        self.rule = ""
        self.rules: list[str] = []  # the restriction being run, outermost first
        self._nested = nested

    # The rule that is running, for logs: "check_client_access cidr:x > reject".
    @property
    def current_rule(self) -> str:
        return " > ".join(self.rules)

    def services_or_fail(self) -> Services:
        if self.services is None:
            raise RuntimeError("restriction needs I/O services but none were given")
        return self.services

    def note(self, whatsup: str, text: str) -> None:
        self.notes.append(Note(whatsup, text, self.current_rule))

    def reject(self, code: int, dsn: str, text: str, *, error_class: str = "policy") -> Status:
        """smtpd_check_reject: format, validate, log and record a reject."""
        warn = bool(self.warn_if_reject) and error_class not in _HARD_ERRORS
        if not 400 <= code <= 599 or not _DSN_RE.match(dsn):
            self.note("warning", f"SMTP reply code configuration error: {code} {dsn} {text}")
            code, dsn, text = 450, "4.7.1", "Service unavailable"
        if not warn and self.defer_if_reject is not None and code >= 500:
            deferred = self.defer_if_reject
            self.warn_if_reject = 0
            self.defer_if_reject = None
            return self.reject(
                deferred.code, deferred.dsn, deferred.text, error_class=deferred.error_class
            )
        if self.settings.soft_bounce and code >= 500:
            code -= 100
        text = "".join(c if c.isprintable() else " " for c in text)[:500]
        reply = Reply.make(code, f"{code // 100}{dsn[1:]}", text)
        self.note("reject_warning" if warn else "reject", reply.one_line())
        if warn:
            return DUNNO
        self.reply = reply
        self.rule = self.current_rule
        return REJECT

    def defer_if(
        self, which: Literal["permit", "reject"], code: int, dsn: str, text: str
    ) -> Status:
        """Remember the first reason to change a later permit (reject) into
        a deferral."""
        deferral = Deferral(code, dsn, text, self.current_rule)
        if which == "permit" and self.defer_if_permit is None:
            self.defer_if_permit = deferral
        elif which == "reject" and self.defer_if_reject is None:
            self.defer_if_reject = deferral
        return DUNNO

    def defer_if_permit_or_reject(
        self, action: TempfailAction, code: int, dsn: str, text: str
    ) -> Status:
        """DEFER_IF_PERMIT2: a tempfail action of "defer_if_permit" waits
        for a permit, "defer" (or an active warn_if_reject) defers now."""
        if not self.warn_if_reject and action == "defer_if_permit":
            return self.defer_if("permit", code, dsn, text)
        return self.reject(code, dsn, text)

    def server_error(self, why: str) -> Aborted:
        """reject_server_error: log why, answer 451 4.3.5."""
        self.note("warning", why)
        self.reject(451, "4.3.5", "Server configuration error", error_class="software")
        return Aborted(why)

    def nested(self, value: str, def_acl: str | None) -> RestrictionList:
        return self._nested(value, def_acl)


@dataclass(frozen=True)
class ListContext:
    """Who a list speaks about: ``<reply_name>: reply_class rejected``, and
    the access check a bare ``type:name`` element stands for."""

    reply_name: str
    reply_class: str
    def_acl: str | None


CheckResult = Status | Awaitable[Status]
CheckFn = Callable[[Evaluation, ListContext], CheckResult]


@dataclass(frozen=True)
class Item:
    """One compiled restriction: its text for logs and its function.  The
    pseudo restriction warn_if_reject has no function."""

    rule: str
    fn: CheckFn | None


@dataclass(frozen=True)
class RestrictionList:
    """A compiled list."""

    names: tuple[str, ...]
    items: tuple[Item, ...] = field(repr=False)
    needs_io: bool = False  # some restriction may await DNS, a policy server, ...


class RestrictionError(ValueError):
    """A restriction list that cannot be compiled (unknown name, bad table)."""


async def run_list(ev: Evaluation, rlist: RestrictionList, ctx: ListContext) -> Status:
    """generic_checks: the first restriction that decides wins."""
    saved = ev.recursion
    ev.recursion += 1
    status = DUNNO
    try:
        for item in rlist.items:
            if ev.facts.effects.discard is not None:
                break
            if item.fn is None:
                if ev.warn_if_reject == 0:
                    ev.warn_if_reject = ev.recursion
                continue
            ev.rules.append(item.rule)
            try:
                result = item.fn(ev, ctx)
                status = result if isinstance(result, int) else await result
            finally:
                ev.rules.pop()
            if ev.warn_if_reject >= ev.recursion:
                ev.warn_if_reject = 0
            if status != DUNNO:
                break
            if ev.defer_if_permit is not None and ev.defer_if_reject is not None:
                break
    finally:
        ev.recursion = saved
        if ev.warn_if_reject >= ev.recursion:
            ev.warn_if_reject = 0
    return status


# -- helpers -----------------------------------------------------------------------


def dsn_split(default: str, text: str) -> tuple[str, str]:
    """A leading ``X.Y.Z`` of ``text`` is the DSN, else ``default``."""
    m = _DSN_RE.match(text)
    if m is None:
        return default, text
    return f"{m.group(1)}.{m.group(2)}.{m.group(3)}", text[m.end() :]


def dsn_fix(status: str, reply_class: str) -> str:
    """smtpd_dsn_fix: an address DSN (X.1.Y) that fits what is rejected."""
    if len(status) < 5 or status[1:4] != ".1.":
        return status
    micro = status[4:]
    if reply_class == SENDER:
        fixed = _SENDER_DSN.get(micro, "4.1.0")
    elif reply_class == RECIPIENT:
        fixed = _RCPT_DSN.get(micro, "4.1.0")
    else:
        fixed = "4.0.0"
    return status[0] + fixed[1:]


def valid_hostname(name: str) -> bool:
    """Postfix valid_hostname(): letters, digits, "-" and "_" in labels of at
    most 63 characters, not starting or ending with "-"; not all numeric."""
    if not name or len(name) > 255 or name.startswith(".") or ".." in name:
        return False
    for label in name.split("."):
        if not label or len(label) > 63 or label[0] == "-" or label[-1] == "-":
            return False
        if not all((c.isascii() and c.isalnum()) or c in "-_" for c in label):
            return False
    return not all(c.isdigit() or c == "." for c in name)


def valid_hostaddr(text: str) -> bool:
    try:
        ipaddress.ip_address(text.removeprefix("IPv6:").removeprefix("ipv6:"))
    except ValueError:
        return False
    return True


def _truncate_dot(name: str) -> str:
    """Postfix dup_if_truncate: drop one trailing dot (not of "..")."""
    if len(name) > 1 and name.endswith(".") and not name.endswith(".."):
        return name[:-1]
    return name


# -- access tables -------------------------------------------------------------------


def check_table_result(
    ev: Evaluation, table: str, value: str, datum: str, ctx: ListContext
) -> CheckResult:
    """An access(5) result for ``datum`` found in ``table``."""
    word, _, rest = value.partition(" ")
    if "\t" in word:
        word, _, more = word.partition("\t")
        rest = f"{more} {rest}".strip() if rest else more
    cmd = word.upper()
    text = rest.strip(" \t")
    name, klass = ctx.reply_name, ctx.reply_class
    codes = ev.settings.codes
    f = ev.facts

    def delegate(action: str) -> bool:
        # can_delegate_action: message actions need a mail transaction.
        if f.sender is None:
            ev.note(
                "warning",
                f"access table {table}: with smtpd_delay_reject=no, action {action} is "
                "always skipped in client or helo restrictions",
            )
            return False
        return True

    if cmd == "DUNNO":
        return DUNNO
    if cmd == "REJECT":
        dsn, reason = dsn_split("5.7.1", text)
        return ev.reject(
            codes.access_map_reject_code,
            dsn_fix(dsn, klass),
            f"<{name}>: {klass} rejected: {reason or 'Access denied'}",
        )
    if cmd == "DEFER":
        dsn, reason = dsn_split("4.7.1", text)
        return ev.reject(
            codes.access_map_defer_code,
            dsn_fix(dsn, klass),
            f"<{name}>: {klass} rejected: {reason or 'Access denied'}",
        )
    if cmd == "INFO":
        ev.note("info", text)
        return DUNNO
    if cmd == "WARN":
        ev.note("warn", text)
        return DUNNO
    if cmd == "FILTER":
        if not delegate("FILTER"):
            return DUNNO
        if not text or ":" not in text:
            ev.note(
                "warning",
                f'access table {table} entry "{datum}" requires transport:destination',
            )
            return DUNNO
        ev.note("filter", f"<{name}>: {klass} triggers FILTER {text}")
        f.effects.filter = text
        return DUNNO
    if cmd == "HOLD":
        if not delegate("HOLD") or f.effects.hold is not None:
            return DUNNO
        reason = text or "triggers HOLD action"
        ev.note("hold", f"<{name}>: {klass} {reason}")
        f.effects.hold = f"<{name}>: {klass} {reason}"
        return DUNNO
    if cmd == "DISCARD":
        if not delegate("DISCARD"):
            return DUNNO
        reason = text or "triggers DISCARD action"
        ev.note("discard", f"<{name}>: {klass} {reason}")
        f.effects.discard = f"<{name}>: {klass} {reason}"
        return OK
    if cmd in ("REDIRECT", "BCC"):
        if not delegate(cmd):
            return DUNNO
        if "@" not in text:
            ev.note("warning", f'access table {table} entry "{datum}" requires user@domain target')
            return DUNNO
        ev.note(cmd.lower(), f"<{name}>: {klass} triggers {cmd} {text}")
        if cmd == "REDIRECT":
            f.effects.redirect = text
        elif text not in f.effects.bcc:
            f.effects.bcc.append(text)
        return DUNNO
    if cmd in ("DEFER_IF_PERMIT", "DEFER_IF_REJECT"):
        dsn, reason = dsn_split("4.7.1", text)
        reply_text = f"<{name}>: {klass} rejected: {reason or 'Service unavailable'}"
        if cmd == "DEFER_IF_PERMIT":
            return ev.defer_if_permit_or_reject(
                "defer_if_permit", codes.access_map_defer_code, dsn_fix(dsn, klass), reply_text
            )
        return ev.defer_if("reject", codes.access_map_defer_code, dsn_fix(dsn, klass), reply_text)
    if cmd == "PREPEND":
        if not delegate("PREPEND"):
            return DUNNO
        if ev.where == "END-OF-MESSAGE":
            ev.note(
                "warning",
                f"access table {table}: action PREPEND must be used before "
                "smtpd_end_of_data_restrictions",
            )
            return DUNNO
        if not re.match(r"^[!-9;-~]+:", text):
            ev.note("warning", f'access table {table} entry "{datum}" requires header: text')
            return DUNNO
        if text not in f.effects.prepend:
            f.effects.prepend.append(text)
        return DUNNO
    if value.isdigit():
        return OK
    if len(word) == 3 and word[0] in "45" and word[1:].isdigit() and text:
        dsn, reason = dsn_split(f"{word[0]}.7.1", text)
        return ev.reject(
            int(word),
            dsn_fix(dsn, klass),
            f"<{name}>: {klass} rejected: {reason or 'Access denied'}",
        )
    if cmd in ("OK", "RELAY"):
        return OK
    if ":" in value:
        raise ev.server_error(
            f"access table {table} has entry with lookup table: {value}; "
            "define a restriction class and specify its name instead"
        )
    if ev.recursion > 100:
        raise ev.server_error(f"access table {table} entry {value} causes unreasonable recursion")
    try:
        rlist = ev.nested(value, ctx.def_acl)
    except RestrictionError as e:
        raise ev.server_error(f"access table {table} entry {datum}: {e}") from None
    return run_list(ev, rlist, ctx)


def _lookup_first(table: LookupTable, keys: Sequence[str]) -> tuple[str, str] | None:
    for key in keys:
        value = table.lookup(key)
        if value is not None:
            return key, value
    return None


def _table_lookup(
    ev: Evaluation, table: LookupTable, keys: Sequence[str]
) -> tuple[str, str] | None:
    try:
        return _lookup_first(table, keys)
    except Exception as e:  # a table that fails at lookup time (pipemap of a bad type, ...)
        ev.note("warning", f"{table.spec}: lookup error: {e}")
        raise ev.server_error(f"{table.spec}: table lookup problem") from None


# -- compilation -------------------------------------------------------------------

# Restrictions that take one argument, and what it is.
_ARG_TABLE = "table"
_ARG_DOMAIN = "domain"
_ARG_SERVER = "server"
_ARG_NUMBER = "number"

_TAKES_ARG: Mapping[str, str] = {
    "check_client_access": _ARG_TABLE,
    "check_reverse_client_access": _ARG_TABLE,
    "check_helo_access": _ARG_TABLE,
    "check_sender_access": _ARG_TABLE,
    "check_recipient_access": _ARG_TABLE,
    "check_sasl_access": _ARG_TABLE,
    "reject_rbl_client": _ARG_DOMAIN,
    "reject_rbl": _ARG_DOMAIN,
    "permit_dnswl_client": _ARG_DOMAIN,
    "reject_rhsbl_client": _ARG_DOMAIN,
    "reject_rhsbl_reverse_client": _ARG_DOMAIN,
    "permit_rhswl_client": _ARG_DOMAIN,
    "reject_rhsbl_helo": _ARG_DOMAIN,
    "reject_rhsbl_sender": _ARG_DOMAIN,
    "reject_rhsbl_recipient": _ARG_DOMAIN,
    "check_policy_service": _ARG_SERVER,
    "sleep": _ARG_NUMBER,
}

_SIMPLE = frozenset(
    {
        "permit",
        "reject",
        "defer",
        "defer_if_permit",
        "defer_if_reject",
        "warn_if_reject",
        "reject_unauth_pipelining",
        "reject_plaintext_session",
        "permit_mynetworks",
        "permit_sasl_authenticated",
        "permit_auth_destination",
        "reject_unauth_destination",
        "defer_unauth_destination",
        "reject_invalid_helo_hostname",
        "reject_invalid_hostname",
        "reject_non_fqdn_helo_hostname",
        "reject_non_fqdn_hostname",
        "reject_unknown_helo_hostname",
        "reject_unknown_hostname",
        "reject_non_fqdn_sender",
        "reject_non_fqdn_recipient",
        "reject_unknown_sender_domain",
        "reject_unknown_recipient_domain",
        "reject_unknown_address",
        "reject_unlisted_recipient",
        "check_recipient_maps",
        "reject_unlisted_sender",
        "reject_unverified_recipient",
        "reject_unverified_sender",
        "reject_multi_recipient_bounce",
    }
)

#: Every restriction name mta knows (smtpd_restriction_classes add more).
KNOWN_RESTRICTIONS = frozenset(_SIMPLE | set(_TAKES_ARG))

# Restrictions whose check may wait for I/O.
_IO = frozenset(
    {
        "reject_unknown_helo_hostname",
        "reject_unknown_hostname",
        "reject_unknown_sender_domain",
        "reject_unknown_recipient_domain",
        "reject_unknown_address",
        "reject_unverified_recipient",
        "reject_unverified_sender",
        "reject_rbl_client",
        "reject_rbl",
        "permit_dnswl_client",
        "reject_rhsbl_client",
        "reject_rhsbl_reverse_client",
        "permit_rhswl_client",
        "reject_rhsbl_helo",
        "reject_rhsbl_sender",
        "reject_rhsbl_recipient",
        "check_policy_service",
        "sleep",
    }
)


class Compiler:
    """Compiles restriction lists of one configuration; tables are opened
    once and shared (``tables``), nested lists from access results are
    compiled on first use and cached."""

    def __init__(
        self,
        settings: PolicySettings,
        *,
        open_spec: Callable[[str], LookupTable],
    ) -> None:
        self.settings = settings
        self._open_spec = open_spec
        self._nested: dict[tuple[str, str | None], RestrictionList] = {}
        self._classes: dict[str, RestrictionList] = {}
        self._compiling_classes: set[str] = set()

    def table(self, spec: str) -> LookupTable:
        try:
            return self._open_spec(spec)
        except TableError as e:
            raise RestrictionError(str(e)) from e

    def compile(self, items: Sequence[str], klass: Klass) -> RestrictionList:
        """Compile a list for ``klass``; raises RestrictionError."""
        words = [word for item in items for word in split_list(item)]
        return self._compile(words, _DEFAULT_ACL[klass], f"{klass} restrictions")

    def nested(self, value: str, def_acl: str | None) -> RestrictionList:
        key = (value, def_acl)
        rlist = self._nested.get(key)
        if rlist is None:
            rlist = self._nested[key] = self._compile(split_list(value), def_acl, "access result")
        return rlist

    def _class(self, name: str) -> RestrictionList:
        rlist = self._classes.get(name)
        if rlist is not None:
            return rlist
        if name in self._compiling_classes:
            raise RestrictionError(f'restriction class "{name}" refers to itself')
        self._compiling_classes.add(name)
        try:
            # A class may hold bare tables; Postfix gives them the caller's
            # default, which is known only at run time: resolve per caller.
            rlist = self._compile(list(self.settings.restriction_classes[name]), None, name)
        finally:
            self._compiling_classes.discard(name)
        self._classes[name] = rlist
        return rlist

    def _compile(self, words: list[str], def_acl: str | None, where: str) -> RestrictionList:
        items: list[Item] = []
        names: list[str] = []
        needs_io = False
        i = 0
        while i < len(words):
            word = words[i]
            i += 1
            if ":" in word:
                # A bare table: short for the list's own access check.
                if def_acl is None and where.endswith("restrictions"):
                    raise RestrictionError(
                        "specify one of (check_client_access, check_helo_access, "
                        "check_sender_access, check_recipient_access) before "
                        f'restriction "{word}"'
                    )
                name, arg = def_acl or "", word
            else:
                name, arg = word.lower(), None
                if name in _TAKES_ARG:
                    if i >= len(words):
                        raise RestrictionError(f"restriction {name} needs an argument")
                    arg = words[i]
                    i += 1
            rule = f"{name} {arg}" if arg is not None else name
            if not name:
                # A bare table inside a class: the caller's access check.
                table = self.table(arg or "")
                items.append(Item(rule.strip(), self._bare_table(table)))
                names.append(arg or "")
                continue
            fn, io = self._one(name, arg)
            needs_io = needs_io or io
            items.append(Item(rule, fn))
            names.append(rule)
        return RestrictionList(tuple(names), tuple(items), needs_io)

    def _bare_table(self, table: LookupTable) -> CheckFn:
        def check(ev: Evaluation, ctx: ListContext) -> CheckResult:
            if ctx.def_acl is None:
                raise ev.server_error(
                    f'specify an access check before table "{table.spec}" in {ctx.reply_class} '
                    "restrictions"
                )
            return _ACCESS_CHECKS[ctx.def_acl](ev, table, ctx.def_acl)

        return check

    def _one(self, name: str, arg: str | None) -> tuple[CheckFn | None, bool]:
        if name == "warn_if_reject":
            return None, False
        if name in self.settings.restriction_classes:
            rlist = self._class(name)

            def run_class(ev: Evaluation, ctx: ListContext) -> CheckResult:
                return run_list(ev, rlist, ctx)

            return run_class, rlist.needs_io
        if name in _ACCESS_CHECKS:
            assert arg is not None
            table = self.table(arg)
            access = _ACCESS_CHECKS[name]
            return (lambda ev, ctx: access(ev, table, ctx.def_acl)), False
        if name in _TAKES_ARG and _TAKES_ARG[name] == _ARG_DOMAIN:
            assert arg is not None
            try:
                dnslist = dnsxl.DnsList.parse(arg)
            except dnsxl.DnsxlError as e:
                raise RestrictionError(f"{name}: {e}") from None
            return _dnsxl_check(name, dnslist), True
        if name == "check_policy_service":
            assert arg is not None
            try:
                endpoint = parse_policy_spec(arg, self.settings.policy_defaults)
            except PolicyError as e:
                raise RestrictionError(f"{name}: {e}") from None
            return _policy_check(endpoint), True
        if name == "sleep":
            if arg is None or not arg.isdigit():
                raise RestrictionError("restriction sleep must be followed by number")
            seconds = int(arg)

            async def sleep(ev: Evaluation, ctx: ListContext) -> Status:
                await ev.services_or_fail().sleep(seconds)
                return DUNNO

            return sleep, True
        fn = _SIMPLE_CHECKS.get(name)
        if fn is None:
            raise RestrictionError(f'unknown smtpd restriction: "{name}"')
        return fn, name in _IO


def compile_restrictions(
    items: Sequence[str],
    klass: Klass,
    settings: PolicySettings,
    *,
    base_dir: Path = Path("."),
    tables: dict[str, LookupTable] | None = None,
) -> RestrictionList:
    """Compile one list (a convenience for tools; the daemon uses one
    :class:`Compiler` per configuration).  ``base_dir`` resolves relative
    table names; ``tables`` shares opened tables between calls."""
    cache = tables if tables is not None else {}
    base = base_dir

    def open_spec(spec: str) -> LookupTable:
        table = cache.get(spec)
        if table is None:
            table = cache[spec] = open_table(spec, base_dir=base)
        return table

    return Compiler(settings, open_spec=open_spec).compile(items, klass)


# -- the checks ----------------------------------------------------------------------


def _permit(ev: Evaluation, ctx: ListContext) -> Status:
    return OK


def _reject_all(ev: Evaluation, ctx: ListContext) -> Status:
    return ev.reject(
        ev.settings.codes.reject_code,
        "5.7.1",
        f"<{ctx.reply_name}>: {ctx.reply_class} rejected: Access denied",
    )


def _defer_all(ev: Evaluation, ctx: ListContext) -> Status:
    return ev.reject(
        ev.settings.codes.defer_code,
        "4.3.2",
        f"<{ctx.reply_name}>: {ctx.reply_class} rejected: Try again later",
    )


def _defer_if_permit(ev: Evaluation, ctx: ListContext) -> Status:
    return ev.defer_if_permit_or_reject(
        "defer_if_permit",
        450,
        "4.7.0",
        f"<{ctx.reply_name}>: {ctx.reply_class} rejected: defer_if_permit requested",
    )


def _defer_if_reject(ev: Evaluation, ctx: ListContext) -> Status:
    return ev.defer_if(
        "reject",
        450,
        "4.7.0",
        f"<{ctx.reply_name}>: {ctx.reply_class} rejected: defer_if_reject requested",
    )


def _reject_unauth_pipelining(ev: Evaluation, ctx: ListContext) -> Status:
    if ev.facts.illegal_pipelining:
        return ev.reject(
            503,
            "5.5.0",
            f"<{ctx.reply_name}>: {ctx.reply_class} rejected: "
            "Improper use of SMTP command pipelining",
            error_class="protocol",
        )
    return DUNNO


def _reject_plaintext_session(ev: Evaluation, ctx: ListContext) -> Status:
    if not ev.facts.encryption_protocol:
        return ev.reject(
            ev.settings.codes.plaintext_reject_code, "4.7.1", "Session encryption is required"
        )
    return DUNNO


def _permit_mynetworks(ev: Evaluation, ctx: ListContext) -> Status:
    return OK if ev.settings.domains.mynetworks.matches(ev.facts.client_addr) else DUNNO


def _permit_sasl_authenticated(ev: Evaluation, ctx: ListContext) -> Status:
    return OK if ev.facts.sasl_username else DUNNO


def _auth_destination(ev: Evaluation, recipient: str) -> bool:
    """permit_auth_destination: a local or relay domain, not source-routed."""
    local = recipient.rpartition("@")[0]
    domain = domain_of(recipient)
    if not domain:
        return True  # Postfix: an unqualified address is local
    # Sender-specified routing (%, !, @ in the local part) is never
    # authorized, so it cannot be used to relay.
    if any(c in local for c in "%!@"):
        return False
    return ev.settings.domains.is_local_or_relay(domain)


def _permit_auth_destination(ev: Evaluation, ctx: ListContext) -> Status:
    rcpt = ev.facts.recipient
    return OK if rcpt is not None and _auth_destination(ev, rcpt) else DUNNO


def _unauth_destination(defer: bool) -> CheckFn:
    def check(ev: Evaluation, ctx: ListContext) -> Status:
        rcpt = ev.facts.recipient
        if rcpt is None or _auth_destination(ev, rcpt):
            return DUNNO
        code = ev.settings.codes.relay_domains_reject_code - (100 if defer else 0)
        return ev.reject(code, "4.7.1" if defer else "5.7.1", f"<{rcpt}>: Relay access denied")

    return check


def _helo_invalid(ev: Evaluation, ctx: ListContext) -> Status:
    helo = ev.facts.helo
    if not helo:
        return DUNNO
    if helo.startswith("["):
        return _invalid_hostaddr(ev, helo)
    name = _truncate_dot(helo)
    if not valid_hostname(name) and not valid_hostaddr(name):
        return ev.reject(
            ev.settings.codes.invalid_hostname_reject_code,
            "5.5.2",
            f"<{helo}>: {HELO} rejected: Invalid name",
        )
    return DUNNO


def _invalid_hostaddr(ev: Evaluation, helo: str) -> Status:
    inner = helo[1:-1] if helo.endswith("]") and len(helo) > 2 else helo
    if not valid_hostaddr(inner):
        return ev.reject(
            ev.settings.codes.invalid_hostname_reject_code,
            "5.5.2",
            f"<{helo}>: {HELO} rejected: invalid ip address",
        )
    return DUNNO


def _helo_non_fqdn(ev: Evaluation, ctx: ListContext) -> Status:
    helo = ev.facts.helo
    if not helo:
        return DUNNO
    if helo.startswith("["):
        return _invalid_hostaddr(ev, helo)
    name = _truncate_dot(helo)
    if not valid_hostname(name) or "." not in name:
        return ev.reject(
            ev.settings.codes.non_fqdn_reject_code,
            "5.5.2",
            f"<{helo}>: {HELO} rejected: need fully-qualified hostname",
        )
    return DUNNO


async def _helo_unknown(ev: Evaluation, ctx: ListContext) -> Status:
    helo = ev.facts.helo
    if not helo:
        return DUNNO
    if helo.startswith("["):
        return _invalid_hostaddr(ev, helo)
    status = await dnsxl.host_status(
        ev.services_or_fail().dns(ev.settings.nameservers), _truncate_dot(helo)
    )
    if status in ("ok", "nullmx"):
        return DUNNO
    text = f"<{helo}>: {HELO} rejected: Host not found"
    if status == "retry":
        return ev.defer_if_permit_or_reject(
            ev.settings.unknown_helo_hostname_tempfail_action, 450, "4.7.1", text
        )
    return ev.reject(ev.settings.codes.unknown_hostname_reject_code, "4.7.1", text)


def _non_fqdn_address(which: Literal["sender", "recipient"]) -> CheckFn:
    klass = SENDER if which == "sender" else RECIPIENT

    def check(ev: Evaluation, ctx: ListContext) -> Status:
        addr = ev.facts.sender if which == "sender" else ev.facts.recipient
        if not addr:
            return DUNNO
        domain = addr.rpartition("@")[2] if "@" in addr else ""
        if domain.startswith("[") and domain.endswith("]"):
            return DUNNO
        test = _truncate_dot(domain)
        if not test or "." not in test or not _valid_mail_domain(test, ev.facts.smtputf8):
            return ev.reject(
                ev.settings.codes.non_fqdn_reject_code,
                "4.5.2",
                f"<{addr}>: {klass} rejected: need fully-qualified address",
            )
        return DUNNO

    return check


def _valid_mail_domain(domain: str, smtputf8: bool) -> bool:
    if not domain.isascii():
        if not smtputf8:
            return False
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return False
    return valid_hostname(domain)


def _unknown_domain(which: Literal["sender", "recipient"]) -> CheckFn:
    klass = SENDER if which == "sender" else RECIPIENT

    async def check(ev: Evaluation, ctx: ListContext) -> Status:
        addr = ev.facts.sender if which == "sender" else ev.facts.recipient
        if not addr:
            return DUNNO
        domain = domain_of(addr)
        if not domain or ev.settings.domains.is_final(domain) or domain.startswith("["):
            return DUNNO
        status = await dnsxl.mailhost_status(
            ev.services_or_fail().dns(ev.settings.nameservers), _truncate_dot(domain)
        )
        if status == "ok":
            return DUNNO
        if status == "nullmx":
            return ev.reject(
                550 if which == "sender" else 556,
                "4.7.27" if which == "sender" else "4.1.10",
                f"<{addr}>: {klass} rejected: Domain {domain} does not accept mail (nullMX)",
            )
        dsn = "4.1.8" if which == "sender" else "4.1.2"
        text = f"<{addr}>: {klass} rejected: Domain not found"
        if status == "retry":
            return ev.defer_if_permit_or_reject(
                ev.settings.unknown_address_tempfail_action, 450, dsn, text
            )
        return ev.reject(ev.settings.codes.unknown_address_reject_code, dsn, text)

    return check


def _rcpt_map_keys(address: str, delimiter: str, local: bool) -> list[str]:
    """mail_addr_find order: the address, without extension, @domain; for a
    local domain also the bare local part."""
    localpart, _, domain = address.rpartition("@")
    bare = strip_extension(localpart, delimiter)
    keys = [address]
    if bare is not None:
        keys.append(f"{bare}@{domain}")
    if local:
        keys.append(localpart)
        if bare is not None:
            keys.append(bare)
    keys.append(f"@{domain}")
    return keys


def check_rcpt_maps(ev: Evaluation, address: str, klass: str) -> Status:
    """reject_unlisted_recipient/sender: an address in a local or relay
    domain must be in local_recipient_maps / relay_recipient_maps."""
    domain = domain_of(address)
    if not domain:
        return DUNNO
    s = ev.settings
    dsn = "5.1.0" if klass == SENDER else "5.1.1"
    if s.domains.is_local(domain):
        localpart = address.rpartition("@")[0].lower()
        if not s.local_recipient_maps or localpart in _LOCAL_ROLES:
            return DUNNO
        keys = _rcpt_map_keys(address, s.recipient_delimiter, local=True)
        if any(_table_lookup(ev, t, keys) is not None for t in s.local_recipient_maps):
            return DUNNO
        table_name = " in local recipient table" if s.show_user_unknown_table_name else ""
        return ev.reject(
            s.codes.unknown_local_recipient_reject_code,
            dsn,
            f"<{address}>: {klass} rejected: User unknown{table_name}",
            error_class="bounce",
        )
    if s.domains.is_relay(domain) and s.relay_recipient_maps:
        keys = _rcpt_map_keys(address, s.recipient_delimiter, local=False)
        if any(_table_lookup(ev, t, keys) is not None for t in s.relay_recipient_maps):
            return DUNNO
        table_name = " in relay recipient table" if s.show_user_unknown_table_name else ""
        return ev.reject(
            s.codes.unknown_relay_recipient_reject_code,
            dsn,
            f"<{address}>: {klass} rejected: User unknown{table_name}",
            error_class="bounce",
        )
    return DUNNO


def _unlisted(which: Literal["sender", "recipient"]) -> CheckFn:
    def check(ev: Evaluation, ctx: ListContext) -> Status:
        addr = ev.facts.sender if which == "sender" else ev.facts.recipient
        if not addr:
            return DUNNO
        return check_rcpt_maps(ev, addr, SENDER if which == "sender" else RECIPIENT)

    return check


def _unverified(which: Literal["sender", "recipient"]) -> CheckFn:
    klass = SENDER if which == "sender" else RECIPIENT

    async def check(ev: Evaluation, ctx: ListContext) -> Status:
        addr = ev.facts.sender if which == "sender" else ev.facts.recipient
        if not addr:
            return DUNNO
        s = ev.settings
        if which == "sender":
            dcode, rcode = (
                s.codes.unverified_sender_defer_code,
                s.codes.unverified_sender_reject_code,
            )
            action, alt = s.unverified_sender_tempfail_action, s.unverified_sender_reject_reason
            dsn = "4.1.7"
        else:
            dcode = s.codes.unverified_recipient_defer_code
            rcode = s.codes.unverified_recipient_reject_code
            action = s.unverified_recipient_tempfail_action
            alt = s.unverified_recipient_reject_reason
            dsn = "4.1.1"
        answer = await ev.services_or_fail().verify(s.verify, addr)
        if answer.status == "error":
            ev.note("warning", f"address verification service failure: {answer.text}")
            return ev.defer_if_permit_or_reject(
                action, 450, dsn, f"<{addr}>: {klass} rejected: address verification problem"
            )
        if answer.status == "ok":
            return DUNNO
        code = rcode if answer.status == "bounce" else dcode
        why = alt if alt else answer.text
        if code // 100 == 2:
            return DUNNO
        if code // 100 == 4:
            return ev.defer_if_permit_or_reject(
                action, code, dsn, f"<{addr}>: {klass} rejected: unverified address: {why[:250]}"
            )
        return ev.reject(code, dsn, f"<{addr}>: {klass} rejected: undeliverable address: {why}")

    return check


def _multi_recipient_bounce(ev: Evaluation, ctx: ListContext) -> Status:
    f = ev.facts
    if f.sender == "" and f.rcpt_count > (0 if ev.where == "RCPT" else 1):
        return ev.reject(
            ev.settings.codes.multi_recipient_bounce_reject_code,
            "5.5.3",
            f"<{ctx.reply_name}>: {ctx.reply_class} rejected: Multi-recipient bounce",
        )
    return DUNNO


def _access_client(ev: Evaluation, table: LookupTable, def_acl: str | None) -> CheckResult:
    f = ev.facts
    found = _table_lookup(
        ev,
        table,
        client_keys(
            f.client_name,
            f.client_addr,
            parent_matches_subdomains=ev.settings.parent_matches_subdomains,
            partial=_partial(table),
        ),
    )
    if found is None:
        return DUNNO
    ctx = ListContext(f.client, CLIENT, def_acl)
    return check_table_result(ev, table.spec, found[1], found[0], ctx)


def _access_reverse_client(ev: Evaluation, table: LookupTable, def_acl: str | None) -> CheckResult:
    f = ev.facts
    name = f.reverse_client_name or f.client_name
    found = _table_lookup(
        ev,
        table,
        client_keys(
            name,
            f.client_addr,
            parent_matches_subdomains=ev.settings.parent_matches_subdomains,
            partial=_partial(table),
        ),
    )
    if found is None:
        return DUNNO
    ctx = ListContext(name, REV_CLIENT, def_acl)
    status = check_table_result(ev, table.spec, found[1], found[0], ctx)
    if isinstance(status, int) and status == OK and ev.facts.effects.discard is None:
        raise ev.server_error(
            f"restriction check_reverse_client_access returns OK for {name}; "
            "this is not allowed for security reasons"
        )
    return status


def _access_helo(ev: Evaluation, table: LookupTable, def_acl: str | None) -> CheckResult:
    helo = ev.facts.helo
    if not helo:
        return DUNNO
    keys = domain_keys(helo, ev.settings.parent_matches_subdomains, partial=_partial(table))
    found = _table_lookup(ev, table, keys)
    if found is None:
        return DUNNO
    return check_table_result(ev, table.spec, found[1], helo, ListContext(helo, HELO, def_acl))


def _access_sender(ev: Evaluation, table: LookupTable, def_acl: str | None) -> CheckResult:
    sender = ev.facts.sender
    if sender is None:
        return DUNNO
    s = ev.settings
    if sender == "":
        keys = [s.null_access_key]
    else:
        keys = address_keys(
            sender,
            s.recipient_delimiter,
            parent_matches_subdomains=s.parent_matches_subdomains,
            null_key=s.null_access_key,
            partial=_partial(table),
        )
    found = _table_lookup(ev, table, keys)
    if found is None:
        return DUNNO
    return check_table_result(
        ev, table.spec, found[1], sender, ListContext(sender, SENDER, def_acl)
    )


def _access_recipient(ev: Evaluation, table: LookupTable, def_acl: str | None) -> CheckResult:
    rcpt = ev.facts.recipient
    if rcpt is None:
        return DUNNO
    s = ev.settings
    keys = address_keys(
        rcpt,
        s.recipient_delimiter,
        parent_matches_subdomains=s.parent_matches_subdomains,
        null_key=s.null_access_key,
        partial=_partial(table),
    )
    found = _table_lookup(ev, table, keys)
    if found is None:
        return DUNNO
    ctx = ListContext(rcpt, RECIPIENT, def_acl)
    status = check_table_result(ev, table.spec, found[1], rcpt, ctx)
    local = rcpt.rpartition("@")[0]
    if isinstance(status, int) and status == OK and any(c in local for c in "%!@"):
        return DUNNO  # a source-routed recipient is too suspicious for OK
    return status


def _access_sasl(ev: Evaluation, table: LookupTable, def_acl: str | None) -> CheckResult:
    user = ev.facts.sasl_username
    if not user:
        return DUNNO
    found = _table_lookup(ev, table, [user])
    if found is None:
        return DUNNO
    name = "".join(c if c.isprintable() else "_" for c in user)
    return check_table_result(
        ev, table.spec, found[1], user, ListContext(name, "SASL login name", def_acl)
    )


# Access checks by name: (evaluation, table, the list's default check) → result.
_ACCESS_CHECKS: Mapping[str, Callable[[Evaluation, LookupTable, str | None], CheckResult]] = {
    "check_client_access": _access_client,
    "check_reverse_client_access": _access_reverse_client,
    "check_helo_access": _access_helo,
    "check_sender_access": _access_sender,
    "check_recipient_access": _access_recipient,
    "check_sasl_access": _access_sasl,
}


def _partial(table: LookupTable) -> bool:
    from mta.tables import accepts_partial_keys

    return accepts_partial_keys(table)


# -- DNS lists ------------------------------------------------------------------------


def _dnsxl_check(name: str, dnslist: dnsxl.DnsList) -> CheckFn:
    async def check(ev: Evaluation, ctx: ListContext) -> Status:
        f = ev.facts
        dns = ev.services_or_fail().dns(ev.settings.nameservers)
        allow = name in ("permit_dnswl_client", "permit_rhswl_client")
        if name in ("reject_rbl_client", "reject_rbl", "permit_dnswl_client"):
            what, klass = f.client_addr, CLIENT
            unauthorized = f.recipient is not None and not _auth_destination(ev, f.recipient)
            if allow and ev.where == "RCPT" and unauthorized:
                return DUNNO  # never allow-list an unauthorized recipient
            result = await dnsxl.lookup_address(dns, f.client_addr, dnslist)
        else:
            if name in ("reject_rhsbl_client", "permit_rhswl_client"):
                what, klass = f.client_name, CLIENT
                if what.lower() == "unknown":
                    return DUNNO
            elif name == "reject_rhsbl_reverse_client":
                what, klass = f.reverse_client_name or f.client_name, REV_CLIENT
                if what.lower() == "unknown":
                    return DUNNO
            elif name == "reject_rhsbl_helo":
                what, klass = f.helo, HELO
            elif name == "reject_rhsbl_sender":
                what, klass = f.sender or "", SENDER
            else:
                what, klass = f.recipient or "", RECIPIENT
            if not what:
                return DUNNO
            unauthorized = f.recipient is not None and not _auth_destination(ev, f.recipient)
            if allow and ev.where == "RCPT" and unauthorized:
                return DUNNO
            result = await dnsxl.lookup_domain(dns, what, dnslist)
        if result.status == "unknown":
            ev.note("warning", result.reason)
            if allow:
                return ev.defer_if(
                    "reject", 450, "4.7.1", f"<{what}>: {klass} rejected: Service unavailable"
                )
            return DUNNO
        if result.status == "no":
            return DUNNO
        if allow:
            return OK
        return _rbl_reject(ev, dnslist, what, klass, result.txt)

    return check


def _rbl_reject(ev: Evaluation, dnslist: dnsxl.DnsList, what: str, klass: str, txt: str) -> Status:
    s = ev.settings
    template = None
    for table in s.rbl_reply_maps:
        template = table.lookup(dnslist.spec)
        if template is not None:
            break
    attributes = _expand_attributes(ev)
    code = s.codes.maps_rbl_reject_code
    try:
        line = dnsxl.rbl_reply(
            template or s.default_rbl_reply,
            code=code,
            dnslist=dnslist,
            what=what,
            reply_class=klass,
            txt=txt,
            attributes=attributes,
        )
    except dnsxl.DnsxlError as e:
        ev.note("warning", f"bad rbl reply template for domain {dnslist.spec}: {e}")
        line = dnsxl.rbl_reply(
            dnsxl.DEFAULT_RBL_REPLY,
            code=code,
            dnslist=dnslist,
            what=what,
            reply_class=klass,
            txt=txt,
            attributes=attributes,
        )
    m = re.match(r"^([45]\d\d) (.*)$", line, re.DOTALL)
    if m is None:
        ev.note("warning", f"rbl response code configuration error: {line}")
        return ev.reject(450, "4.7.1", "Service unavailable")
    dsn, text = dsn_split("4.7.1", m.group(2))
    return ev.reject(int(m.group(1)), dsn_fix(dsn, klass), text or "Service unavailable")


def _expand_attributes(ev: Evaluation) -> dict[str, str]:
    """The smtpd_expand names a reply template may use."""
    f = ev.facts
    return {
        "client_address": f.client_addr,
        "client_name": f.client_name,
        "client_port": f.client_port,
        "reverse_client_name": f.reverse_client_name or f.client_name,
        "helo_name": f.helo,
        "sender": f.sender or "",
        "sender_name": (f.sender or "").rpartition("@")[0],
        "sender_domain": domain_of(f.sender or ""),
        "recipient": f.recipient or "",
        "recipient_name": (f.recipient or "").rpartition("@")[0],
        "recipient_domain": domain_of(f.recipient or ""),
        "sasl_method": f.sasl_method,
        "sasl_username": f.sasl_username,
        "sasl_sender": f.sasl_sender,
        "server_address": f.server_addr,
        "server_port": f.server_port,
        "protocol_name": f.protocol,
    }


# -- policy delegation -------------------------------------------------------------------


def policy_attributes(ev: Evaluation, endpoint: PolicyEndpoint) -> dict[str, str]:
    """The request of the Postfix policy delegation protocol (SMTPD_POLICY_README)."""
    f = ev.facts
    where = ev.where
    in_data = where in ("DATA", "BDAT", "END-OF-MESSAGE")
    return {
        "request": "smtpd_access_policy",
        "protocol_state": "DATA" if where == "BDAT" else where,
        "protocol_name": f.protocol,
        "client_address": f.client_addr,
        "client_name": f.client_name,
        "client_port": f.client_port,
        "reverse_client_name": f.reverse_client_name or f.client_name,
        "server_address": f.server_addr,
        "server_port": f.server_port,
        "helo_name": f.helo,
        "sender": f.sender or "",
        "recipient": f.recipient or "",
        "recipient_count": str(f.rcpt_count if in_data else 0),
        "queue_id": f.queue_id,
        "instance": f.instance,
        "size": str(f.size),
        "etrn_domain": "",
        "stress": "",
        "sasl_method": f.sasl_method,
        "sasl_username": f.sasl_username,
        "sasl_sender": f.sasl_sender,
        "ccert_subject": "",
        "ccert_issuer": "",
        "ccert_fingerprint": "",
        "ccert_pubkey_fingerprint": "",
        "encryption_protocol": f.encryption_protocol,
        "encryption_cipher": f.encryption_cipher,
        "encryption_keysize": str(f.encryption_keysize),
        "policy_context": endpoint.policy_context,
        "compatibility_level": "3.6",
        "mail_version": "3.7.0",
    }


def _policy_check(endpoint: PolicyEndpoint) -> CheckFn:
    async def check(ev: Evaluation, ctx: ListContext) -> Status:
        services = ev.services_or_fail()
        try:
            action = await services.policy_request(endpoint, policy_attributes(ev, endpoint))
        except PolicyError as e:
            ev.note("warning", f"problem talking to server {endpoint.name}: {e}")
            action = endpoint.default_action
        result = check_table_result(ev, endpoint.name, action, "policy query", ctx)
        return result if isinstance(result, int) else await result

    return check


_SIMPLE_CHECKS: Mapping[str, CheckFn] = {
    "permit": _permit,
    "reject": _reject_all,
    "defer": _defer_all,
    "defer_if_permit": _defer_if_permit,
    "defer_if_reject": _defer_if_reject,
    "reject_unauth_pipelining": _reject_unauth_pipelining,
    "reject_plaintext_session": _reject_plaintext_session,
    "permit_mynetworks": _permit_mynetworks,
    "permit_sasl_authenticated": _permit_sasl_authenticated,
    "permit_auth_destination": _permit_auth_destination,
    "reject_unauth_destination": _unauth_destination(defer=False),
    "defer_unauth_destination": _unauth_destination(defer=True),
    "reject_invalid_helo_hostname": _helo_invalid,
    "reject_invalid_hostname": _helo_invalid,
    "reject_non_fqdn_helo_hostname": _helo_non_fqdn,
    "reject_non_fqdn_hostname": _helo_non_fqdn,
    "reject_unknown_helo_hostname": _helo_unknown,
    "reject_unknown_hostname": _helo_unknown,
    "reject_non_fqdn_sender": _non_fqdn_address("sender"),
    "reject_non_fqdn_recipient": _non_fqdn_address("recipient"),
    "reject_unknown_sender_domain": _unknown_domain("sender"),
    "reject_unknown_address": _unknown_domain("sender"),
    "reject_unknown_recipient_domain": _unknown_domain("recipient"),
    "reject_unlisted_recipient": _unlisted("recipient"),
    "check_recipient_maps": _unlisted("recipient"),
    "reject_unlisted_sender": _unlisted("sender"),
    "reject_unverified_recipient": _unverified("recipient"),
    "reject_unverified_sender": _unverified("sender"),
    "reject_multi_recipient_bounce": _multi_recipient_bounce,
}
