"""MilterSession against scripted filters on real sockets: stage order and
macros, unix sockets, accept/skip semantics, progress, default actions,
header edits."""

from __future__ import annotations

from pathlib import Path

import pytest_twisted
from twisted.internet import reactor, task

from mta.milter import protocol as p
from mta.milter.client import MilterSpec, parse_milters
from mta.milter.session import MilterSession, edit_headers, read_headers, split_header
from tests.milter.fakemilter import FakeMilter, continue_all, pkt


def session(*fakes: FakeMilter, default: str = "tempfail", timeout: float = 1.0) -> MilterSession:
    specs = [
        MilterSpec(
            f.address, command_timeout=timeout, content_timeout=timeout, default_action=default
        )
        for f in fakes
    ]
    logged: list[str] = []
    s = MilterSession(reactor, specs, log=logged.append)
    s.logged = logged  # type: ignore[attr-defined]
    return s


@pytest_twisted.ensureDeferred
async def test_stages_in_order_with_macros_over_unix_socket(tmp_path: Path) -> None:
    """connect, HELO, MAIL, RCPT, DATA, headers, EOH, body, EOM and quit go
    out in order over unix:/path; MAIL's macros carry the values given."""
    fake = FakeMilter(unix_path=str(tmp_path / "milter.sock")).start()
    try:
        s = session(fake)
        s.macros.update({"i": "ABC123", "{mail_addr}": "a@b.example", "j": "mx.example"})
        assert await s.connect("client.example", "192.0.2.1", 4242) is None
        assert await s.helo("client.example") is None
        assert await s.mail("a@b.example", ["SIZE=10"]) is None
        assert await s.rcpt("c@d.example") is None
        assert await s.data() is None
        msg = tmp_path / "msg"
        msg.write_bytes(b"Subject: hi\r\nFrom: a@b.example\r\n\r\nbody\r\n")
        verdict, edits = await s.message(msg, lambda new: None)
        assert verdict is None and edits.quarantine is None
        s.close()
        for _ in range(50):  # the reactor must run to write SMFIC_QUIT
            if b"Q" in fake.commands():
                break
            await task.deferLater(reactor, 0.1, lambda: None)
    finally:
        fake.stop()
    cmds = [c for c in fake.commands() if c != b"D"]
    assert cmds == [b"O", b"C", b"H", b"M", b"R", b"T", b"L", b"L", b"N", b"B", b"E", b"Q"]
    macros = [d for c, d in fake.seen if c == b"D" and d[:1] == b"M"]
    assert macros == [b"Mi\0ABC123\0{mail_addr}\0a@b.example\0"]
    assert (b"M", b"<a@b.example>\0SIZE=10\0") in fake.seen
    assert (b"L", b"Subject\0hi\0") in fake.seen


@pytest_twisted.ensureDeferred
async def test_accept_skips_the_filter_and_reject_stops_the_chain() -> None:
    """A filter that accepts at MAIL is not asked about RCPT; a second filter's
    reject is the answer (550 5.7.1 Command rejected)."""
    first = FakeMilter(lambda c, d: [pkt(b"a")] if c == b"M" else continue_all(c, d)).start()
    second = FakeMilter(lambda c, d: [pkt(b"r")] if c == b"R" else continue_all(c, d)).start()
    try:
        s = session(first, second)
        assert await s.mail("a@b.example") is None
        verdict = await s.rcpt("c@d.example")
        assert verdict is not None and verdict.action == "reject"
        assert (
            verdict.reply is not None and verdict.reply.one_line() == "550 5.7.1 Command rejected"
        )
        s.close()
    finally:
        first.stop()
        second.stop()
    assert b"R" not in first.commands()


@pytest_twisted.ensureDeferred
async def test_progress_restarts_the_timeout() -> None:
    """SMFIR_PROGRESS every 0.6 s keeps a 1 s command timeout from firing."""
    fake = FakeMilter(lambda c, d: "slow" if c == b"M" else continue_all(c, d)).start()
    try:
        s = session(fake)
        assert await s.mail("a@b.example") is None
        assert s.logged == []  # type: ignore[attr-defined]
        s.close()
    finally:
        fake.stop()


@pytest_twisted.ensureDeferred
async def test_unreachable_filter_default_actions() -> None:
    """Nothing listening: tempfail gives 451 4.7.1 at every stage; accept
    goes on; the log names the filter and the fault."""
    fake = FakeMilter()  # bound, never listening: connection refused
    fake.stop()
    s = session(fake)
    verdict = await s.helo("x")
    assert verdict is not None and verdict.reply is not None
    assert verdict.reply.one_line() == "451 4.7.1 Service unavailable - try again later"
    assert (await s.mail("a@b")) == verdict
    assert s.logged[0].startswith(f"warning: milter {fake.address}: connect: ")  # type: ignore[attr-defined]
    s = session(fake, default="accept")
    assert await s.helo("x") is None
    assert await s.mail("a@b") is None


def test_header_edits_follow_libmilter_indexes(tmp_path: Path) -> None:
    """CHGHEADER counts same-name headers from 1, empty deletes, past the
    end adds; INSHEADER 0 is the top."""
    f = tmp_path / "m"
    f.write_bytes(b"A: 1\r\nB: x\r\n\tfolded\r\nA: 2\r\n\r\nbody\r\n")
    with open(f, "rb") as fh:
        headers, _ = read_headers(fh)
        assert fh.read() == b"body\r\n"
    assert split_header(headers[1], leadspace=False) == ("B", "x\n\tfolded")
    mods = [
        p.Response("chgheader", ("A", "two"), index=2),
        p.Response("chgheader", ("B", ""), index=1),
        p.Response("chgheader", ("C", "new"), index=1),
        p.Response("insheader", ("Z", "top"), index=0),
    ]
    assert edit_headers(headers, mods, leadspace=False) == [
        b"Z: top\r\n",
        b"A: 1\r\n",
        b"A: two\r\n",
        b"C: new\r\n",
    ]


def test_milter_list_syntax() -> None:
    """Commas/spaces separate filters; braces carry per-filter overrides."""
    specs = parse_milters(
        "inet:127.0.0.1:1, { unix:/run/m.sock, default_action = accept, command_timeout = 5s }",
        default_action="tempfail",
    )
    assert [(s.address, s.default_action, s.command_timeout) for s in specs] == [
        ("inet:127.0.0.1:1", "tempfail", 30.0),
        ("unix:/run/m.sock", "accept", 5.0),
    ]
