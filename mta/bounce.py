"""Delivery status notifications (RFC 3464, RFC 3461, RFC 6522).

Input: a queued message's envelope, the recipients to report on, and the
original message bytes.  Output: the notice as message bytes (CRLF line
ends), ready to be queued with the null sender.  Pure: no I/O, no clock
(the caller passes ``now``).

The notice is ``multipart/report; report-type=delivery-status`` with three
parts: a text for people, the ``message/delivery-status`` fields for
programs, and the original message (RET=FULL, the default for failures) or
its headers (RET=HDRS, or when the message is larger than
``bounce_size_limit``), as Postfix does.
"""

from __future__ import annotations

import email.utils
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mta.envelope import Envelope, Recipient

Action = Literal["failed", "delayed", "delivered", "relayed", "expanded"]

_SUBJECTS = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "delivered": "Successful Mail Delivery Report",
    "relayed": "Successful Mail Delivery Report",
    "expanded": "Successful Mail Delivery Report",
}

_INTROS = {
    "failed": (
        "I'm sorry to have to inform you that your message could not\n"
        "be delivered to one or more recipients. It's attached below.\n\n"
        "For further assistance, please send mail to postmaster.\n\n"
        "If you do so, please include this problem report. You can\n"
        "delete your own text from the attached returned message."
    ),
    "delayed": (
        "####################################################################\n"
        "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n"
        "####################################################################\n\n"
        "Your message could not be delivered for more than {delay}.\n"
        "It will be retried until it is {lifetime} old.\n\n"
        "For further assistance, please send mail to postmaster."
    ),
    "delivered": (
        "Your message was successfully delivered to the destination(s)\n"
        "listed below. If the message was delivered to mailbox you will\n"
        "receive no further notifications. Otherwise you may still receive\n"
        "notifications of mail delivery errors from other systems."
    ),
}
_INTROS["relayed"] = _INTROS["delivered"]
_INTROS["expanded"] = _INTROS["delivered"]


@dataclass(frozen=True)
class NoticeSettings:
    hostname: str  # myhostname: Reporting-MTA and the From address
    mail_name: str = "mta"
    bounce_size_limit: int = 50000  # larger originals are returned as headers only
    delay_text: str = ""  # "4 hours" for delay warnings
    lifetime_text: str = ""  # "5 days"


def _header_block(message: bytes) -> bytes:
    """The original's header section (up to and excluding the empty line)."""
    end = message.find(b"\r\n\r\n")
    if end < 0:
        return message if message.endswith(b"\r\n") else message + b"\r\n"
    return message[: end + 2]


def _rfc822_date(now: float) -> str:
    return email.utils.formatdate(now, localtime=True)


def _address_type(address: str) -> str:
    # RFC 6533: UTF-8 addresses are reported as "utf-8", the rest as "rfc822".
    return "rfc822" if address.isascii() else "utf-8"


def _recipient_fields(rcpt: Recipient, action: Action) -> list[str]:
    fields: list[str] = []
    if rcpt.orcpt:
        fields.append(f"Original-Recipient: {rcpt.orcpt}")
    fields.append(f"Final-Recipient: {_address_type(rcpt.address)}; {rcpt.address}")
    fields.append(f"Action: {action}")
    reply = rcpt.reply
    if reply is not None and reply.status:
        status = reply.status
    else:
        status = {"failed": "5.0.0", "delayed": "4.0.0"}.get(action, "2.0.0")
    fields.append(f"Status: {status}")
    if rcpt.relay:
        host = rcpt.relay.split("[", 1)[0]
        fields.append(f"Remote-MTA: dns; {host}")
    if reply is not None:
        fields.append(f"Diagnostic-Code: smtp; {reply.one_line()}")
    return fields


def build_notice(
    *,
    envelope: Envelope,
    recipients: Sequence[Recipient],
    action: Action,
    original: bytes,
    settings: NoticeSettings,
    now: float,
    to: str | None = None,
) -> bytes:
    """Build one notice about ``recipients`` of ``envelope``.

    ``to`` defaults to the envelope sender; the postmaster copies of
    ``notify_classes`` pass another address.  ``original`` is the queued
    message with CRLF line ends.
    """
    boundary = f"{secrets.token_hex(8)}.{int(now)}/{settings.hostname}"
    recipient_to = to if to is not None else envelope.sender
    headers = [
        f"From: MAILER-DAEMON@{settings.hostname} (Mail Delivery System)",
        f"To: {recipient_to}",
        f"Subject: {_SUBJECTS[action]}",
        f"Date: {_rfc822_date(now)}",
        f"Message-Id: <{secrets.token_hex(12)}@{settings.hostname}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        "Content-Transfer-Encoding: 8bit",
    ]

    intro = _INTROS[action].format(delay=settings.delay_text, lifetime=settings.lifetime_text)
    human = [
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=utf-8",
        "",
        f"This is the mail system at host {settings.hostname}.",
        "",
        *intro.split("\n"),
        "",
        f"                   The {settings.mail_name} program",
        "",
    ]
    for rcpt in recipients:
        detail = rcpt.reply.one_line() if rcpt.reply is not None else action
        via = f" (host {rcpt.relay} said: {detail})" if rcpt.relay else f": {detail}"
        human.append(f"<{rcpt.address}>{via}")
    human.append("")

    status = [
        f"--{boundary}",
        "Content-Description: Delivery report",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {settings.hostname}",
        f"X-Postfix-Queue-ID: {envelope.queue_id}",
    ]
    if envelope.envid:
        status.append(f"Original-Envelope-Id: {envelope.envid}")
    if envelope.sender:
        status.append(f"X-Postfix-Sender: rfc822; {envelope.sender}")
    status.append(f"Arrival-Date: {_rfc822_date(envelope.arrival_time)}")
    for rcpt in recipients:
        status.append("")
        status.extend(_recipient_fields(rcpt, action))
    status.append("")

    # RFC 3461 4.3: RET=HDRS asks for headers only; notices other than
    # failures carry headers only (Postfix does the same); a big original
    # is cut to its headers so that notices stay deliverable.
    full = (
        action == "failed"
        and envelope.ret != "HDRS"
        and len(original) <= settings.bounce_size_limit
    )
    if full:
        body_part = [
            f"--{boundary}",
            "Content-Description: Undelivered Message",
            "Content-Type: message/rfc822",
            "Content-Transfer-Encoding: 8bit",
            "",
        ]
        returned = original
    else:
        body_part = [
            f"--{boundary}",
            "Content-Description: Message Headers",
            "Content-Type: text/rfc822-headers",
            "Content-Transfer-Encoding: 8bit",
            "",
        ]
        returned = _header_block(original)
    if not returned.endswith(b"\r\n"):
        returned += b"\r\n"

    text = "\r\n".join([*headers, "", *human, *status, *body_part]) + "\r\n"
    tail = f"\r\n--{boundary}--\r\n".encode()
    return text.encode("utf-8") + returned + tail
