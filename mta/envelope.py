"""Envelope and Recipient: what the queue keeps beside each message.

The envelope is the sidecar of a queued message: sender, each recipient with
its own delivery state and last reply, DSN parameters (RFC 3461), arrival
time, attempts and next try.  It is plain data with a JSON form that people
can read; the queue store writes it, the scheduler and delivery update it.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

from mta.reply import Reply

ENVELOPE_VERSION = 1


class RcptState(enum.StrEnum):
    """A recipient's delivery state (what `mailq --json` reports)."""

    PENDING = "pending"  # not tried yet, or due again
    DEFERRED = "deferred"  # tried, temporary failure; retried later
    DELIVERED = "delivered"  # 2xx from the next hop (or discarded by policy)
    BOUNCED = "bounced"  # permanent failure; a DSN was (or will be) sent

    @property
    def is_final(self) -> bool:
        return self in (RcptState.DELIVERED, RcptState.BOUNCED)


@dataclass
class Recipient:
    address: str
    state: RcptState = RcptState.PENDING
    reply: Reply | None = None  # the last reply about this recipient
    relay: str = ""  # the host that gave that reply, "host[ip]:port"
    notify: tuple[str, ...] = ()  # RFC 3461 NOTIFY (empty: not given)
    orcpt: str = ""  # RFC 3461 ORCPT, "addr-type;xtext"
    dsn_sent: bool = False  # a bounce/success notice for this one went out

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"address": self.address, "state": self.state.value}
        if self.reply is not None:
            d["reply"] = self.reply.to_dict()
        if self.relay:
            d["relay"] = self.relay
        if self.notify:
            d["notify"] = list(self.notify)
        if self.orcpt:
            d["orcpt"] = self.orcpt
        if self.dsn_sent:
            d["dsn_sent"] = True
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipient:
        reply = d.get("reply")
        return cls(
            address=str(d["address"]),
            state=RcptState(d.get("state", "pending")),
            reply=Reply.from_dict(reply) if reply else None,
            relay=str(d.get("relay", "")),
            notify=tuple(str(x) for x in d.get("notify", ())),
            orcpt=str(d.get("orcpt", "")),
            dsn_sent=bool(d.get("dsn_sent", False)),
        )


@dataclass
class Envelope:
    queue_id: str
    sender: str  # "" is the null reverse-path <>
    recipients: list[Recipient]
    arrival_time: float  # Unix time the message was accepted
    size: int = 0  # message size in octets as queued
    attempts: int = 0
    next_try: float = 0.0  # Unix time; 0 means now
    last_try: float = 0.0
    ret: str = ""  # RFC 3461 RET: "FULL", "HDRS" or ""
    envid: str = ""  # RFC 3461 ENVID (xtext as received)
    body: str = ""  # "7BIT", "8BITMIME", "BINARYMIME" or "" (not given)
    smtputf8: bool = False
    client_name: str = ""
    client_addr: str = ""
    helo: str = ""
    protocol: str = ""  # "SMTP", "ESMTP", "ESMTPS", "ESMTPSA", "LMTP", "local"
    sasl_username: str = ""
    warned: bool = False  # a delay warning was sent
    reason: str = ""  # why the message is held, corrupt, ...
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pending(self) -> list[Recipient]:
        """Recipients that still need a delivery attempt."""
        return [r for r in self.recipients if not r.state.is_final]

    @property
    def done(self) -> bool:
        return not self.pending

    def to_json(self) -> bytes:
        d: dict[str, Any] = {
            "version": ENVELOPE_VERSION,
            "queue_id": self.queue_id,
            "sender": self.sender,
            "recipients": [r.to_dict() for r in self.recipients],
            "arrival_time": self.arrival_time,
            "size": self.size,
            "attempts": self.attempts,
            "next_try": self.next_try,
            "last_try": self.last_try,
            "ret": self.ret,
            "envid": self.envid,
            "body": self.body,
            "smtputf8": self.smtputf8,
            "client_name": self.client_name,
            "client_addr": self.client_addr,
            "helo": self.helo,
            "protocol": self.protocol,
            "sasl_username": self.sasl_username,
            "warned": self.warned,
            "reason": self.reason,
        }
        if self.extra:
            d["extra"] = self.extra
        return (json.dumps(d, indent=1, ensure_ascii=False) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> Envelope:
        """Parse a sidecar; raises ValueError (never anything else) when it
        is not a valid envelope."""
        try:
            d = json.loads(data.decode("utf-8"))
            if not isinstance(d, dict):
                raise ValueError("envelope is not a JSON object")
            rcpts = d["recipients"]
            if not isinstance(rcpts, list) or not rcpts:
                raise ValueError("envelope has no recipients")
            return cls(
                queue_id=str(d["queue_id"]),
                sender=str(d["sender"]),
                recipients=[Recipient.from_dict(r) for r in rcpts],
                arrival_time=float(d["arrival_time"]),
                size=int(d.get("size", 0)),
                attempts=int(d.get("attempts", 0)),
                next_try=float(d.get("next_try", 0.0)),
                last_try=float(d.get("last_try", 0.0)),
                ret=str(d.get("ret", "")),
                envid=str(d.get("envid", "")),
                body=str(d.get("body", "")),
                smtputf8=bool(d.get("smtputf8", False)),
                client_name=str(d.get("client_name", "")),
                client_addr=str(d.get("client_addr", "")),
                helo=str(d.get("helo", "")),
                protocol=str(d.get("protocol", "")),
                sasl_username=str(d.get("sasl_username", "")),
                warned=bool(d.get("warned", False)),
                reason=str(d.get("reason", "")),
                extra=dict(d.get("extra", {})),
            )
        except ValueError:
            raise
        except (KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
            raise ValueError(f"malformed envelope: {e!r}") from e
