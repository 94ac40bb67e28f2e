"""Tests for mta.delivery.smtp: the Twisted driver and deliver().

Pure adapter tests run ClientConnection on a StringTransport with a Clock;
delivery tests talk to real peers on loopback: Postfix's smtp-sink (which
dumps what it received), aiosmtpd for chosen replies, and small in-process
servers that misbehave on purpose.
"""

from __future__ import annotations

import io
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mta.delivery.smtp import (
    BODY_CHUNK,
    ClientConnection,
    DeliveryResult,
    Timeouts,
    deliver,
    failure_reply,
    transaction_for,
)
from mta.envelope import Envelope, Recipient
from mta.reply import Reply
from mta.smtp.client import ClientSession, Closed, DataAccepted, MessageDone, Ready, Stage

reactor: Any = _reactor
SMTP_SINK = "/usr/sbin/smtp-sink"
FAST = Timeouts(connect=5, helo=5, mail=5, rcpt=5, data_init=5, data_xfer=5, data_done=5, quit=5)


# -- helpers ---------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, deadline: float = 5.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listening on port {port}")


def envelope(*rcpts: str, **kw: Any) -> Envelope:
    return Envelope(
        "TESTID",
        "sender@example.com",
        [Recipient(r) for r in rcpts],
        arrival_time=0.0,
        **kw,
    )


def write_message(path: Path, body: bytes) -> Path:
    path.write_bytes(body)
    return path


async def run(
    port: int,
    env: Envelope,
    message: Path,
    *,
    timeouts: Timeouts = FAST,
    lmtp: bool = False,
    host: str = "127.0.0.1",
) -> DeliveryResult:
    return await deliver(
        reactor,
        host=host,
        port=port,
        helo_name="client.example.com",
        envelope=env,
        recipients=env.recipients,
        message_path=message,
        timeouts=timeouts,
        lmtp=lmtp,
    )


@pytest.fixture
def smtp_sink(tmp_path: Path) -> Iterator[Callable[..., tuple[int, Path]]]:
    """Start smtp-sink with extra options; returns (port, dump directory)."""
    if not os.access(SMTP_SINK, os.X_OK):
        pytest.skip("smtp-sink is not installed")
    procs: list[subprocess.Popen[bytes]] = []

    def start(*options: str) -> tuple[int, Path]:
        port = free_port()
        dumps = tmp_path / f"dumps{port}"
        dumps.mkdir()
        user = pwd.getpwuid(os.getuid()).pw_name
        if os.getuid() == 0:
            shutil.chown(dumps, user)
        proc = subprocess.Popen(
            [SMTP_SINK, "-u", user, "-d", f"{dumps}/msg.", *options, f"127.0.0.1:{port}", "10"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        wait_listening(port)
        return port, dumps

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=5)


def dumped_message(dumps: Path) -> tuple[dict[str, list[str]], bytes]:
    """The one message smtp-sink dumped: its X- headers and the message
    (smtp-sink writes LF line ends and an empty line after the message)."""
    [path] = list(dumps.iterdir())
    data = path.read_bytes()
    head, _, rest = data.partition(b"\nReceived: ")
    fields: dict[str, list[str]] = {}
    for line in head.decode().split("\n"):
        name, _, value = line.partition(": ")
        fields.setdefault(name, []).append(value)
    message = rest.split(b"\n", 3)[3]  # the rest of the three-line Received:
    assert message.endswith(b"\n")
    return fields, message[:-1]


class Scripted(Protocol):
    """A misbehaving server: ``replies`` maps a command verb to the reply to
    send (None: stay silent); ``drop_in_data`` drops the connection as soon as
    message data arrives."""

    def __init__(self, greeting: bytes | None, replies: dict[str, bytes | None], drop: bool):
        self.greeting = greeting
        self.replies = replies
        self.drop_in_data = drop
        self.buf = b""
        self.in_data = False

    def connectionMade(self) -> None:
        self.factory.connections.append(self)
        if self.greeting is not None:
            self.transport.write(self.greeting)

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.in_data:
                if self.drop_in_data and len(self.buf) > 2:  # real message data
                    self.transport.abortConnection()
                    return
                end = self.buf.find(b"\r\n.\r\n")
                if end < 0:
                    return
                self.buf = self.buf[end + 5 :]
                self.in_data = False
                self.transport.write(self.replies.get(".", b"250 ok\r\n") or b"")
            if b"\r\n" not in self.buf:
                return
            line, self.buf = self.buf.split(b"\r\n", 1)
            verb = line.split(b" ", 1)[0].split(b":", 1)[0].decode().upper()
            reply = self.replies.get(verb, b"354 go\r\n" if verb == "DATA" else b"250 ok\r\n")
            if reply is not None:
                self.transport.write(reply)
            if verb == "DATA" and reply is not None and reply.startswith(b"354"):
                self.in_data = True
                self.buf = b"\r\n" + self.buf  # the end mark may follow at once
            if verb == "QUIT":
                self.transport.loseConnection()


@pytest.fixture
def scripted() -> Iterator[Callable[..., int]]:
    """Listen on 127.0.0.1 with a Scripted server; returns the port."""
    ports: list[Any] = []
    factories: list[Factory] = []

    def listen(
        greeting: bytes | None = b"220 mx.test ESMTP\r\n",
        replies: dict[str, bytes | None] | None = None,
        drop_in_data: bool = False,
        interface: str = "127.0.0.1",
    ) -> int:
        factory = Factory.forProtocol(lambda: Scripted(greeting, replies or {}, drop_in_data))
        factory.connections = []  # type: ignore[attr-defined]
        port = reactor.listenTCP(0, factory, interface=interface)
        ports.append(port)
        factories.append(factory)
        return int(port.getHost().port)

    yield listen
    for factory in factories:
        for conn in factory.connections:  # type: ignore[attr-defined]
            conn.transport.abortConnection()
    for port in ports:
        port.stopListening()


# -- ClientConnection on a StringTransport -------------------------------------------


def connection(timeouts: Timeouts = FAST) -> tuple[ClientConnection, StringTransport, Clock]:
    clock = Clock()
    session = ClientSession("c.example", peer="mx.test[192.0.2.1]")
    conn = ClientConnection(session, clock, timeouts)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.1", 25))
    conn.makeConnection(transport)
    return conn, transport, clock


def test_greeting_timeout() -> None:
    """No greeting within smtp_helo_timeout: the connection is aborted and the
    failure names the stage, as Postfix logs it."""
    conn, transport, clock = connection()
    events: list[Any] = []
    conn.next_event().addCallback(events.append)
    clock.advance(4.9)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting and conn.timed_out
    conn.connectionLost(None)
    assert events == [Closed()]
    reply = failure_reply(conn, events[0])
    assert reply.one_line() == (
        "451 4.4.2 conversation with mx.test[192.0.2.1] timed out"
        " while receiving the initial server greeting"
    )


def test_timer_restarts_on_progress_and_per_stage() -> None:
    """Bytes from the server restart the timer; each stage has its own limit."""
    conn, transport, clock = connection(Timeouts(helo=10, mail=3, quit=1))
    clock.advance(9)
    conn.dataReceived(b"220 hi\r\n")  # now waiting for the EHLO reply: 10 s again
    clock.advance(9)
    conn.dataReceived(b"250-mx\r\n")
    clock.advance(9)
    assert not transport.disconnecting
    conn.dataReceived(b"250 PIPELINING\r\n")
    assert isinstance(conn.next_event().result, Ready)
    clock.advance(1000)  # idle: no timer
    assert not transport.disconnecting
    conn.session.start_transaction(transaction_for(envelope("a@x"), [Recipient("a@x")], 10))
    conn.pump()
    assert conn.stage is Stage.MAIL
    clock.advance(3.1)
    assert conn.timed_out


def test_body_streams_with_back_pressure() -> None:
    """The body goes out one chunk per resumeProducing: never more than a
    chunk (plus stuffing) ahead of what the transport has taken."""
    conn, transport, _ = connection()
    conn.dataReceived(b"220 hi\r\n250-mx\r\n250 PIPELINING\r\n")
    conn.next_event()
    conn.session.start_transaction(transaction_for(envelope("a@x"), [Recipient("a@x")], 10))
    conn.pump()
    conn.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    events = [conn.next_event().result for _ in range(2)]
    assert isinstance(events[1], DataAccepted)
    body = io.BytesIO(b".line\r\n" * 100_000)  # 700 000 octets
    transport.clear()
    conn.stream_body(body)
    producer = transport.producer
    assert producer is not None and transport.value() == b""  # waits for the transport
    sizes = []
    while transport.producer is not None:
        before = len(transport.value())
        producer.resumeProducing()
        sizes.append(len(transport.value()) - before)
        assert body.tell() <= BODY_CHUNK * len(sizes)
    assert max(sizes) <= BODY_CHUNK * 8 // 7 + 8  # a chunk, its dots, the end mark
    assert transport.value().endswith(b"\r\n.\r\n")
    assert transport.value().count(b"..line\r\n") == 100_000
    assert conn.session.stage is Stage.DOT
    conn.dataReceived(b"250 queued\r\n")
    done = conn.next_event().result
    assert isinstance(done, MessageDone) and done.replies[0].code == 250


def test_lost_connection_mid_body() -> None:
    """A connection lost while the body streams stops the producer and the
    failure says "while sending message body"."""
    conn, transport, _ = connection()
    conn.dataReceived(b"220 hi\r\n250 mx\r\n")
    conn.next_event()
    conn.session.start_transaction(transaction_for(envelope("a@x"), [Recipient("a@x")], 10))
    conn.pump()
    for reply in (b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"):
        conn.dataReceived(reply)
    conn.next_event()
    conn.next_event()
    conn.stream_body(io.BytesIO(b"x" * 200_000))
    transport.producer.resumeProducing()
    producer = transport.producer
    producer.stopProducing()
    conn.connectionLost(None)
    event = conn.next_event().result
    assert event == Closed()
    assert failure_reply(conn, event).one_line() == (
        "451 4.4.2 lost connection with mx.test[192.0.2.1] while sending message body"
    )
    producer.resumeProducing()  # a late call does nothing


def test_transaction_for_maps_the_envelope() -> None:
    """DSN fields, SIZE, BODY and SMTPUTF8 come from the envelope and recipients."""
    env = envelope("a@x", "b@x", ret="HDRS", envid="q1", body="8BITMIME", smtputf8=True)
    env.recipients[0].notify = ("SUCCESS", "DELAY")
    env.recipients[0].orcpt = "rfc822;a@x"
    tx = transaction_for(env, env.recipients, 1234)
    assert tx.mail_params == {"RET": "HDRS", "ENVID": "q1"}
    assert tx.rcpt_params == [{"NOTIFY": "SUCCESS,DELAY", "ORCPT": "rfc822;a@x"}, {}]
    assert tx.size == 1234 and tx.needs_8bit and tx.needs_smtputf8


# -- delivery to smtp-sink -------------------------------------------------------------


def dotty_message(size: int) -> bytes:
    """Headers, then 1024-octet lines that all start with "." so that lines
    begin exactly on each 64 KiB chunk boundary of the queue file."""
    head = b"From: a@example.com\r\nSubject: dots\r\n"
    filler = b"X-Pad: " + b"p" * (1024 - len(head) - 7 - 4) + b"\r\n\r\n"
    line = b"." + b"d" * 1021 + b"\r\n"
    body = head + filler + line * (size // 1024)
    assert len(head + filler) == 1024
    return body + b".\r\n..\r\nlast line without a line end"


@pytest_twisted.ensureDeferred
async def test_deliver_to_smtp_sink_intact(smtp_sink: Any, tmp_path: Path) -> None:
    """A 300 KB message full of leading dots arrives byte for byte; each
    recipient gets the end-of-data reply; relay is host[ip]:port."""
    port, dumps = smtp_sink()
    body = dotty_message(300 * 1024)
    path = write_message(tmp_path / "msg", body)
    env = envelope("a@example.net", "b@example.net", ret="HDRS", envid="ID1")
    env.recipients[0].notify = ("SUCCESS", "FAILURE")
    result = await run(port, env, path)
    assert [r.code for r in result.replies] == [250, 250]
    assert result.replies[0].status == "2.0.0"
    assert result.relay == f"127.0.0.1[127.0.0.1]:{port}"
    assert not result.try_next_host
    assert "C: QUIT" in result.protocol_log
    fields, received = dumped_message(dumps)
    assert received == body.replace(b"\r\n", b"\n") + b"\n"
    assert fields["X-Client-Proto"] == ["ESMTP"]
    assert fields["X-Mail-Args"] == ["<sender@example.com> RET=HDRS ENVID=ID1"]
    assert fields["X-Rcpt-Args"] == ["<a@example.net> NOTIFY=SUCCESS,FAILURE", "<b@example.net>"]


@pytest_twisted.ensureDeferred
async def test_deliver_lmtp_to_smtp_sink(smtp_sink: Any, tmp_path: Path) -> None:
    """LMTP: LHLO, and one reply per recipient after the dot."""
    port, dumps = smtp_sink("-L")
    path = write_message(tmp_path / "msg", b"Subject: lmtp\r\n\r\n.hello\r\n")
    result = await run(port, envelope("a@x.example", "b@x.example"), path, lmtp=True)
    assert [r.code for r in result.replies] == [250, 250]
    fields, received = dumped_message(dumps)
    assert fields["X-Client-Proto"] == ["LMTP"]
    assert received == b"Subject: lmtp\n\n.hello\n"


@pytest_twisted.ensureDeferred
async def test_deliver_rejected_rcpt_and_5xx_greeting_at_smtp_sink(
    smtp_sink: Any, tmp_path: Path
) -> None:
    """smtp-sink rejecting RCPT fails each recipient with its reply; a 5xx
    greeting (smtp-sink -f CONNECT) fails all for good."""
    path = write_message(tmp_path / "msg", b"Subject: x\r\n\r\nx\r\n")
    port, _ = smtp_sink("-f", "RCPT")
    result = await run(port, envelope("a@x.example", "b@x.example"), path)
    assert [r.one_line() for r in result.replies] == ["500 5.3.0 Error: command failed"] * 2
    port, _ = smtp_sink("-f", "CONNECT")
    result = await run(port, envelope("a@x.example"), path)
    assert result.replies[0].code // 100 == 5
    assert result.try_next_host


# -- delivery to aiosmtpd ----------------------------------------------------------------


class Handler:
    """aiosmtpd handler: rejects RCPT for "bad@...", answers DATA with
    ``data_reply``, records what it accepted."""

    def __init__(self, data_reply: str = "250 2.0.0 Ok: queued as AIO") -> None:
        self.data_reply = data_reply
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("bad@"):
            return "550 5.1.1 <bad@example.net>: Recipient address rejected"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply.startswith("250"):
            self.messages.append((envelope.mail_from, envelope.rcpt_tos, envelope.content))
        return self.data_reply


@pytest.fixture
def aiosmtpd_server() -> Iterator[Callable[[Handler], int]]:
    from aiosmtpd.controller import Controller

    controllers: list[Controller] = []

    def start(handler: Handler) -> int:
        port = free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port)
        controller.start()
        controllers.append(controller)
        return port

    yield start
    for controller in controllers:
        controller.stop()


@pytest_twisted.ensureDeferred
async def test_one_recipient_rejected_at_aiosmtpd(aiosmtpd_server: Any, tmp_path: Path) -> None:
    """The 550 recipient gets its RCPT reply, the others the DATA reply."""
    handler = Handler()
    port = aiosmtpd_server(handler)
    path = write_message(tmp_path / "msg", b"Subject: hi\r\n\r\n.dot\r\nbody\r\n")
    env = envelope("a@example.net", "bad@example.net", "c@example.net")
    result = await run(port, env, path)
    assert [r.code for r in result.replies] == [250, 550, 250]
    assert result.replies[1].status == "5.1.1"
    [(sender, rcpts, content)] = handler.messages
    assert sender == "sender@example.com" and rcpts == ["a@example.net", "c@example.net"]
    assert content == b"Subject: hi\r\n\r\n.dot\r\nbody\r\n"


@pytest_twisted.ensureDeferred
async def test_451_at_end_of_data(aiosmtpd_server: Any, tmp_path: Path) -> None:
    """A 451 after the dot defers the accepted recipients with that reply."""
    port = aiosmtpd_server(Handler("451 4.3.0 try again later"))
    path = write_message(tmp_path / "msg", b"Subject: hi\r\n\r\nbody\r\n")
    result = await run(port, envelope("a@example.net", "bad@example.net"), path)
    assert [r.one_line() for r in result.replies] == [
        "451 4.3.0 try again later",
        "550 5.1.1 <bad@example.net>: Recipient address rejected",
    ]


# -- misbehaving servers -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_connection_refused(tmp_path: Path) -> None:
    """Nobody listening: 4.4.1 "connect to host[ip]:port: Connection refused"."""
    port = free_port()
    path = write_message(tmp_path / "msg", b"x\r\n")
    result = await run(port, envelope("a@x", "b@x"), path)
    expected = f"451 4.4.1 connect to 127.0.0.1[127.0.0.1]:{port}: Connection refused"
    assert [r.one_line() for r in result.replies] == [expected, expected]
    assert result.try_next_host and result.relay == ""


@pytest_twisted.ensureDeferred
async def test_server_that_never_answers(scripted: Any, tmp_path: Path) -> None:
    """A silent server times out at the greeting within smtp_helo_timeout."""
    port = scripted(greeting=None)
    path = write_message(tmp_path / "msg", b"x\r\n")
    started = time.monotonic()
    result = await run(port, envelope("a@x"), path, timeouts=Timeouts(helo=0.3))
    assert time.monotonic() - started < 3
    assert result.replies[0].one_line() == (
        "451 4.4.2 conversation with 127.0.0.1[127.0.0.1] timed out"
        " while receiving the initial server greeting"
    )
    assert result.try_next_host


@pytest_twisted.ensureDeferred
async def test_rcpt_timeout(scripted: Any, tmp_path: Path) -> None:
    """A server silent after RCPT times out "while sending RCPT TO"."""
    port = scripted(replies={"EHLO": b"250 mx.test\r\n", "RCPT": None})
    path = write_message(tmp_path / "msg", b"x\r\n")
    result = await run(port, envelope("a@x"), path, timeouts=Timeouts(rcpt=0.3, quit=0.3))
    assert result.replies[0].one_line() == (
        "451 4.4.2 conversation with 127.0.0.1[127.0.0.1] timed out while sending RCPT TO"
    )
    assert not result.try_next_host


@pytest_twisted.ensureDeferred
async def test_connection_dropped_mid_data(scripted: Any, tmp_path: Path) -> None:
    """The server dropping the connection during the body: 4.4.2 lost connection
    while sending message body, for every accepted recipient."""
    path = write_message(tmp_path / "msg", b"0123456789abcd\r\n" * (1 << 20))  # 16 MiB
    replies = {"EHLO": b"250-mx.test\r\n250 PIPELINING\r\n", "RCPT": b"250 ok\r\n"}
    port = scripted(replies=replies, drop_in_data=True)
    result = await run(port, envelope("a@x", "b@x"), path)
    expected = "451 4.4.2 lost connection with 127.0.0.1[127.0.0.1] while sending message body"
    assert [r.one_line() for r in result.replies] == [expected, expected]


@pytest_twisted.ensureDeferred
async def test_garbage_from_server(scripted: Any, tmp_path: Path) -> None:
    """Garbage instead of a reply is a 4.5.0 protocol error."""
    port = scripted(greeting=b"HTTP/1.1 400 Bad Request\r\n")
    path = write_message(tmp_path / "msg", b"x\r\n")
    result = await run(port, envelope("a@x"), path)
    reply = result.replies[0]
    assert reply.code == 451 and reply.status == "4.5.0"
    assert "protocol error" in reply.text and "malformed reply line" in reply.text


@pytest_twisted.ensureDeferred
async def test_421_greeting_defers(scripted: Any, tmp_path: Path) -> None:
    """A 421 greeting defers every recipient with it; another host may help."""
    port = scripted(greeting=b"421 4.3.2 too busy\r\n")
    path = write_message(tmp_path / "msg", b"x\r\n")
    result = await run(port, envelope("a@x", "b@x"), path)
    assert [r.one_line() for r in result.replies] == ["421 4.3.2 too busy"] * 2
    assert result.try_next_host


@pytest_twisted.ensureDeferred
async def test_ipv6_loopback(scripted: Any, tmp_path: Path) -> None:
    """An IPv6 literal host connects over ::1; relay is "::1[::1]:port"."""
    try:
        port = scripted(interface="::1")
    except Exception:
        pytest.skip("no IPv6 loopback")
    path = write_message(tmp_path / "msg", b"Subject: v6\r\n\r\nx\r\n")
    result = await run(port, envelope("a@x"), path, host="::1")
    assert result.replies == [Reply(250, "", "ok")]
    assert result.relay == f"::1[::1]:{port}"


@pytest_twisted.ensureDeferred
async def test_missing_queue_file(tmp_path: Path) -> None:
    """An unreadable queue file defers with 4.3.0 and connects to nobody."""
    result = await run(1, envelope("a@x"), tmp_path / "gone")
    assert result.replies[0].status == "4.3.0" and "queue file" in result.replies[0].text


@pytest_twisted.ensureDeferred
async def test_server_rejects_before_end_of_data(smtp_sink: Any, tmp_path: Path) -> None:
    """smtp-sink -A answers 550 in the middle of the body and stops reading:
    the message fails with that reply, without waiting for a timeout."""
    port, _ = smtp_sink("-A", "0")
    path = write_message(tmp_path / "msg", b"0123456789abcd\r\n" * (1 << 20))  # 16 MiB
    started = time.monotonic()
    result = await run(port, envelope("a@x.example"), path)
    assert time.monotonic() - started < 4
    assert result.replies[0].code == 550


def test_queue_file_read_error_mid_body() -> None:
    """A read error on the queue file aborts the connection and defers with
    4.3.0, not as the server's fault."""

    class Broken(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise OSError(5, "Input/output error")

    conn, transport, _ = connection()
    conn.dataReceived(b"220 hi\r\n250 mx\r\n")
    conn.next_event()
    conn.session.start_transaction(transaction_for(envelope("a@x"), [Recipient("a@x")], 10))
    conn.pump()
    for reply in (b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"):
        conn.dataReceived(reply)
    conn.next_event()
    conn.next_event()
    conn.stream_body(Broken())
    transport.producer.resumeProducing()
    assert transport.disconnecting and transport.producer is None
    conn.connectionLost(None)
    event = conn.next_event().result
    assert failure_reply(conn, event).one_line() == (
        "451 4.3.0 error reading queue file: Input/output error"
    )


@pytest_twisted.ensureDeferred
async def test_huge_greeting_is_cut_off(scripted: Any, tmp_path: Path) -> None:
    """A greeting line of megabytes is a protocol error after 4 KiB, not a
    memory hog: the mail is deferred with the reason."""
    port = scripted(greeting=b"220-" + b"A" * 2_000_000)
    path = write_message(tmp_path / "msg", b"x\r\n")
    result = await run(port, envelope("a@x"), path)
    reply = result.replies[0]
    assert reply.code == 451 and "longer than 4096 octets" in reply.text
    assert result.try_next_host


@pytest_twisted.ensureDeferred
async def test_failed_tls_handshake(tmp_path: Path) -> None:
    """A handshake that fails (here: no common protocol version) is
    'Cannot start TLS' and marked, so that level may can retry in
    plaintext while mandatory levels defer."""
    import ssl

    from mta.delivery.smtp import SessionPolicy
    from mta.delivery.tls import Policy, TrustStore, make_plan
    from tests.integration.deliverykit import Peer, issue, server_context

    ctx = server_context(issue(tmp_path, ["mx.test"]))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    port = free_port()
    peer = Peer("127.0.0.1", port, tls=ctx).start()
    try:
        plan = make_plan(
            Policy("encrypt", protocols="<=TLSv1.2"),
            hostname="mx.test",
            nexthop="mx.test",
            verify_match=["hostname"],
            secure_match=["nexthop"],
            protocols=">=TLSv1",
            mandatory_protocols=">=TLSv1",
            trust=TrustStore(),
        )
        path = write_message(tmp_path / "msg", b"x\r\n")
        env = envelope("a@x")
        result = await deliver(
            reactor,
            host="127.0.0.1",
            port=port,
            helo_name="c.example",
            envelope=env,
            recipients=env.recipients,
            message_path=path,
            timeouts=FAST,
            policy=SessionPolicy(tls=plan),
        )
    finally:
        peer.stop()
    reply = result.replies[0]
    assert reply.is_transient and reply.text.startswith("Cannot start TLS: ")
    assert result.tls_failed and result.try_next_host
    assert peer.got == []
