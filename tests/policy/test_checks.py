"""The decision points: smtpd_delay_reject, the order of lists, carried
deferrals, DATA and end-of-data, and the notes each decision logs."""

from __future__ import annotations

from tests.policy.fakes import FakeDns, FakeServices, facts, make_policy, run_sync


def test_delay_reject_reports_client_rejects_at_rcpt() -> None:
    """With smtpd_delay_reject = yes a client reject answers RCPT TO, and the
    log note shows the recipient's context."""
    policy = make_policy(client=["check_client_access inline:{192.0.2.10=REJECT}"])
    decision = run_sync(policy.check_rcpt(facts(), None))
    assert decision.verdict.reply is not None
    assert decision.verdict.reply.code == 554
    assert [n.whatsup for n in decision.notes] == ["reject"]
    assert decision.verdict.rule == "check_client_access inline:{192.0.2.10=REJECT}"


def test_without_delay_reject_each_stage_answers_for_itself() -> None:
    """smtpd_delay_reject = no: client at connect, HELO at HELO, sender at
    MAIL; RCPT then runs only the relay and recipient lists."""
    policy = make_policy(
        delay_reject=False,
        client=["check_client_access inline:{192.0.2.66=REJECT}"],
        helo=["reject_non_fqdn_helo_hostname"],
        sender=["reject_non_fqdn_sender"],
    )
    assert run_sync(policy.check_client(facts(client="192.0.2.66"), None)).verdict.refused
    assert not run_sync(policy.check_client(facts(), None)).verdict.refused
    helo = run_sync(policy.check_helo(facts(helo="bare"), None, "EHLO"))
    assert helo.verdict.reply is not None and helo.verdict.reply.code == 504
    mail = run_sync(policy.check_mail(facts(sender="nodomain"), None))
    assert mail.verdict.reply is not None and "Sender address rejected" in mail.verdict.reply.text
    # At RCPT the sender list is not run again.
    assert not run_sync(policy.check_rcpt(facts(sender="nodomain"), None)).verdict.refused


def test_relay_then_recipient_lists_each_must_pass() -> None:
    """A permit in smtpd_relay_restrictions does not skip
    smtpd_recipient_restrictions."""
    policy = make_policy(relay=["permit"], recipient=["reject"])
    decision = run_sync(policy.check_rcpt(facts(), None))
    assert decision.verdict.reply is not None
    assert decision.verdict.reply.one_line() == (
        "554 5.7.1 <bob@relay.test>: Recipient address rejected: Access denied"
    )


def test_defer_if_permit_from_mail_stage_carries_to_rcpt() -> None:
    """Without delay_reject, DNS trouble at MAIL FROM defers the first
    recipient that would be accepted."""
    dns = FakeDns()
    dns.retry.add("flaky.test")
    services = FakeServices(dns)
    policy = make_policy(delay_reject=False, sender=["reject_unknown_sender_domain"])
    f = facts(sender="a@flaky.test")
    mail = run_sync(policy.check_mail(f, services))
    assert not mail.verdict.refused
    rcpt = run_sync(policy.check_rcpt(f, services))
    assert rcpt.verdict.reply is not None
    assert rcpt.verdict.reply.one_line() == (
        "450 4.1.8 <a@flaky.test>: Sender address rejected: Domain not found"
    )


def test_data_and_end_of_data_names() -> None:
    """DATA and end-of-data restrictions speak of <DATA> and <END-OF-MESSAGE>;
    with several recipients the recipient is not in the log context."""
    policy = make_policy(data=["reject_multi_recipient_bounce"], end_of_data=["reject"])
    f = facts(sender="", rcpt_count=2)
    data = run_sync(policy.check_data(f, None, "DATA"))
    assert data.verdict.reply is not None
    assert data.verdict.reply.one_line() == (
        "550 5.5.3 <DATA>: Data command rejected: Multi-recipient bounce"
    )
    eod = run_sync(policy.check_eod(facts(), None))
    assert eod.verdict.reply is not None
    assert eod.verdict.reply.one_line() == (
        "554 5.7.1 <END-OF-MESSAGE>: End-of-data rejected: Access denied"
    )
    assert f.recipient == "bob@relay.test"  # restored after the check


def test_discard_skips_later_recipients_checks() -> None:
    """After DISCARD the rest of the transaction is not checked (Postfix
    state->discard)."""
    policy = make_policy(
        recipient=["check_recipient_access inline:{first@relay.test=DISCARD}", "reject"]
    )
    f = facts(recipient="first@relay.test")
    assert not run_sync(policy.check_rcpt(f, None)).verdict.refused
    f.recipient = "second@relay.test"
    assert not run_sync(policy.check_rcpt(f, None)).verdict.refused
    f.new_transaction()
    f.sender, f.recipient = "alice@example.org", "second@relay.test"
    assert run_sync(policy.check_rcpt(f, None)).verdict.refused
