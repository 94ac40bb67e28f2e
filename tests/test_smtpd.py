"""Tests for mta.smtpd, the Twisted adapter, on a StringTransport with a
fake clock: the error tarpit, smtpd_timeout per read and per record, the
burst limit that gives the reactor a turn, and the per-client limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mta import settings
from mta.config import load
from mta.maillog import MailLog
from mta.smtpd import SmtpdFactory, SMTPServerProtocol
from mta.stats.counters import Counters


class Transport(StringTransport):
    def __init__(self) -> None:
        super().__init__(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 25),
            peerAddress=IPv4Address("TCP", "192.0.2.10", 5555),
        )
        self.paused = 0

    def pauseProducing(self) -> None:
        self.paused += 1
        super().pauseProducing()


def factory(tmp_path: Path, **params: str) -> tuple[SmtpdFactory, Clock]:
    base = {
        "myhostname": "mx.example",
        "queue_directory": str(tmp_path / "queue"),
        "mynetworks": "127.0.0.0/8",
        "dns_nameservers": "127.0.0.1:9",
    }
    base.update(params)
    (tmp_path / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in base.items()))
    cfg = load(tmp_path)
    clock = Clock()
    f = SmtpdFactory(
        clock,
        settings.smtpd(cfg),
        store=None,
        submit=lambda env: None,
        maillog=MailLog(tmp_path / "maillog", "mx.example"),
        counters=Counters(),
        sessions=set(),
    )
    return f, clock


def connect(f: SmtpdFactory) -> tuple[SMTPServerProtocol, Transport]:
    proto = f.buildProtocol(None)
    t = Transport()
    proto.makeConnection(t)
    return proto, t


def replies(t: Transport) -> list[bytes]:
    out = t.value().split(b"\r\n")
    t.clear()
    return [line for line in out if line]


def test_error_replies_are_delayed_past_the_soft_limit(tmp_path: Path) -> None:
    """Past smtpd_soft_error_limit each reply waits smtpd_error_sleep_time on
    the clock, with reading paused; the hard limit still closes."""
    f, clock = factory(
        tmp_path,
        smtpd_soft_error_limit="2",
        smtpd_error_sleep_time="3s",
        smtpd_hard_error_limit="4",
    )
    proto, t = connect(f)
    replies(t)
    proto.dataReceived(b"BAD1\r\nBAD2\r\nBAD3\r\nBAD4\r\nNOOP\r\n")
    assert [r[:3] for r in replies(t)] == [b"500", b"500"]
    assert t.paused >= 1
    clock.advance(2.9)
    assert replies(t) == []
    clock.advance(0.1)
    assert [r[:3] for r in replies(t)] == [b"500"]
    clock.advance(3)
    assert [r[:3] for r in replies(t)] == [b"500", b"421"]
    assert t.disconnecting


def test_timeout_per_read_and_per_record(tmp_path: Path) -> None:
    """smtpd_timeout restarts with every read; with smtpd_per_request_deadline
    a command dribbled a byte at a time still ends at the deadline."""
    f, clock = factory(tmp_path, smtpd_timeout="10s")
    proto, t = connect(f)
    replies(t)
    for b in b"NOOP\r\n":
        clock.advance(9)
        proto.dataReceived(bytes([b]))
    assert replies(t) == [b"250 2.0.0 Ok"]
    clock.advance(10)
    assert replies(t) == [b"421 4.4.2 mx.example Error: timeout exceeded"]
    assert t.disconnecting

    f, clock = factory(tmp_path, smtpd_timeout="10s", smtpd_per_request_deadline="yes")
    proto, t = connect(f)
    replies(t)
    for b in b"NOOP\r\n":
        clock.advance(3)
        proto.dataReceived(bytes([b]))
        if t.disconnecting:
            break
    assert replies(t) == [b"421 4.4.2 mx.example Error: timeout exceeded"]
    log = (tmp_path / "maillog").read_text()
    assert "timeout after CONNECT from unknown[192.0.2.10]" in log


def test_long_pipelines_give_the_reactor_a_turn(tmp_path: Path) -> None:
    """A burst of pipelined commands is answered in slices: after a slice
    reading pauses and the rest waits for the next reactor turn."""
    f, clock = factory(tmp_path)
    proto, t = connect(f)
    replies(t)
    proto.dataReceived(b"NOOP\r\n" * 1000)
    first = len(replies(t))
    assert 0 < first < 1000 and t.paused >= 1
    for _ in range(20):
        clock.advance(0)
    assert first + len(replies(t)) == 1000


@pytest.mark.parametrize("limit", ["2"])
def test_connection_count_and_message_rate(tmp_path: Path, limit: str) -> None:
    """Per-client limits outside smtpd_client_event_limit_exceptions, with
    Postfix's replies and warnings."""
    f, _ = factory(
        tmp_path,
        smtpd_client_connection_count_limit=limit,
        smtpd_client_message_rate_limit="1",
        smtpd_client_event_limit_exceptions="",
    )
    conns: list[Any] = [connect(f) for _ in range(3)]
    assert replies(conns[2][1]) == [
        b"421 4.7.0 mx.example Error: too many connections from 192.0.2.10"
    ]
    proto, t = conns[0]
    replies(t)
    proto.dataReceived(
        b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRSET\r\nMAIL FROM:<a@example.org>\r\n"
    )
    assert replies(t)[-1] == b"450 4.7.1 Error: too much mail from 192.0.2.10"
    log = (tmp_path / "maillog").read_text()
    assert (
        "Connection concurrency limit exceeded: 3 from unknown[192.0.2.10] for service smtp" in log
    )
    assert "Message delivery request rate limit exceeded: 2 from unknown[192.0.2.10]" in log
    conns[1][0].connectionLost()
    assert f.anvil.connections("192.0.2.10") == 2
