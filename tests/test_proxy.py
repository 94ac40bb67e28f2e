"""Tests for mta.proxy: the PROXY header before SMTP, on a StringTransport
with a fake clock."""

from __future__ import annotations

from twisted.internet import protocol
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mta.proxy import ProxyWrappingFactory, header_kind
from tests.integration.esmtp_peers import proxy_v1, proxy_v2


class Recorder(protocol.Protocol):
    def __init__(self) -> None:
        self.peer: object = None
        self.data = b""
        self.lost = False

    def connectionMade(self) -> None:
        self.peer = self.transport.getPeer()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: object = None) -> None:
        self.lost = True


def connect(timeout: float = 5.0) -> tuple[object, Recorder, StringTransport, Clock, list[str]]:
    clock = Clock()
    rec = Recorder()
    warnings: list[str] = []
    inner = protocol.Factory.forProtocol(lambda: rec)  # type: ignore[arg-type]
    factory = ProxyWrappingFactory(
        inner, reactor=clock, timeout=timeout, warn=lambda p, r: warnings.append(r)
    )
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 9999))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 9999))
    proto.makeConnection(transport)
    return proto, rec, transport, clock, warnings


def test_header_kind() -> None:
    """v1 text, v2 binary, not a header, or too short to tell."""
    assert header_kind(b"PROXY TCP4") == "v1"
    assert header_kind(b"PROX") is None
    assert header_kind(proxy_v2("1.2.3.4", "5.6.7.8", 1, 2)) == "v2"
    assert header_kind(b"\r\n\r\n\x00") is None
    assert header_kind(b"EHLO x") == ""


def test_v1_split_across_reads_then_data() -> None:
    """The wrapped protocol connects only once the header is complete, with
    the header's source address; bytes after the header reach it."""
    proto, rec, transport, clock, warnings = connect()
    header = proxy_v1("192.0.2.7", "127.0.0.1", 40000, 25)
    for i in range(len(header)):
        proto.dataReceived(header[i : i + 1])  # type: ignore[attr-defined]
        if i < len(header) - 1:
            assert rec.peer is None
    assert rec.peer == IPv4Address("TCP", "192.0.2.7", 40000)
    proto.dataReceived(b"EHLO x\r\n")  # type: ignore[attr-defined]
    assert rec.data == b"EHLO x\r\n"
    clock.advance(10)
    assert not transport.disconnecting and warnings == []


def test_v2_with_data_in_the_same_read_and_local() -> None:
    """v2 header and the first command in one read; LOCAL keeps the real peer."""
    proto, rec, _, _, _ = connect()
    proto.dataReceived(proxy_v2("198.51.100.9", "127.0.0.1", 1, 25) + b"QUIT\r\n")  # type: ignore[attr-defined]
    assert rec.peer == IPv4Address("TCP", "198.51.100.9", 1) and rec.data == b"QUIT\r\n"
    proto, rec, _, _, _ = connect()
    proto.dataReceived(proxy_v2("0.0.0.0", "0.0.0.0", 0, 0, local=True))  # type: ignore[attr-defined]
    assert rec.peer == IPv4Address("TCP", "127.0.0.1", 9999)


def test_bad_header_and_timeout_close() -> None:
    """No header or a malformed one, and silence past the timeout: closed
    with a warning, and the wrapped protocol never sees the connection."""
    proto, rec, transport, _, warnings = connect()
    proto.dataReceived(b"EHLO direct\r\n")  # type: ignore[attr-defined]
    assert transport.disconnecting and rec.peer is None
    assert warnings == ["not a PROXY protocol header"]
    proto, rec, transport, _, warnings = connect()
    proto.dataReceived(b"PROXY TCP4 nonsense\r\n")  # type: ignore[attr-defined]
    assert transport.disconnecting and warnings == ["malformed PROXY protocol header"]
    proto, rec, transport, clock, warnings = connect(timeout=2)
    proto.dataReceived(b"PROXY TCP4 1.2")  # type: ignore[attr-defined]
    clock.advance(2)
    assert transport.disconnecting and rec.peer is None
    assert warnings == ["timeout reading the PROXY protocol header"]
    proto.connectionLost(None)  # type: ignore[attr-defined]
    assert not rec.lost
