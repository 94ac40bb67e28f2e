"""Tests for mta.sasl.dovecot against a scripted auth server on a UNIX
socket (the real Dovecot is in tests/integration/test_esmtp_dovecot.py)."""

from __future__ import annotations

from pathlib import Path

import pytest_twisted
from twisted.internet import defer, protocol

from mta.sasl import Challenge, ClientInfo, Failure, SecurityOptions, Success, TempFailure
from mta.sasl.dovecot import DovecotBackend, _escape, _unescape


class FakeAuth(protocol.Protocol):
    """Speaks the server side of the Dovecot auth protocol 1.1."""

    def __init__(self, seen: list[str]) -> None:
        self.seen = seen
        self.buf = b""

    def connectionMade(self) -> None:
        self.transport.write(  # type: ignore[union-attr]
            b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\n"
            b"MECH\tANONYMOUS\tanonymous\nMECH\tSECRET\tprivate\nSPID\t1\nCUID\t1\nDONE\n"
        )

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for raw in lines:
            line = raw.decode()
            self.seen.append(line)
            f = line.split("\t")
            if f[0] == "AUTH":
                rid = f[1]
                resp = next((x[5:] for x in f if x.startswith("resp=")), None)
                if f[2] == "LOGIN":
                    self.reply(f"CONT\t{rid}\tVXNlcm5hbWU6")
                elif resp == "AGdvb2QAcHc=":  # \0good\0pw
                    self.reply(f"OK\t{rid}\tuser=good")
                elif resp == "AHRlbXAAcHc=":  # \0temp\0pw
                    self.reply(f"FAIL\t{rid}\ttemp\treason=backend down")
                else:
                    self.reply(f"FAIL\t{rid}\tuser=x")
            elif f[0] == "CONT":
                self.reply(f"OK\t{f[1]}\tuser=login\x01tuser")

    def reply(self, line: str) -> None:
        self.transport.write(line.encode() + b"\n")  # type: ignore[union-attr]


@pytest_twisted.ensureDeferred
async def test_exchange_with_a_scripted_server(tmp_path: Path) -> None:
    """Handshake, mechanism filtering, OK/CONT/FAIL/temp, the AUTH line's
    fields (service, rip, secured, resp), unescaping of values."""
    from twisted.internet import reactor

    seen: list[str] = []
    factory = protocol.Factory.forProtocol(lambda: FakeAuth(seen))  # type: ignore[arg-type]
    path = str(tmp_path / "auth")
    port = reactor.listenUNIX(path, factory)  # type: ignore[attr-defined]
    try:
        backend = DovecotBackend(reactor, path, "smtp", SecurityOptions())
        assert await backend.mechanisms(tls=False) == ("PLAIN", "LOGIN")
        info = ClientInfo("smtp", "192.0.2.1", 4000, "127.0.0.1", 25, tls=True)
        assert await backend.start("PLAIN", info).step("AGdvb2QAcHc=") == Success("good")
        assert await backend.start("PLAIN", info).step("AGJhZABwdw==") == Failure("")
        assert await backend.start("PLAIN", info).step("AHRlbXAAcHc=") == TempFailure(
            "backend down"
        )
        login = backend.start("LOGIN", info)
        assert await login.step(None) == Challenge("VXNlcm5hbWU6")
        assert await login.step("Ym9i") == Success("login\tuser")
        auth = next(line for line in seen if line.startswith("AUTH\t1\t"))
        assert auth.split("\t")[2:] == [
            "PLAIN",
            "service=smtp",
            "nologin",
            "lip=127.0.0.1",
            "rip=192.0.2.1",
            "lport=25",
            "rport=4000",
            "secured",
            "resp=AGdvb2QAcHc=",
        ]
        assert seen[0] == "VERSION\t1\t1" and seen[1].startswith("CPID\t")
    finally:
        await defer.maybeDeferred(port.stopListening)


@pytest_twisted.ensureDeferred
async def test_unreachable_server(tmp_path: Path) -> None:
    """No socket: no mechanisms (one warning), and an exchange gets a
    temporary failure."""
    from twisted.internet import reactor

    warnings: list[str] = []
    backend = DovecotBackend(
        reactor, str(tmp_path / "none"), "smtp", SecurityOptions(), warnings.append
    )
    assert await backend.mechanisms(tls=True) == ()
    assert await backend.mechanisms(tls=True) == ()
    assert len(warnings) == 1 and warnings[0].startswith(f"SASL: connect to {tmp_path}/none:")
    result = await backend.start("PLAIN", ClientInfo("smtp", "192.0.2.1")).step("AGEAYg==")
    assert isinstance(result, TempFailure)


def test_escaping_round_trip() -> None:
    """Tabs and newlines in values never split a line (str_tabescape)."""
    for value in ["a\tb", "x\ny\r", "\x01", "plain"]:
        assert "\t" not in _escape(value) and "\n" not in _escape(value)
        assert _unescape(_escape(value)) == value
