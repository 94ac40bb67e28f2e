"""Delivery status notifications (RFC 3464, RFC 3461, RFC 6522, RFC 6533).

Input: a queued message's envelope, the recipients to report on, the
original message bytes, and who the notice is for.  Output: the notice as
message bytes (CRLF line ends), ready to be queued (with the null sender
for the message's sender, with ``double_bounce_sender`` for the
postmaster).  Pure: no I/O, no clock (the caller passes ``now``).

A notice is ``multipart/report; report-type=delivery-status`` with three
parts, as Postfix's bounce(8) writes them with its default templates
(bounce(5)): a text for people, the ``message/delivery-status`` fields for
programs, and the original message or its headers.  What comes back:

* failure: the whole message (RET=FULL, the default), its headers for
  RET=HDRS or when it is larger than ``bounce_size_limit``;
* delay warning: the headers; success: the headers unless RET=FULL;
* postmaster copies (``notify_classes``): the headers, except for a double
  bounce (an undeliverable notice), which comes back whole.

Per-message fields: Original-Envelope-Id (the ENVID, xtext-decoded,
RFC 3461 6.3), Reporting-MTA, Postfix's X-Postfix-Queue-ID and
X-Postfix-Sender, Arrival-Date.  Per recipient: Final-Recipient,
Original-Recipient (the ORCPT, decoded), Action, Status, Remote-MTA,
Diagnostic-Code (``smtp;`` when the next hop said it, else ``X-Postfix;``)
and, for delays, Will-Retry-Until.  UTF-8 addresses make it a
``message/global-delivery-status`` (RFC 6533).

Also ``build_report``: a plain text notice to the postmaster for the
``resource`` and ``software`` classes (a message quarantined, a delivery
that failed inside mta).
"""

from __future__ import annotations

import email.utils
import secrets
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mta.envelope import Envelope, Recipient
from mta.reply import Reply

Action = Literal["failed", "delayed", "delivered", "relayed", "expanded"]

FROM_NAME = "Mail Delivery System"

_SUBJECTS = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "delivered": "Successful Mail Delivery Report",
    "relayed": "Successful Mail Delivery Report",
    "expanded": "Successful Mail Delivery Report",
}
_POSTMASTER_SUBJECTS = {
    "failed": "Postmaster Copy: Undelivered Mail",
    "delayed": "Postmaster Warning: Delayed Mail",
}

# Postfix's default bounce(5) templates.
_FAILURE = (
    "I'm sorry to have to inform you that your message could not\n"
    "be delivered to one or more recipients. It's attached below.\n"
    "\n"
    "For further assistance, please send mail to postmaster.\n"
    "\n"
    "If you do so, please include this problem report. You can\n"
    "delete your own text from the attached returned message."
)
_DELAY = (
    "####################################################################\n"
    "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n"
    "####################################################################\n"
    "\n"
    "Your message could not be delivered for more than {delay}.\n"
    "It will be retried until it is {lifetime} old.\n"
    "\n"
    "For further assistance, please send mail to postmaster.\n"
    "\n"
    "If you do so, please include this problem report. You can\n"
    "delete your own text from the attached returned message."
)
_SUCCESS = (
    "Your message was successfully delivered to the destination(s)\n"
    "listed below. If the message was delivered to mailbox you will\n"
    "receive no further notifications. Otherwise you may still receive\n"
    "notifications of mail delivery errors from other systems."
)
_INTROS = {
    "failed": _FAILURE,
    "delayed": _DELAY,
    "delivered": _SUCCESS,
    "relayed": _SUCCESS,
    "expanded": _SUCCESS,
}
_SIGNATURE = "                   The mail system"

# Replies of mta itself, not of the next hop, start like these (Postfix's texts).
_LOCAL_PREFIXES = (
    "connect to",
    "lost connection",
    "conversation with",
    "Host or domain",
    "host or domain",
    "delivery temporarily suspended",
    "mail for ",
    "internal error",
)


@dataclass(frozen=True)
class NoticeSettings:
    hostname: str  # myhostname: Reporting-MTA and the From address
    mail_name: str = "mta"
    bounce_size_limit: int = 50000  # bounce_size_limit: larger originals come back as headers
    delay_warning_time: float = 4 * 3600.0  # for the delay warning's text
    queue_lifetime: float = 5 * 86400.0  # maximal_queue_lifetime, likewise


def xtext_decode(text: str) -> str:
    """RFC 3461 4: ``+XX`` is the octet XX; anything malformed stays as it is."""
    if "+" not in text:
        return text
    out = bytearray()
    i = 0
    raw = text.encode("utf-8", "surrogateescape")
    while i < len(raw):
        c = raw[i]
        if c == 0x2B and _is_hex(raw[i + 1 : i + 3]):
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(c)
            i += 1
    return out.decode("utf-8", "replace")


def _is_hex(b: bytes) -> bool:
    return len(b) == 2 and all(chr(x) in "0123456789ABCDEFabcdef" for x in b)


def original_recipient(orcpt: str) -> str:
    """An ORCPT parameter (``rfc822;a+2Bb@x``) as the DSN field value
    (``rfc822;a+b@x``)."""
    kind, sep, address = orcpt.partition(";")
    if not sep:
        return xtext_decode(orcpt)
    return f"{kind.strip()};{xtext_decode(address.strip())}"


def said_by_next_hop(reply: Reply, relay: str) -> bool:
    """Did the next hop give this reply (rather than mta about it)?  A
    guess from the text, for when the delivery agent did not say."""
    if not relay or relay in ("none", "virtual", "local"):
        return False
    return not reply.text.startswith(_LOCAL_PREFIXES)


def describe(reply: Reply, relay: str, remote: bool | None = None) -> str:
    """What the log's ``status=... (TEXT)`` and a notice say about a reply,
    as Postfix: the next hop's reply whole (``250 2.0.0 Ok: queued as X``,
    ``host mx[1.2.3.4] said: 550 5.1.1 ...``), mta's own as text only
    (``connect to mx[1.2.3.4]:25: Connection refused``, ``delivered to
    maildir``)."""
    said = said_by_next_hop(reply, relay) if remote is None else remote
    if not said:
        return " ".join(reply.text.splitlines()) or reply.one_line()
    if reply.is_positive:
        return reply.one_line()
    host = relay.rsplit(":", 1)[0] if relay and relay != "none" else ""
    return f"host {host} said: {reply.one_line()}" if host else reply.one_line()


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


def _span(seconds: float, unit: str) -> str:
    """Postfix's ``$delay_warning_time_hours hour(s)``/``$..._days day(s)``,
    falling back to smaller units for short values (tests, odd settings)."""
    units = [("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)]
    start = [name for name, _ in units].index(unit)
    for name, size in units[start:]:
        if seconds >= size or name == "second":
            return f"{int(seconds // size)} {name}(s)"
    return f"{int(seconds)} second(s)"


def _status(rcpt: Recipient, action: Action) -> str:
    reply = rcpt.reply
    if reply is not None and reply.status:
        return reply.status
    if reply is not None:
        return f"{reply.code // 100}.0.0"
    return {"failed": "5.0.0", "delayed": "4.0.0"}.get(action, "2.0.0")


def _recipient_fields(rcpt: Recipient, action: Action, retry_until: float | None) -> list[str]:
    fields = [f"Final-Recipient: {_address_type(rcpt.address)}; {rcpt.address}"]
    if rcpt.orcpt:
        fields.append(f"Original-Recipient: {original_recipient(rcpt.orcpt)}")
    fields.append(f"Action: {action}")
    fields.append(f"Status: {_status(rcpt, action)}")
    reply = rcpt.reply
    if rcpt.relay and rcpt.relay != "none":
        host = rcpt.relay.split("[", 1)[0]
        if host:
            fields.append(f"Remote-MTA: dns; {host}")
    if reply is not None:
        if said_by_next_hop(reply, rcpt.relay):
            fields.append(f"Diagnostic-Code: smtp; {reply.one_line()}")
        else:
            fields.append(f"Diagnostic-Code: X-Postfix; {describe(reply, rcpt.relay, False)}")
    if action == "delayed" and retry_until is not None:
        fields.append(f"Will-Retry-Until: {_rfc822_date(retry_until)}")
    return fields


def _human_line(rcpt: Recipient, action: Action) -> list[str]:
    who = f"<{rcpt.address}>"
    if rcpt.orcpt:
        orig = original_recipient(rcpt.orcpt).partition(";")[2]
        if orig and orig.lower() != rcpt.address.lower():
            who += f" (expanded from <{orig}>)"
    reply = rcpt.reply
    if reply is None:
        text = {"failed": "undeliverable", "delayed": "delayed"}.get(action, "delivered")
    elif action in ("delivered", "relayed", "expanded"):
        via = rcpt.relay if rcpt.relay and rcpt.relay != "none" else "mta"
        text = f"delivery via {via}: {reply.one_line()}"
    else:
        text = describe(reply, rcpt.relay)
    return textwrap.wrap(
        f"{who}: {text}", width=76, subsequent_indent="    ", break_on_hyphens=False
    ) or [who]


def build_notice(
    *,
    envelope: Envelope,
    recipients: Sequence[Recipient],
    action: Action,
    original: bytes,
    settings: NoticeSettings,
    now: float,
    to: str | None = None,
    postmaster: bool = False,
    returned: Literal["full", "headers", "auto"] = "auto",
    retry_until: float | None = None,
) -> bytes:
    """Build one notice about ``recipients`` of ``envelope``.

    ``to`` defaults to the envelope sender; ``postmaster`` makes it a
    postmaster copy (its subject; headers only unless ``returned`` says
    otherwise).  ``original`` is the queued message, CRLF line ends (its
    first ``bounce_size_limit`` + 1 octets are enough).  ``retry_until``:
    for delay warnings, when the message will be given up.
    """
    h = settings.hostname
    boundary = f"{secrets.token_hex(8)}.{int(now)}/{h}"
    recipient_to = to if to is not None else envelope.sender
    subject = (
        _POSTMASTER_SUBJECTS.get(action, _SUBJECTS[action]) if postmaster else _SUBJECTS[action]
    )
    utf8 = not all(r.address.isascii() for r in recipients) or not envelope.sender.isascii()
    report_type = "message/global-delivery-status" if utf8 else "message/delivery-status"

    if returned == "auto":
        if action == "failed" and not postmaster:
            full = envelope.ret != "HDRS"
        elif action in ("delivered", "relayed", "expanded"):
            full = envelope.ret == "FULL"
        else:
            full = False
        returned = "full" if full else "headers"
    # A big original is cut to its headers (Postfix: bounce_size_limit);
    # ``original`` may be cut short by the caller, so compare with the size.
    size = max(envelope.size, len(original))
    if returned == "full" and size > settings.bounce_size_limit:
        returned = "headers"

    intro = _INTROS[action].format(
        delay=_span(settings.delay_warning_time, "hour"),
        lifetime=_span(settings.queue_lifetime, "day"),
    )
    human = [
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=utf-8",
        "",
        f"This is the mail system at host {h}.",
        "",
        *intro.split("\n"),
        "",
        _SIGNATURE,
        "",
    ]
    for rcpt in recipients:
        human.extend(_human_line(rcpt, action))
    human.append("")

    status = [
        f"--{boundary}",
        "Content-Description: Delivery report",
        f"Content-Type: {report_type}",
        "",
    ]
    if envelope.envid:
        status.append(f"Original-Envelope-Id: {xtext_decode(envelope.envid)}")
    status.append(f"Reporting-MTA: dns; {h}")
    status.append(f"X-Postfix-Queue-ID: {envelope.queue_id}")
    if envelope.sender:
        status.append(f"X-Postfix-Sender: {_address_type(envelope.sender)}; {envelope.sender}")
    status.append(f"Arrival-Date: {_rfc822_date(envelope.arrival_time)}")
    for rcpt in recipients:
        status.append("")
        status.extend(_recipient_fields(rcpt, action, retry_until))
    status.append("")

    undelivered = "Undelivered " if action in ("failed", "delayed") else ""
    if returned == "full":
        kind = "message/global" if utf8 else "message/rfc822"
        body_part = [
            f"--{boundary}",
            f"Content-Description: {undelivered}Message",
            f"Content-Type: {kind}",
        ]
        payload = original
    else:
        kind = "message/global-headers" if utf8 else "text/rfc822-headers"
        body_part = [
            f"--{boundary}",
            f"Content-Description: {undelivered}Message Headers",
            f"Content-Type: {kind}",
        ]
        payload = _header_block(original)
    eight_bit = any(b > 0x7F for b in payload) or utf8
    if eight_bit:
        body_part.append("Content-Transfer-Encoding: 8bit")
    body_part.append("")
    if not payload.endswith(b"\r\n"):
        payload += b"\r\n"

    headers = [
        f"From: MAILER-DAEMON@{h} ({FROM_NAME})",
        f"Subject: {subject}",
        f"To: {recipient_to}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
    ]
    if eight_bit:
        headers.append("Content-Transfer-Encoding: 8bit")
    headers += [
        f"Message-Id: <{_message_id(now, h)}>",
        f"Date: {_rfc822_date(now)}",
    ]
    text = "\r\n".join([*headers, "", *human, *status, *body_part]) + "\r\n"
    tail = f"\r\n--{boundary}--\r\n".encode()
    return text.encode("utf-8") + payload + tail


def build_report(
    *,
    hostname: str,
    to: str,
    subject: str,
    text: str,
    now: float,
    headers: bytes = b"",
) -> bytes:
    """A plain notice to the postmaster (``notify_classes`` resource and
    software): what happened in ``text``, then the headers of the message
    it concerns, if any."""
    lines = [
        f"From: MAILER-DAEMON@{hostname} ({FROM_NAME})",
        f"To: {to}",
        f"Subject: {subject}",
        "Auto-Submitted: auto-generated",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        f"Message-Id: <{_message_id(now, hostname)}>",
        f"Date: {_rfc822_date(now)}",
        "",
        f"This is the mail system at host {hostname}.",
        "",
        *text.split("\n"),
        "",
    ]
    body = "\r\n".join(lines) + "\r\n"
    out = body.encode("utf-8")
    if headers:
        out += b"The message headers:\r\n\r\n" + _header_block(headers)
    return out


def _message_id(now: float, hostname: str) -> str:
    return f"{int(now)}.{secrets.token_hex(8)}@{hostname}"
