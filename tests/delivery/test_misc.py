"""Tests for mta.delivery.mtasts (RFC 8461 parsing and MX matching),
mta.delivery.bcc and the error(8) reply of the agent."""

from __future__ import annotations

from pathlib import Path

import pytest

from mta.delivery.agent import _error_reply
from mta.delivery.bcc import BccSettings, extra_recipients
from mta.delivery.mtasts import StsError, mx_allowed, parse_policy, parse_txt
from mta.reply import Reply
from mta.tables import open_table


def test_sts_txt_record() -> None:
    """Exactly one v=STSv1 record with a valid id."""
    assert parse_txt(["v=STSv1; id=20160831085700Z;"]) == "20160831085700Z"
    assert parse_txt(["v=STSv1; id=a", "v=STSv1; id=b"]) is None
    assert parse_txt(["v=spf1 -all"]) is None
    assert parse_txt(["v=STSv1; id=not valid!"]) is None


def test_sts_policy_and_mx_patterns() -> None:
    """The policy file's fields; *.domain matches one extra label only."""
    policy = parse_policy(
        "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n"
        "mx: *.example.net\r\nmax_age: 604800\r\n"
    )
    assert (policy.mode, policy.max_age) == ("enforce", 604800)
    assert mx_allowed(policy, "mail.example.com.")
    assert mx_allowed(policy, "mx1.example.net")
    assert not mx_allowed(policy, "a.b.example.net")
    assert not mx_allowed(policy, "example.net")
    with pytest.raises(StsError):
        parse_policy("version: STSv2\nmode: enforce\nmx: a\nmax_age: 1\n")
    with pytest.raises(StsError):
        parse_policy("version: STSv1\nmode: enforce\nmax_age: 1\n")


def test_bcc_sources_dedup_and_null_sender() -> None:
    """Sender map, recipient map and always_bcc, each address once and
    none that is already a recipient; the null sender has no sender BCC."""
    base = Path(".")
    settings = BccSettings(
        always_bcc="archive@example.org",
        sender_bcc_maps=(open_table("inline:{boss@example.org=audit@example.org}", base_dir=base),),
        recipient_bcc_maps=(
            open_table(
                "inline:{example.net=copies@example.org, x@example.com=archive@example.org}",
                base_dir=base,
            ),
        ),
    )
    extra = extra_recipients(settings, "boss@example.org", ["a@example.net", "x@example.com"])
    assert extra == ["audit@example.org", "copies@example.org", "archive@example.org"]
    assert extra_recipients(settings, "", ["archive@example.org"]) == []
    assert extra_recipients(BccSettings(), "a@b", ["c@d"]) == []


def test_error_transport_reply() -> None:
    """error:TEXT bounces with 5.0.0 or the status it starts with; retry defers."""
    assert _error_reply("5.1.1 gone", retry=False) == Reply(550, "1.1", "gone")
    assert _error_reply("no such user", retry=False) == Reply(550, "0.0", "no such user")
    assert _error_reply("4.4.1 later", retry=False).code == 450
    assert _error_reply("5.1.1 gone", retry=True).code == 450
