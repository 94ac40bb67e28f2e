"""Delivery status notifications as RFC 3464/3461/6522 and Postfix's
bounce(5) templates say: structure, per-message and per-recipient fields,
what comes back of the original, postmaster copies, reports."""

from __future__ import annotations

import email
import email.message
import email.policy

from hypothesis import given
from hypothesis import strategies as st

from mta.bounce import (
    NoticeSettings,
    build_notice,
    build_report,
    describe,
    original_recipient,
    xtext_decode,
)
from mta.envelope import Envelope, RcptState, Recipient
from mta.reply import Reply

ORIGINAL = b"From: a@example.org\r\nSubject: original\r\nMessage-Id: <o@x>\r\n\r\nline one\r\n"
SETTINGS = NoticeSettings("mx.example.com", delay_warning_time=4 * 3600, queue_lifetime=5 * 86400)


def envelope(**kw: object) -> Envelope:
    base: dict[str, object] = dict(
        queue_id="4Qx9ABCDEF",
        sender="alice@example.org",
        recipients=[],
        arrival_time=1_700_000_000.0,
        size=len(ORIGINAL),
    )
    base.update(kw)
    return Envelope(**base)  # type: ignore[arg-type]


def failed(address: str = "bob@example.net", **kw: object) -> Recipient:
    base: dict[str, object] = dict(
        state=RcptState.BOUNCED,
        reply=Reply(550, "1.1", "<bob@example.net>: Recipient address rejected"),
        relay="mx.example.net[192.0.2.7]:25",
    )
    base.update(kw)
    return Recipient(address, **base)  # type: ignore[arg-type]


def parts(notice: bytes) -> list[email.message.Message]:
    msg = email.message_from_bytes(notice)
    assert msg.is_multipart()
    return list(msg.get_payload())  # type: ignore[arg-type]


def status_groups(notice: bytes) -> list[dict[str, str]]:
    report = parts(notice)[1]
    return [{k.lower(): str(v) for k, v in g.items()} for g in report.get_payload()]  # type: ignore[union-attr]


def test_failure_notice_structure() -> None:
    """A failure notice: multipart/report of delivery-status, the three
    parts, Postfix's headers and template, the original returned whole."""
    n = build_notice(
        envelope=envelope(),
        recipients=[failed()],
        action="failed",
        original=ORIGINAL,
        settings=SETTINGS,
        now=1_700_000_100.0,
    )
    msg = email.message_from_bytes(n)
    assert msg["From"] == "MAILER-DAEMON@mx.example.com (Mail Delivery System)"
    assert msg["To"] == "alice@example.org"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    human, report, returned = parts(n)
    text = human.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "This is the mail system at host mx.example.com." in text
    assert "I'm sorry to have to inform you that your message could not" in text
    assert "The mail system" in text
    assert (
        "<bob@example.net>: host mx.example.net[192.0.2.7] said: 550 5.1.1\n"
        "    <bob@example.net>: Recipient address rejected" in text.replace("\r\n", "\n")
    )
    assert report.get_content_type() == "message/delivery-status"
    assert returned.get_content_type() == "message/rfc822"
    assert returned["Content-Description"] == "Undelivered Message"
    assert n.endswith(b"line one\r\n\r\n--" + msg.get_boundary().encode() + b"--\r\n")  # type: ignore[union-attr]


def test_delivery_status_fields() -> None:
    """Per message: Reporting-MTA, queue id, sender, Arrival-Date, the ENVID
    decoded; per recipient: Final-/Original-Recipient (ORCPT decoded),
    Action, Status, Remote-MTA, Diagnostic-Code of type smtp."""
    n = build_notice(
        envelope=envelope(envid="abc+2Bdef"),
        recipients=[failed(orcpt="rfc822;Bob+2Bx@example.net")],
        action="failed",
        original=ORIGINAL,
        settings=SETTINGS,
        now=1_700_000_100.0,
    )
    per_message, rcpt = status_groups(n)
    assert per_message["original-envelope-id"] == "abc+def"
    assert per_message["reporting-mta"] == "dns; mx.example.com"
    assert per_message["x-postfix-queue-id"] == "4Qx9ABCDEF"
    assert per_message["x-postfix-sender"] == "rfc822; alice@example.org"
    assert "arrival-date" in per_message
    assert rcpt == {
        "final-recipient": "rfc822; bob@example.net",
        "original-recipient": "rfc822;Bob+x@example.net",
        "action": "failed",
        "status": "5.1.1",
        "remote-mta": "dns; mx.example.net",
        "diagnostic-code": "smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected",
    }
    assert "(expanded from <Bob+x@example.net>)" in n.decode()


def test_local_failure_has_x_postfix_diagnostic() -> None:
    """A reply mta made itself (connection refused) is X-Postfix, not smtp,
    and the human text does not claim a host said it."""
    r = failed(reply=Reply(451, "4.1", "connect to mx[192.0.2.1]:25: Connection refused"))
    n = build_notice(
        envelope=envelope(),
        recipients=[r],
        action="failed",
        original=ORIGINAL,
        settings=SETTINGS,
        now=0,
    )
    [_, g] = status_groups(n)
    assert g["diagnostic-code"] == "X-Postfix; connect to mx[192.0.2.1]:25: Connection refused"
    assert g["status"] == "4.4.1"
    assert "said:" not in parts(n)[0].get_payload()  # type: ignore[operator]


def test_ret_hdrs_and_size_limit_return_headers_only() -> None:
    """RET=HDRS, or an original over bounce_size_limit: text/rfc822-headers
    with the header section only."""
    for env, limit in ((envelope(ret="HDRS"), 50000), (envelope(), 10)):
        n = build_notice(
            envelope=env,
            recipients=[failed()],
            action="failed",
            original=ORIGINAL,
            settings=NoticeSettings("mx.example.com", bounce_size_limit=limit),
            now=0,
        )
        returned = parts(n)[2]
        assert returned.get_content_type() == "text/rfc822-headers"
        assert returned["Content-Description"] == "Undelivered Message Headers"
        assert b"Subject: original" in n and b"line one" not in n


def test_delay_warning_template_and_will_retry_until() -> None:
    """The delay warning: Postfix's text with the hours and days, Action
    delayed, Will-Retry-Until, headers only."""
    r = Recipient("bob@example.net", RcptState.DEFERRED, Reply(450, "2.0", "busy"), "h[1.2.3.4]:25")
    n = build_notice(
        envelope=envelope(),
        recipients=[r],
        action="delayed",
        original=ORIGINAL,
        settings=SETTINGS,
        now=0,
        retry_until=1_700_432_000.0,
    )
    msg = email.message_from_bytes(n)
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    text = parts(n)[0].get_payload()
    assert "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #" in text  # type: ignore[operator]
    assert "Your message could not be delivered for more than 4 hour(s)." in text  # type: ignore[operator]
    assert "It will be retried until it is 5 day(s) old." in text  # type: ignore[operator]
    [_, g] = status_groups(n)
    assert g["action"] == "delayed" and g["status"] == "4.2.0" and "will-retry-until" in g
    assert parts(n)[2].get_content_type() == "text/rfc822-headers"


def test_postmaster_copies() -> None:
    """Postmaster copies use Postfix's Postmaster-Subject texts and the
    address they are sent to."""
    n = build_notice(
        envelope=envelope(),
        recipients=[failed()],
        action="failed",
        original=ORIGINAL,
        settings=SETTINGS,
        now=0,
        to="postmaster@example.com",
        postmaster=True,
    )
    msg = email.message_from_bytes(n)
    assert msg["Subject"] == "Postmaster Copy: Undelivered Mail"
    assert msg["To"] == "postmaster@example.com"
    assert parts(n)[2].get_content_type() == "text/rfc822-headers"


def test_success_notice_relayed() -> None:
    """A success report (NOTIFY=SUCCESS) for a relayed recipient."""
    r = Recipient("bob@example.net", RcptState.DELIVERED, Reply(250, "0.0", "Ok"), "h[1.2.3.4]:25")
    n = build_notice(
        envelope=envelope(),
        recipients=[r],
        action="relayed",
        original=ORIGINAL,
        settings=SETTINGS,
        now=0,
    )
    assert email.message_from_bytes(n)["Subject"] == "Successful Mail Delivery Report"
    [_, g] = status_groups(n)
    assert g["action"] == "relayed" and g["status"] == "2.0.0"
    assert "<bob@example.net>: delivery via h[1.2.3.4]:25: 250 2.0.0 Ok" in n.decode()


def test_utf8_recipient_makes_global_delivery_status() -> None:
    """RFC 6533: a UTF-8 address is reported as utf-8 in a
    message/global-delivery-status part, sent 8bit."""
    n = build_notice(
        envelope=envelope(),
        recipients=[failed("jörg@exämple.net")],
        action="failed",
        original=ORIGINAL,
        settings=SETTINGS,
        now=0,
    )
    assert b"Content-Type: message/global-delivery-status" in n
    assert "Final-Recipient: utf-8; jörg@exämple.net".encode() in n
    assert b"Content-Transfer-Encoding: 8bit" in n


def test_report_for_the_postmaster() -> None:
    """build_report: a plain text notice with the message's headers."""
    r = build_report(
        hostname="mx.example.com",
        to="postmaster@example.com",
        subject="Postmaster Warning: x",
        text="ABC: went wrong",
        now=0,
        headers=ORIGINAL,
    )
    msg = email.message_from_bytes(r)
    assert msg["Subject"] == "Postmaster Warning: x"
    body = msg.get_payload()
    assert "ABC: went wrong" in body and "Subject: original" in body  # type: ignore[operator]
    assert "line one" not in body  # type: ignore[operator]


def test_describe_says_who_said_it() -> None:
    """describe(): "host H said:" for the next hop's replies only."""
    assert (
        describe(Reply(550, "1.1", "no"), "mx[1.2.3.4]:25") == "host mx[1.2.3.4] said: 550 5.1.1 no"
    )
    assert describe(Reply(550, "1.1", "no"), "mx[1.2.3.4]:25", remote=False) == "no"
    assert describe(Reply(250, "0.0", "ok"), "mx[1.2.3.4]:25") == "250 2.0.0 ok"
    assert describe(Reply(250, "0.0", "delivered to maildir"), "virtual") == "delivered to maildir"
    local = Reply(451, "4.1", "connect to mx[1.2.3.4]:25: Connection refused")
    assert describe(local, "none") == "connect to mx[1.2.3.4]:25: Connection refused"
    assert describe(local, "mx[1.2.3.4]:25") == "connect to mx[1.2.3.4]:25: Connection refused"


@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40))
def test_xtext_round_trip(text: str) -> None:
    """Decoding the RFC 3461 xtext of any printable ASCII gives it back."""
    encoded = "".join(c if c not in "+=" else f"+{ord(c):02X}" for c in text)
    assert xtext_decode(encoded) == text
    assert original_recipient("rfc822;" + encoded) == "rfc822;" + text
