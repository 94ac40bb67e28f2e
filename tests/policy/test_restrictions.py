"""Restriction lists: compilation errors, access(5) results, the pseudo
restrictions, DNS lists, policy delegation and verification, as Postfix
smtpd_check.c does them — checked through the RCPT TO decision."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from twisted.internet import defer

from mta.policy.restrictions import (
    Codes,
    PolicySettings,
    RestrictionError,
    dsn_fix,
)
from mta.policy.verify import VerifyAnswer
from mta.tables import open_table
from tests.policy.fakes import (
    FakeDns,
    FakeServices,
    domains,
    facts,
    failing_policy,
    make_policy,
    run_sync,
)


def rcpt(policy, f=None, services=None):  # type: ignore[no-untyped-def]
    return run_sync(policy.check_rcpt(f or facts(), services))


def reply_of(decision) -> str:  # type: ignore[no-untyped-def]
    verdict = decision.verdict
    return verdict.reply.one_line() if verdict.reply is not None else verdict.action


# -- compilation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["reject_everything"], 'unknown smtpd restriction: "reject_everything"'),
        (["check_sender_access"], "restriction check_sender_access needs an argument"),
        (["reject_rbl_client"], "needs an argument"),
        (["reject_rbl_client", "zen.test=127.0.0.300"], "bad"),
        (["check_policy_service", "tcp:1.2.3.4:1"], "need inet:host:port or unix:path"),
        (["check_policy_service", "{inet:127.0.0.1:9, nosuch=1}"], "unknown policy service"),
        (["sleep", "x"], "followed by number"),
        (["check_client_access", "nosuch:/x"], "unsupported lookup table type: nosuch"),
    ],
)
def test_compile_errors_name_the_problem(items: list[str], message: str) -> None:
    """A bad list is refused when the configuration is loaded, saying why."""
    with pytest.raises(RestrictionError, match=message.replace("(", r"\(").replace("?", r"\?")):
        make_policy(sender=items)


def test_bad_table_line_names_file_and_line(tmp_path: Path) -> None:
    """A regexp that does not compile is reported with its file and line."""
    (tmp_path / "checks").write_text("/ok/ OK\n/(unclosed/ REJECT\n")
    with pytest.raises(RestrictionError) as info:
        make_policy(tmp_path, sender=["check_sender_access regexp:checks"])
    assert f"{tmp_path / 'checks'}:2: regexp map: bad pattern" in str(info.value)


def test_bare_table_needs_an_access_check_in_data_restrictions() -> None:
    """A bare type:name means the list's own check; DATA has none."""
    with pytest.raises(RestrictionError, match="specify one of"):
        make_policy(data=["inline:{a=b}"])
    policy = make_policy(sender=["inline:{{alice@example.org=REJECT no}}"])
    assert reply_of(rcpt(policy)) == "554 5.7.1 <alice@example.org>: Sender address rejected: no"


# -- access results --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("REJECT", "554 5.7.1 <alice@example.org>: Sender address rejected: Access denied"),
        ("REJECT go away", "554 5.7.1 <alice@example.org>: Sender address rejected: go away"),
        ("reject 5.7.0 custom", "554 5.7.0 <alice@example.org>: Sender address rejected: custom"),
        ("DEFER", "450 4.7.1 <alice@example.org>: Sender address rejected: Access denied"),
        ("550 no such", "550 5.7.1 <alice@example.org>: Sender address rejected: no such"),
        ("421 4.4.2 later", "421 4.4.2 <alice@example.org>: Sender address rejected: later"),
        # smtpd_dsn_fix: a recipient DSN in a sender reject becomes a sender DSN
        ("550 5.1.1 unknown", "550 5.1.7 <alice@example.org>: Sender address rejected: unknown"),
        ("OK", "dunno"),  # permit ends the list; RCPT then passes
        ("DUNNO", "dunno"),
        ("12345", "dunno"),
        ("RELAY", "dunno"),
        (
            "reject_non_fqdn_helo_hostname, reject",
            "554 5.7.1 <alice@example.org>: Sender address rejected: Access denied",
        ),
        ("inline:{x=y}", "451 4.3.5 Server configuration error"),
        ("no_such_restriction", "451 4.3.5 Server configuration error"),
    ],
)
def test_access_results(value: str, expected: str) -> None:
    """Each access(5) result answers as Postfix does (reply code, DSN, text)."""
    policy = make_policy(sender=[f"check_sender_access inline:{{{{alice@example.org={value}}}}}"])
    assert reply_of(rcpt(policy)) == expected


def test_ok_ends_only_its_own_list() -> None:
    """A permit in the sender list does not skip the relay check."""
    policy = make_policy(sender=["check_sender_access inline:{alice@example.org=OK}"])
    decision = rcpt(policy, facts(recipient="bob@elsewhere.test"))
    assert reply_of(decision) == "554 5.7.1 <bob@elsewhere.test>: Relay access denied"
    assert decision.verdict.rule == "reject_unauth_destination"


def test_search_order_and_client_reply_name() -> None:
    """check_client_access tries the name, then the address and its prefixes;
    its reply speaks of the client even from the recipient list."""
    policy = make_policy(recipient=["check_client_access inline:{192.0.2=REJECT}"])
    decision = rcpt(policy, facts(client="192.0.2.10"))
    assert reply_of(decision) == (
        "554 5.7.1 <unknown[192.0.2.10]>: Client host rejected: Access denied"
    )
    assert reply_of(rcpt(policy, facts(client="198.51.100.1"))) == "dunno"


def test_cidr_and_pcre_tables(tmp_path: Path) -> None:
    """Pattern tables get the full key: cidr for clients, pcre for senders."""
    (tmp_path / "clients.cidr").write_text("192.0.2.0/24 REJECT bad net\n")
    (tmp_path / "senders.pcre").write_text("/^(.+)@spam\\.test$/ REJECT user $1 is a spammer\n")
    policy = make_policy(
        tmp_path,
        client=["check_client_access cidr:clients.cidr"],
        sender=["check_sender_access pcre:senders.pcre"],
    )
    assert reply_of(rcpt(policy, facts(client="192.0.2.99"))).endswith("rejected: bad net")
    decision = rcpt(policy, facts(client="203.0.113.1", sender="joe@spam.test"))
    assert reply_of(decision).endswith("Sender address rejected: user joe is a spammer")
    assert (
        reply_of(rcpt(policy, facts(client="203.0.113.1", sender="joe@sub.spam.test"))) == "dunno"
    )


def test_null_sender_uses_the_null_key() -> None:
    """<> is looked up as smtpd_null_access_lookup_key only."""
    policy = make_policy(sender=["check_sender_access inline:{{<>=REJECT no bounces}}"])
    assert reply_of(rcpt(policy, facts(sender=""))) == (
        "554 5.7.1 <>: Sender address rejected: no bounces"
    )


# -- pseudo restrictions ------------------------------------------------------------------


def test_warn_if_reject_logs_and_goes_on() -> None:
    """The next restriction's reject becomes a reject_warning note."""
    policy = make_policy(recipient=["warn_if_reject", "reject_non_fqdn_recipient"])
    decision = rcpt(policy, facts(recipient="bob"))
    assert decision.verdict.action == "dunno"
    [note] = decision.notes
    assert note.whatsup == "reject_warning"
    assert note.text == "504 5.5.2 <bob>: Recipient address rejected: need fully-qualified address"
    assert note.rule == "reject_non_fqdn_recipient"


def test_defer_if_permit_turns_a_later_permit_into_450() -> None:
    """DNS trouble (defer_if_permit) defers a recipient that would pass, but
    a later reject still rejects."""
    dns = FakeDns()
    dns.retry.add("flaky.test")
    services = FakeServices(dns)
    policy = make_policy(sender=["reject_unknown_sender_domain"], recipient=["permit"])
    decision = run_sync_io(policy.check_rcpt(facts(sender="a@flaky.test"), services))
    assert (
        reply_of(decision) == "450 4.1.8 <a@flaky.test>: Sender address rejected: Domain not found"
    )
    policy = make_policy(sender=["reject_unknown_sender_domain"], recipient=["reject"])
    decision = run_sync_io(policy.check_rcpt(facts(sender="a@flaky.test"), services))
    assert reply_of(decision) == (
        "554 5.7.1 <bob@relay.test>: Recipient address rejected: Access denied"
    )


def test_defer_if_reject_turns_a_later_reject_into_450() -> None:
    """defer_if_reject answers 450 with its own text instead of the 5xx."""
    policy = make_policy(recipient=["defer_if_reject", "reject"])
    assert reply_of(rcpt(policy)) == (
        "450 4.7.0 <bob@relay.test>: Recipient address rejected: defer_if_reject requested"
    )


def test_message_actions_are_recorded_not_replied() -> None:
    """HOLD, PREPEND, REDIRECT, FILTER and BCC let the mail through and
    leave their effect for the server; each is logged."""
    table = (
        "check_recipient_access inline:{{bob@relay.test = HOLD}}, "
        "check_sender_access inline:{{alice@example.org=PREPEND X-Tag: yes}}, "
        "check_helo_access inline:{{client.example.org=REDIRECT boss@example.org}}, "
        "check_client_access inline:{{192.0.2.10=FILTER smtp:[127.0.0.1]:10025}}, "
        "check_recipient_access inline:{{bob@relay.test=BCC archive@example.org}}"
    )
    f = facts()
    decision = rcpt(make_policy(recipient=[table]), f)
    assert decision.verdict.action == "dunno"
    assert f.effects.hold == "<bob@relay.test>: Recipient address triggers HOLD action"
    assert f.effects.prepend == ["X-Tag: yes"]
    assert f.effects.redirect == "boss@example.org"
    assert f.effects.filter == "smtp:[127.0.0.1]:10025"
    assert f.effects.bcc == ["archive@example.org"]
    assert [n.whatsup for n in decision.notes] == ["hold", "redirect", "filter", "bcc"]


def test_discard_permits_and_skips_what_follows() -> None:
    """DISCARD claims success: later restrictions (even reject) do not run."""
    f = facts()
    policy = make_policy(
        sender=["check_sender_access inline:{alice@example.org=DISCARD}"], recipient=["reject"]
    )
    decision = rcpt(policy, f)
    assert decision.verdict.action == "dunno"
    assert f.effects.discard == "<alice@example.org>: Sender address triggers DISCARD action"


def test_message_actions_need_a_transaction() -> None:
    """Without MAIL FROM (smtpd_delay_reject = no at HELO) HOLD is skipped
    with Postfix's warning."""
    f = facts(sender=None)
    policy = make_policy(
        delay_reject=False, client=["check_client_access inline:{192.0.2.10=HOLD}"]
    )
    decision = run_sync(policy.check_client(f, None))
    assert f.effects.hold is None
    assert "action HOLD is always skipped" in decision.notes[0].text


def test_reject_unauth_pipelining() -> None:
    """A client that talked ahead where it must not is refused at DATA."""
    policy = make_policy(data=["reject_unauth_pipelining"])
    ok = run_sync(policy.check_data(facts(), None, "DATA"))
    assert ok.verdict.action == "dunno"
    bad = run_sync(policy.check_data(facts(illegal_pipelining=True), None, "DATA"))
    assert reply_of(bad) == (
        "503 5.5.0 <DATA>: Data command rejected: Improper use of SMTP command pipelining"
    )


@pytest.mark.parametrize(
    ("helo", "restriction", "expected"),
    [
        (
            "bad_name!",
            "reject_invalid_helo_hostname",
            "501 5.5.2 <bad_name!>: Helo command rejected: Invalid name",
        ),
        (
            "[300.1.1.1]",
            "reject_invalid_helo_hostname",
            "501 5.5.2 <[300.1.1.1]>: Helo command rejected: invalid ip address",
        ),
        ("[192.0.2.1]", "reject_invalid_helo_hostname", "dunno"),
        (
            "localhost",
            "reject_non_fqdn_helo_hostname",
            "504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname",
        ),
        ("mx.example.org.", "reject_non_fqdn_helo_hostname", "dunno"),
        ("mx.example.org", "reject_invalid_helo_hostname", "dunno"),
    ],
)
def test_helo_syntax(helo: str, restriction: str, expected: str) -> None:
    """HELO name checks, with Postfix's codes 501/504 and texts."""
    policy = make_policy(helo=[restriction])
    assert reply_of(rcpt(policy, facts(helo=helo))) == expected


def test_dsn_fix() -> None:
    """Address DSNs follow what is rejected; others are left alone."""
    assert dsn_fix("5.1.1", "Sender address") == "5.1.7"
    assert dsn_fix("4.1.2", "Sender address") == "4.1.8"
    assert dsn_fix("5.1.7", "Recipient address") == "5.1.3"
    assert dsn_fix("5.1.1", "Client host") == "5.0.0"
    assert dsn_fix("5.7.1", "Sender address") == "5.7.1"


def test_reply_codes_come_from_settings() -> None:
    """access_map_reject_code and friends change the codes."""
    st = PolicySettings(domains=domains(), codes=Codes(access_map_reject_code=550))
    policy = make_policy(
        settings=st, sender=["check_sender_access inline:{alice@example.org=REJECT}"]
    )
    assert reply_of(rcpt(policy)).startswith("550 5.7.1 ")


def test_soft_bounce_defers_rejects() -> None:
    """soft_bounce turns restriction 5xx replies into 4xx (class and DSN)."""
    st = PolicySettings(domains=domains(), soft_bounce=True)
    policy = make_policy(settings=st, recipient=["reject"])
    assert reply_of(rcpt(policy)).startswith("454 4.7.1 ")


def test_postmaster_is_always_accepted() -> None:
    """RFC 5321 4.5.1: unqualified postmaster passes every restriction."""
    policy = make_policy(recipient=["reject"])
    assert rcpt(policy, facts(recipient="Postmaster")).verdict.action == "dunno"


def test_unlisted_relay_recipient(tmp_path: Path) -> None:
    """relay_recipient_maps: unknown relay recipients get 550 5.1.1 at the
    end of RCPT (smtpd_reject_unlisted_recipient), known ones pass, with
    recipient_delimiter extensions stripped."""
    table = open_table("inline:{bob@relay.test=x}", base_dir=tmp_path)
    st = PolicySettings(domains=domains(), relay_recipient_maps=(table,), recipient_delimiter="+")
    policy = make_policy(settings=st)
    assert rcpt(policy, facts(recipient="bob@relay.test")).verdict.action == "dunno"
    assert rcpt(policy, facts(recipient="bob+x@relay.test")).verdict.action == "dunno"
    decision = rcpt(policy, facts(recipient="eve@relay.test"))
    assert reply_of(decision) == (
        "550 5.1.1 <eve@relay.test>: Recipient address rejected: "
        "User unknown in relay recipient table"
    )
    off = make_policy(settings=st, reject_unlisted_recipient=False)
    assert rcpt(off, facts(recipient="eve@relay.test")).verdict.action == "dunno"
    explicit = make_policy(
        settings=st, reject_unlisted_recipient=False, recipient=["reject_unlisted_recipient"]
    )
    assert rcpt(explicit, facts(recipient="eve@relay.test")).verdict.action == "reject"


# -- I/O restrictions ----------------------------------------------------------------------


def run_sync_io(coro):  # type: ignore[no-untyped-def]
    """Fake services answer at once, so even I/O checks finish now."""
    return run_sync(coro)


def test_plain_lists_never_wait_and_io_lists_do() -> None:
    """A decision without I/O completes synchronously; a DNS check waits for
    its answer, and the verdict comes when it does."""
    dns = FakeDns({("10.2.0.192.zen.test", "A"): ["127.0.0.2"]})
    dns.pending = []
    services = FakeServices(dns)
    policy = make_policy(client=["reject_rbl_client zen.test"])
    assert policy.needs_io
    d = defer.Deferred.fromCoroutine(policy.check_rcpt(facts(), services))
    assert not d.called
    while dns.pending:
        dns.pending.pop(0).callback(None)
    assert d.called
    assert reply_of(d.result).startswith("554 5.7.1 Service unavailable; Client host [192.0.2.10]")
    assert not make_policy(sender=["reject_non_fqdn_sender"]).needs_io


def test_rbl_client_default_reply_with_txt() -> None:
    """A listed client gets default_rbl_reply with the list's TXT reason."""
    dns = FakeDns(
        {
            ("10.2.0.192.zen.test", "A"): ["127.0.0.2"],
            ("10.2.0.192.zen.test", "TXT"): ["listed for spam"],
        }
    )
    policy = make_policy(client=["reject_rbl_client zen.test"])
    decision = run_sync_io(policy.check_rcpt(facts(), FakeServices(dns)))
    assert reply_of(decision) == (
        "554 5.7.1 Service unavailable; Client host [192.0.2.10] blocked using zen.test; "
        "listed for spam"
    )
    assert decision.verdict.rule == "reject_rbl_client zen.test"


def test_rbl_filters_templates_and_failures(tmp_path: Path) -> None:
    """=d.d.d.d filters answers; rbl_reply_maps replaces the template; a DNS
    failure lets the client through with a warning."""
    dns = FakeDns({("10.2.0.192.zen.test", "A"): ["127.0.0.4"]})
    services = FakeServices(dns)
    no = make_policy(client=["reject_rbl_client zen.test=127.0.0.[2..3]"])
    assert run_sync_io(no.check_rcpt(facts(), services)).verdict.action == "dunno"
    yes = make_policy(client=["reject_rbl_client zen.test=127.0.0.[2..11]"])
    assert run_sync_io(yes.check_rcpt(facts(), services)).verdict.action == "reject"
    maps = open_table(
        "inline:{{zen.test=450 4.7.1 $client_address is on $rbl_domain ($rbl_class)}}",
        base_dir=tmp_path,
    )
    st = PolicySettings(domains=domains(), rbl_reply_maps=(maps,))
    custom = make_policy(settings=st, client=["reject_rbl_client zen.test"])
    decision = run_sync_io(custom.check_rcpt(facts(), services))
    assert reply_of(decision) == "450 4.7.1 192.0.2.10 is on zen.test (Client host)"
    dns.retry.add("10.2.0.192.zen.test")
    dns.records.clear()
    flaky = make_policy(client=["reject_rbl_client zen.test"])
    decision = run_sync_io(flaky.check_rcpt(facts(), services))
    assert decision.verdict.action == "dunno"
    assert decision.notes[0].whatsup == "warning"


def test_dnswl_and_rhsbl() -> None:
    """permit_dnswl_client permits a listed client (not an unauthorized
    recipient); reject_rhsbl_sender looks up the sender domain."""
    dns = FakeDns(
        {
            ("10.2.0.192.wl.test", "A"): ["127.0.10.1"],
            ("spam.test.dbl.test", "A"): ["127.0.1.2"],
        }
    )
    services = FakeServices(dns)
    policy = make_policy(client=["permit_dnswl_client wl.test", "reject"])
    assert run_sync_io(policy.check_rcpt(facts(), services)).verdict.action == "dunno"
    rhs = make_policy(sender=["reject_rhsbl_sender dbl.test"])
    decision = run_sync_io(rhs.check_rcpt(facts(sender="x@spam.test"), services))
    assert reply_of(decision) == (
        "554 5.7.1 Service unavailable; Sender address [x@spam.test] blocked using dbl.test"
    )


def test_unknown_domains() -> None:
    """reject_unknown_sender_domain: NXDOMAIN → 450 4.1.8, null MX → 550
    4.7.27; a domain with an MX or an address passes; local domains are
    not looked up."""
    dns = FakeDns(
        {
            ("mx.test", "MX"): ["10 mail.mx.test."],
            ("a.test", "A"): ["192.0.2.1"],
            ("null.test", "MX"): ["0 ."],
        }
    )
    services = FakeServices(dns)
    policy = make_policy(sender=["reject_unknown_sender_domain"])

    def check(sender: str) -> str:
        return reply_of(run_sync_io(policy.check_rcpt(facts(sender=sender), services)))

    assert check("x@mx.test") == "dunno"
    assert check("x@a.test") == "dunno"
    assert (
        check("x@none.test") == "450 4.1.8 <x@none.test>: Sender address rejected: Domain not found"
    )
    assert check("x@null.test") == (
        "550 5.7.27 <x@null.test>: Sender address rejected: Domain null.test does not accept "
        "mail (nullMX)"
    )
    dns.queries.clear()
    assert check("x@mta.test") == "dunno"
    assert dns.queries == []


def test_policy_service_action_and_attributes() -> None:
    """The policy server's action is an access result; the request carries
    the Postfix attributes."""
    services = FakeServices()
    services.policy = lambda e, a: "DEFER_IF_PERMIT Greylisted" if a["recipient"] else "DUNNO"
    policy = make_policy(recipient=["check_policy_service inet:127.0.0.1:10023"])
    decision = run_sync_io(policy.check_rcpt(facts(), services))
    assert (
        reply_of(decision) == "450 4.7.1 <bob@relay.test>: Recipient address rejected: Greylisted"
    )
    request = services.policy_requests[0]
    assert request["request"] == "smtpd_access_policy"
    assert request["protocol_state"] == "RCPT"
    assert request["client_address"] == "192.0.2.10"
    assert request["sender"] == "alice@example.org"
    assert request["recipient"] == "bob@relay.test"
    assert request["helo_name"] == "client.example.org"


def test_policy_service_down_takes_the_default_action() -> None:
    """A server that cannot be asked: smtpd_policy_service_default_action
    (451 4.3.5 by default, or a per-service override)."""
    services = FakeServices()
    services.policy = failing_policy
    policy = make_policy(recipient=["check_policy_service inet:127.0.0.1:10023"])
    decision = run_sync_io(policy.check_rcpt(facts(), services))
    assert reply_of(decision) == (
        "451 4.3.5 <bob@relay.test>: Recipient address rejected: Server configuration problem"
    )
    assert "problem talking to server inet:127.0.0.1:10023" in decision.notes[0].text
    lenient = make_policy(
        recipient=["check_policy_service { inet:127.0.0.1:10023, default_action=DUNNO }"]
    )
    assert run_sync_io(lenient.check_rcpt(facts(), services)).verdict.action == "dunno"


@pytest.mark.parametrize(
    ("answer", "code", "expected"),
    [
        (VerifyAnswer("ok", "250 ok"), 450, "dunno"),
        (
            VerifyAnswer("bounce", "host x said: 550 no such user"),
            450,
            "450 4.1.1 <bob@relay.test>: Recipient address rejected: unverified address: "
            "host x said: 550 no such user",
        ),
        (
            VerifyAnswer("bounce", "host x said: 550 no such user"),
            550,
            "550 5.1.1 <bob@relay.test>: Recipient address rejected: undeliverable address: "
            "host x said: 550 no such user",
        ),
        (
            VerifyAnswer("todo", "Address verification in progress"),
            550,
            "450 4.1.1 <bob@relay.test>: Recipient address rejected: unverified address: "
            "Address verification in progress",
        ),
    ],
)
def test_unverified_recipient(answer: VerifyAnswer, code: int, expected: str) -> None:
    """unverified_recipient_reject_code (450 by default) for a refused
    address; the defer code while the probe runs."""
    services = FakeServices()
    services.verify_answers["bob@relay.test"] = answer
    st = PolicySettings(
        domains=domains(), codes=replace(Codes(), unverified_recipient_reject_code=code)
    )
    policy = make_policy(settings=st, recipient=["reject_unverified_recipient"])
    f = facts()
    decision = run_sync_io(policy.check_rcpt(f, services))
    if answer.status == "todo":
        # defer_if_permit: the implicit permit at the end becomes the 450.
        assert reply_of(decision) == expected
    else:
        assert reply_of(decision) == expected
