"""Milters with real filters on loopback: OpenDKIM signing and verifying, a
purepythonmilter filter that rejects, and filters that fail (a hand-written
fake that hangs or closes) under milter_default_action."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.harness import (
    CaptureSink,
    Daemon,
    free_port,
    port_open,
    smtp_send,
    wait_for,
)
from tests.milter.fakemilter import FakeMilter, continue_all, pkt

pytestmark = pytest.mark.timeout(90)

MESSAGE = (
    b"From: Alice <alice@test.example>\r\n"
    b"To: bob@remote.example\r\n"
    b"Subject: milter test\r\n"
    b"Message-ID: <m1@test.example>\r\n"
    b"\r\n"
    b"Hello Bob,\r\nthis message is signed.\r\n"
)


def _txt_record(zone_line: str) -> bytes:
    return "".join(re.findall(r'"([^"]*)"', zone_line)).encode()


@pytest.fixture
def dkim_key(tmp_path: Path) -> tuple[Path, bytes]:
    """A fresh key pair: the private key file and the TXT record."""
    if shutil.which("opendkim-genkey") is None:
        pytest.skip("opendkim-tools is not installed")
    keys = tmp_path / "keys"
    keys.mkdir()
    subprocess.run(
        ["opendkim-genkey", "-D", str(keys), "-d", "test.example", "-s", "sel"], check=True
    )
    return keys / "sel.private", _txt_record((keys / "sel.txt").read_text())


@pytest.fixture
def opendkim(tmp_path: Path) -> Iterator[Callable[..., int]]:
    """Start opendkim instances in the foreground; all are stopped at the end."""
    if shutil.which("opendkim") is None:
        pytest.skip("opendkim is not installed")
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, settings: str) -> int:
        port = free_port()
        conf = tmp_path / f"{name}.conf"
        conf.write_text(
            textwrap.dedent(
                f"""\
                Syslog no
                Socket inet:{port}@127.0.0.1
                Canonicalization relaxed/relaxed
                RequireSafeKeys false
                PidFile {tmp_path}/{name}.pid
                """
            )
            + textwrap.dedent(settings)
        )
        out = open(tmp_path / f"{name}.out", "wb")  # noqa: SIM115 (closed with the process)
        procs.append(subprocess.Popen(["opendkim", "-f", "-x", str(conf)], stdout=out, stderr=out))
        wait_for(lambda: port_open(port), 10, f"opendkim {name}")
        return port

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def _daemon(make_daemon: Callable[..., Daemon], capture: CaptureSink, **params: str) -> Daemon:
    d = make_daemon(
        {
            "relayhost": f"[127.0.0.1]:{capture.port}",
            "milter_command_timeout": "2s",
            "milter_content_timeout": "2s",
            **params,
        }
    )
    d.start()
    return d


def test_opendkim_signs_and_verifies(
    make_daemon: Callable[..., Daemon],
    capture: CaptureSink,
    opendkim: Callable[..., int],
    dkim_key: tuple[Path, bytes],
    tmp_path: Path,
) -> None:
    """OpenDKIM signing then OpenDKIM verifying, in smtpd_milters order: the
    delivered message carries a DKIM-Signature that dkimpy verifies with the
    public key, and the verifier's Authentication-Results (it saw the
    signer's header) says dkim=pass."""
    dkim = pytest.importorskip("dkim")
    key, txt = dkim_key
    signer = opendkim(
        "signer",
        f"""\
        Mode s
        Domain test.example
        Selector sel
        KeyFile {key}
        """,
    )
    keys = tmp_path / "public.keys"
    keys.write_bytes(b"sel._domainkey.test.example " + txt + b"\n")
    verifier = opendkim(
        "verifier",
        f"""\
        Mode v
        TestPublicKeys {keys}
        AlwaysAddARHeader yes
        AuthservID mta.test.example
        """,
    )
    d = _daemon(
        make_daemon,
        capture,
        smtpd_milters=f"inet:127.0.0.1:{signer}, inet:127.0.0.1:{verifier}",
    )
    code, text = smtp_send(d.port, "alice@test.example", ["bob@remote.example"], MESSAGE)
    assert code == 250, text
    [msg] = capture.wait(1)
    data = msg.data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert b"DKIM-Signature:" in data
    assert re.search(rb"Authentication-Results: mta.test.example;\s+dkim=pass", data), data[:2000]

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return txt if name.rstrip(b".") == b"sel._domainkey.test.example" else b""

    assert dkim.verify(data, dnsfunc=dnsfunc)
    assert "warning: milter" not in d.log_text()


def test_opendkim_verifier_adds_authentication_results(
    make_daemon: Callable[..., Daemon], capture: CaptureSink, opendkim: Callable[..., int]
) -> None:
    """An unsigned message through OpenDKIM in verify mode (over a unix
    socket path is not needed here): Authentication-Results dkim=none."""
    verifier = opendkim(
        "verifier",
        """\
        Mode v
        AlwaysAddARHeader yes
        AuthservID mta.test.example
        """,
    )
    d = _daemon(make_daemon, capture, smtpd_milters=f"inet:127.0.0.1:{verifier}")
    code, text = smtp_send(d.port, "alice@test.example", ["bob@remote.example"], MESSAGE)
    assert code == 250, text
    [msg] = capture.wait(1)
    assert re.search(rb"Authentication-Results: mta.test.example;\s+dkim=none", msg.data)
    assert msg.data.endswith(b"this message is signed.\r\n")


REJECT_APP = """
import sys
from purepythonmilter import PurePythonMilter, RcptTo, Continue, RejectWithCode
from purepythonmilter import VerdictOrContinue

async def on_rcpt_to(cmd: RcptTo) -> VerdictOrContinue:
    if cmd.address.strip("<>").startswith("blocked"):
        return RejectWithCode(primary_code=(5, 5, 0), enhanced_code=(5, 7, 1),
                              text="Recipient blocked by test milter")
    return Continue()

PurePythonMilter(name="reject", hook_on_rcpt_to=on_rcpt_to).run_server(
    host="127.0.0.1", port=int(sys.argv[1]))
"""


@pytest.fixture
def reject_milter(tmp_path: Path) -> Iterator[int]:
    """A purepythonmilter filter that rejects recipients named blocked*."""
    pytest.importorskip("purepythonmilter")
    port = free_port()
    script = tmp_path / "reject_milter.py"
    script.write_text(REJECT_APP)
    out = open(tmp_path / "reject_milter.out", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([sys.executable, str(script), str(port)], stdout=out, stderr=out)
    try:
        wait_for(lambda: port_open(port), 10, "the reject milter")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        out.close()


def test_python_milter_rejects_recipient(
    make_daemon: Callable[..., Daemon], capture: CaptureSink, reject_milter: int
) -> None:
    """The filter's SMFIR_REPLYCODE is the RCPT reply; other recipients
    pass and the message goes to them only; the maillog has milter-reject."""
    import smtplib

    d = _daemon(make_daemon, capture, smtpd_milters=f"inet:127.0.0.1:{reject_milter}")
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as s:
        s.ehlo("client.test.example")
        assert s.mail("alice@test.example")[0] == 250
        code, text = s.rcpt("blocked@remote.example")
        assert (code, text) == (550, b"5.7.1 Recipient blocked by test milter")
        assert s.rcpt("bob@remote.example")[0] == 250
        assert s.data(MESSAGE)[0] == 250
    [msg] = capture.wait(1)
    assert msg.recipients == ["bob@remote.example"]
    wait_for(lambda: "milter-reject: RCPT" in d.log_text(), 5, "the milter-reject line")
    assert "to=<blocked@remote.example>" in d.log_text()


def test_hanging_milter_default_tempfail(
    make_daemon: Callable[..., Daemon], capture: CaptureSink
) -> None:
    """A filter that stops answering: after milter_command_timeout the
    default action tempfail answers 451 4.7.1; the daemon logs the filter
    and the fault and carries on serving."""
    fake = FakeMilter(lambda cmd, data: "hang" if cmd == b"M" else continue_all(cmd, data))
    fake.start()
    try:
        d = _daemon(make_daemon, capture, smtpd_milters=fake.address, milter_command_timeout="1s")
        code, text = _mail(d.port)
        assert (code, text) == (451, b"4.7.1 Service unavailable - try again later")
        assert f"warning: milter {fake.address}: SMFIC_MAIL: timeout after 1s" in d.log_text()
        code, _ = _mail(d.port)  # the next session tries again (and fails again)
        assert code == 451
    finally:
        fake.stop()


def test_closing_milter_default_accept_and_abort(
    make_daemon: Callable[..., Daemon], capture: CaptureSink
) -> None:
    """A filter that closes the socket: default_action=accept (per filter)
    lets the mail through; the seed's "abort" answers 421 and ends the
    session; both log the fault."""
    fake = FakeMilter(lambda cmd, data: "close" if cmd == b"M" else continue_all(cmd, data))
    fake.start()
    try:
        d = _daemon(
            make_daemon,
            capture,
            smtpd_milters=f"{{ {fake.address}, default_action=accept }}",
        )
        code, text = smtp_send(d.port, "alice@test.example", ["bob@remote.example"], MESSAGE)
        assert code == 250, text
        capture.wait(1)
        assert f"warning: milter {fake.address}: connection closed by the filter" in d.log_text()

        d2 = _daemon(
            make_daemon, capture, smtpd_milters=fake.address, milter_default_action="abort"
        )
        code, text = _mail(d2.port)
        assert code == 421
    finally:
        fake.stop()


def _editing_milter(cmd: bytes, data: bytes) -> list[bytes] | str | None:
    """At end of message: every kind of modification, then accept."""
    if cmd != b"E":
        return continue_all(cmd, data)
    return [
        pkt(b"p"),
        pkt(b"h", b"X-Filtered\0yes\0"),
        pkt(b"i", struct.pack(">I", 0) + b"X-First\0top\0"),
        pkt(b"m", struct.pack(">I", 1) + b"Subject\0changed subject\0"),
        pkt(b"m", struct.pack(">I", 1) + b"Message-ID\0\0"),
        pkt(b"e", b"<bounces@test.example>\0"),
        pkt(b"+", b"<carol@remote.example>\0"),
        pkt(b"-", b"<bob@remote.example>\0"),
        pkt(b"b", b"replaced body\r\n"),
        pkt(b"a"),
    ]


def test_end_of_message_modifications_are_what_is_queued(
    make_daemon: Callable[..., Daemon], capture: CaptureSink
) -> None:
    """Header add/insert/change/delete, body replacement, change sender,
    add and delete recipient: the delivered message and envelope show them."""
    fake = FakeMilter(_editing_milter).start()
    try:
        d = _daemon(make_daemon, capture, smtpd_milters=fake.address)
        code, text = smtp_send(d.port, "alice@test.example", ["bob@remote.example"], MESSAGE)
        assert code == 250, text
        [msg] = capture.wait(1)
    finally:
        fake.stop()
    assert msg.sender == "bounces@test.example"
    assert msg.recipients == ["carol@remote.example"]
    head, _, body = msg.data.partition(b"\r\n\r\n")
    assert head.startswith(b"X-First: top\r\nReceived: from client.test.example")
    assert head.endswith(b"X-Filtered: yes")
    assert b"Subject: changed subject" in head and b"milter test" not in head
    assert b"Message-ID" not in head
    assert body == b"replaced body\r\n"


def test_quarantine_goes_to_the_hold_queue(make_daemon: Callable[..., Daemon]) -> None:
    """SMFIR_QUARANTINE: the message is accepted and held (mailq shows '!')."""
    fake = FakeMilter(
        lambda cmd, data: (
            [pkt(b"q", b"looks odd\0"), pkt(b"c")] if cmd == b"E" else continue_all(cmd, data)
        )
    ).start()
    try:
        d = make_daemon({"smtpd_milters": fake.address})
        d.start()
        code, text = smtp_send(d.port, "alice@test.example", ["bob@remote.example"], MESSAGE)
        assert code == 250, text
        wait_for(lambda: len(d.queue_files("hold")) == 1, 10, "a held message")
        assert "milter-hold: END-OF-MESSAGE" in d.log_text()
        assert "looks odd" in d.log_text()
    finally:
        fake.stop()


def test_garbage_and_oversize_replies_apply_the_default(
    make_daemon: Callable[..., Daemon], capture: CaptureSink
) -> None:
    """An unknown reply code and an oversize packet are faults: the default
    action (reject here) applies and the log names the filter and the fault."""
    garbage = FakeMilter(
        lambda cmd, data: [pkt(b"Z")] if cmd == b"H" else continue_all(cmd, data)
    ).start()
    oversize = FakeMilter(
        lambda cmd, data: (
            [struct.pack(">I", 1 << 30) + b"c"] if cmd == b"H" else continue_all(cmd, data)
        )
    ).start()
    try:
        for fake, fault in (
            (garbage, "SMFIC_HELO reply: unknown reply code 'Z'"),
            (oversize, "reply packet too large"),
        ):
            d = _daemon(
                make_daemon,
                capture,
                smtpd_milters=fake.address,
                milter_default_action="reject",
            )
            import smtplib

            with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as s:
                code, text = s.ehlo("client.test.example")
                assert (code, text) == (550, b"5.7.1 Command rejected")
            wait_for(lambda d=d, f=fault: f in d.log_text(), 5, fault)  # type: ignore[misc]
            assert f"warning: milter {fake.address}: " in d.log_text()
    finally:
        garbage.stop()
        oversize.stop()


def _mail(port: int) -> tuple[int, bytes]:
    import smtplib

    s = smtplib.SMTP("127.0.0.1", port, timeout=15)
    try:
        s.ehlo("client.test.example")
        return s.mail("alice@test.example")
    finally:
        try:
            s.quit()
        except smtplib.SMTPException:
            s.close()
