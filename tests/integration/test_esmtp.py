"""The hardened ESMTP server end to end, with real clients on loopback.

One daemon (module fixture) serves five smtpd services from one master.cf,
each with its own ``-o`` overrides as a Postfix administrator writes them:
port 25 style with opportunistic STARTTLS, SMTPS (``smtpd_tls_wrappermode``)
with AUTH, submission (``encrypt`` + AUTH against the built-in table
backend), a service behind HAProxy's PROXY protocol, and a strict service
with small limits.  Clients are swaks, openssl s_client, smtplib and a raw
socket client; mail is delivered to Postfix's smtp-sink and checked there.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.esmtp_peers import RawClient, client_context, make_cert, proxy_v1, proxy_v2
from tests.integration.harness import Daemon, SmtpSink, free_port, wait_for

pytestmark = pytest.mark.timeout(120)

USER, PASSWORD = "alice", "wonder land"


class Ports:
    def __init__(self) -> None:
        self.smtp = free_port()
        self.smtps = free_port()
        self.submission = free_port()
        self.proxied = free_port()
        self.strict = free_port()


@pytest.fixture(scope="module")
def sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpSink]:
    s = SmtpSink(tmp_path_factory.mktemp("sink"))
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def mta(tmp_path_factory: pytest.TempPathFactory, sink: SmtpSink) -> Iterator[tuple[Daemon, Ports]]:
    root = tmp_path_factory.mktemp("esmtp")
    cert, key = make_cert(root / "conf" / "tls")
    hashed = subprocess.run(
        ["doveadm", "pw", "-s", "SHA512-CRYPT", "-p", PASSWORD],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    (root / "conf").mkdir(exist_ok=True)
    (root / "conf" / "sasl_passwd").write_text(f"{USER} {hashed}\nplainuser {{PLAIN}}secret\n")
    p = Ports()
    master = f"""
127.0.0.1:{p.smtp} inet n - n - - smtpd
  -o smtpd_tls_security_level=may
127.0.0.1:{p.smtps} inet n - n - - smtpd
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
127.0.0.1:{p.submission} inet n - n - - smtpd
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_authenticated_header=yes
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
127.0.0.1:{p.proxied} inet n - n - - smtpd
  -o smtpd_upstream_proxy_protocol=haproxy
  -o smtpd_upstream_proxy_timeout=1s
127.0.0.1:{p.strict} inet n - n - - smtpd
  -o smtpd_tls_security_level=may
  -o smtpd_timeout=2s
  -o smtpd_per_request_deadline=yes
  -o smtpd_client_connection_count_limit=3
  -o smtpd_client_message_rate_limit=3
  -o smtpd_client_event_limit_exceptions=
  -o smtpd_soft_error_limit=2
  -o smtpd_error_sleep_time=1s
  -o smtpd_hard_error_limit=5
"""
    d = Daemon(
        root / "conf",
        p.smtp,
        {
            "relayhost": f"[127.0.0.1]:{sink.port}",
            "smtpd_tls_cert_file": str(cert),
            "smtpd_tls_key_file": str(key),
            "smtpd_sasl_type": "table",
            "smtpd_sasl_password_maps": "texthash:sasl_passwd",
            "message_size_limit": "1000000",
        },
        master,
    )
    d.start()
    for port in (p.smtps, p.submission, p.proxied, p.strict):
        wait_for(lambda port=port: _listening(port), 10, f"port {port}")
    yield d, p
    d.stop()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def swaks(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["swaks", "--timeout", "15", "--helo", "client.test.example", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def queue_id(swaks_out: str) -> str:
    return swaks_out.split("queued as ")[1].split()[0]


def delivered(sink: SmtpSink, marker: bytes) -> bytes:
    wait_for(lambda: any(marker in m for m in sink.messages()), 15, "delivery to the sink")
    return next(m for m in sink.messages() if marker in m)


# -- STARTTLS, SMTPS ---------------------------------------------------------------


def test_swaks_starttls_delivers_with_tls_in_received(
    mta: tuple[Daemon, Ports], sink: SmtpSink
) -> None:
    """swaks --tls: the message arrives intact; our Received: header says
    ESMTPS and names protocol and cipher in Postfix's words."""
    d, p = mta
    r = swaks(
        "--server",
        f"127.0.0.1:{p.smtp}",
        "--tls",
        "--from",
        "a@example.org",
        "--to",
        "tls@example.net",
        "--header",
        "Subject: starttls-1",
        "--body",
        "body one",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "250-STARTTLS" in r.stdout
    got = delivered(sink, b"starttls-1")
    assert b"with ESMTPS id " + queue_id(r.stdout).encode() in got
    assert b"\t(using TLSv1.3 with cipher TLS_" in got and b"/256 bits))" in got
    assert b"(No client certificate requested)" in got
    assert b"body one" in got
    assert "Anonymous TLS connection established from localhost[127.0.0.1]: TLSv1.3" in (
        d.log_text()
    )


def test_openssl_sees_tls12_or_newer_and_tls11_is_refused(mta: tuple[Daemon, Ports]) -> None:
    """openssl s_client -starttls smtp negotiates TLS 1.2+; a client that
    offers only TLS 1.1 is refused by the server (protocol version alert)."""
    _, p = mta
    ok = subprocess.run(
        ["openssl", "s_client", "-brief", "-starttls", "smtp", "-connect", f"127.0.0.1:{p.smtp}"],
        input="QUIT\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    out = ok.stdout + ok.stderr
    assert "Protocol version: TLSv1.3" in out or "Protocol version: TLSv1.2" in out, out
    tls12 = subprocess.run(
        [
            "openssl",
            "s_client",
            "-brief",
            "-tls1_2",
            "-starttls",
            "smtp",
            "-connect",
            f"127.0.0.1:{p.smtp}",
        ],
        input="QUIT\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "Protocol version: TLSv1.2" in tls12.stdout + tls12.stderr
    old = subprocess.run(
        [
            "openssl",
            "s_client",
            "-brief",
            "-tls1_1",
            "-cipher",
            "DEFAULT@SECLEVEL=0",
            "-starttls",
            "smtp",
            "-connect",
            f"127.0.0.1:{p.smtp}",
        ],
        input="QUIT\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    err = (old.stdout + old.stderr).lower()
    assert old.returncode != 0
    assert "alert protocol version" in err or "unsupported protocol" in err, err
    assert "Protocol version" not in old.stdout


def test_plaintext_pipelined_behind_starttls_is_discarded(mta: tuple[Daemon, Ports]) -> None:
    """CVE-2011-0411: a command sent in the same packet as STARTTLS is never
    executed; after the handshake the first reply answers our EHLO."""
    _, p = mta
    c = RawClient(p.smtp)
    c.cmd("EHLO attacker.example")
    c.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<injected@example.org>\r\n")
    code, _ = c.reply()
    assert code == 220
    c.sock = client_context().wrap_socket(c.sock)
    code, text = c.cmd("EHLO client.example")
    assert code == 250 and "STARTTLS" not in text and "CHUNKING" in text
    assert c.cmd("MAIL FROM:<real@example.org>") == (250, "2.1.0 Ok")
    c.close()


def test_swaks_smtps_wrappermode_with_auth_plain(mta: tuple[Daemon, Ports], sink: SmtpSink) -> None:
    """swaks --tlsc on the SMTPS service: implicit TLS from the first byte,
    AUTH PLAIN against the table backend, relaying only when authenticated."""
    d, p = mta
    r = swaks(
        "--server",
        f"127.0.0.1:{p.smtps}",
        "--tlsc",
        "--auth",
        "PLAIN",
        "--auth-user",
        USER,
        "--auth-password",
        PASSWORD,
        "--from",
        "alice@example.org",
        "--to",
        "smtps@example.net",
        "--header",
        "Subject: smtps-1",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "235 2.7.0 Authentication successful" in r.stdout
    got = delivered(sink, b"smtps-1")
    assert b"with ESMTPSA id" in got
    assert b"(Authenticated sender:" not in got  # smtpd_sasl_authenticated_header = no
    assert f"sasl_method=PLAIN, sasl_username={USER}" in d.log_text()
    anon = swaks(
        "--server",
        f"127.0.0.1:{p.smtps}",
        "--tlsc",
        "--from",
        "x@example.org",
        "--to",
        "smtps@example.net",
    )
    assert anon.returncode != 0 and "554 5.7.1" in anon.stdout  # relay access denied


def test_submission_requires_tls_then_auth_login(mta: tuple[Daemon, Ports], sink: SmtpSink) -> None:
    """smtpd_tls_security_level = encrypt: 530 before STARTTLS, AUTH only
    under TLS; AUTH LOGIN succeeds, bad passwords get 535 5.7.8, a {PLAIN}
    entry is never compared, the third failure disconnects."""
    d, p = mta
    c = RawClient(p.submission)
    code, text = c.cmd("EHLO c.example")
    assert code == 250 and "STARTTLS" in text and "AUTH" not in text
    assert c.cmd("MAIL FROM:<a@example.org>")[0] == 530
    assert c.cmd("AUTH PLAIN AGFsaWNlAHg=")[0] == 530
    c.starttls()
    code, text = c.cmd("EHLO c.example")
    assert "AUTH PLAIN LOGIN" in text
    bad = base64.b64encode(f"\0{USER}\0wrong".encode()).decode()
    assert c.cmd(f"AUTH PLAIN {bad}") == (
        535,
        "5.7.8 Error: authentication failed: authentication failure",
    )
    plain = base64.b64encode(b"\0plainuser\0secret").decode()
    assert c.cmd(f"AUTH PLAIN {plain}")[0] == 535
    assert c.cmd(f"AUTH PLAIN {bad}")[0] == 535
    assert c.reply()[0] == 421
    assert c.closed()
    c.close()
    assert "warning: SASL table: user plainuser: unsupported password scheme {PLAIN}" in (
        d.log_text()
    )
    r = swaks(
        "--server",
        f"127.0.0.1:{p.submission}",
        "--tls",
        "--auth",
        "LOGIN",
        "--auth-user",
        USER,
        "--auth-password",
        PASSWORD,
        "--from",
        "alice@example.org",
        "--to",
        "sub@example.net",
        "--header",
        "Subject: submission-1",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    got = delivered(sink, b"submission-1")
    assert f"\t(Authenticated sender: {USER})".encode() in got
    assert b"with ESMTPSA id" in got


# -- PIPELINING, BDAT, extensions ------------------------------------------------------


def test_swaks_pipeline(mta: tuple[Daemon, Ports], sink: SmtpSink) -> None:
    """swaks --pipeline: MAIL, RCPTs and DATA in one go, replies in order."""
    _, p = mta
    r = swaks(
        "--server",
        f"127.0.0.1:{p.smtp}",
        "--pipeline",
        "--from",
        "a@example.org",
        "--to",
        "p1@example.net,p2@example.net",
        "--header",
        "Subject: pipeline-1",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    got = delivered(sink, b"pipeline-1")
    assert b"Subject: pipeline-1" in got


def test_bdat_chunks_arrive_intact(mta: tuple[Daemon, Ports], sink: SmtpSink) -> None:
    """CHUNKING (RFC 3030): pipelined BDAT chunks, with lines that start with
    a dot and 8-bit bytes, arrive byte for byte; each chunk gets its 250."""
    _, p = mta
    c = RawClient(p.smtp)
    code, text = c.cmd("EHLO c.example")
    assert "CHUNKING" in text.splitlines()[-1]
    part1 = b"Subject: bdat-1\r\nX-Test: chunks\r\n\r\n.leading dot\r\n"
    part2 = "..two dots\r\n\u00c4pfel 8bit\r\n.\r\nlast line\r\n".encode()
    c.send(
        b"MAIL FROM:<a@example.org> BODY=8BITMIME\r\nRCPT TO:<bdat@example.net>\r\n"
        + f"BDAT {len(part1)}\r\n".encode()
        + part1
        + f"BDAT {len(part2)} LAST\r\n".encode()
        + part2
    )
    assert c.reply()[0] == 250
    assert c.reply()[0] == 250
    assert c.reply() == (250, f"2.0.0 Ok: {len(part1)} octets")
    code, text = c.reply()
    assert code == 250 and "queued as" in text
    assert c.cmd("QUIT")[0] == 221
    got = delivered(sink, b"bdat-1")
    body = got.replace(b"\r\n", b"\n")
    assert (part1 + part2).replace(b"\r\n", b"\n").split(b"\n\n", 1)[1] in body


def test_ehlo_lists_extensions_and_unknown_parameters(mta: tuple[Daemon, Ports]) -> None:
    """EHLO offers each extension; DSN parameters are kept; an unknown MAIL
    or RCPT parameter is 555 5.5.4."""
    _, p = mta
    c = RawClient(p.smtp)
    text = c.cmd("EHLO c.example")[1]
    for keyword in (
        "PIPELINING",
        "SIZE 1000000",
        "STARTTLS",
        "ENHANCEDSTATUSCODES",
        "8BITMIME",
        "DSN",
        "SMTPUTF8",
        "CHUNKING",
    ):
        assert keyword in text.splitlines()
    assert c.cmd("MAIL FROM:<a@example.org> XFOO=1") == (555, "5.5.4 Unsupported option: XFOO")
    assert c.cmd("MAIL FROM:<a@example.org> SIZE=2000000")[0] == 552
    assert c.cmd("MAIL FROM:<a@example.org> RET=HDRS ENVID=abc SMTPUTF8")[0] == 250
    assert c.cmd("RCPT TO:<x@example.net> XBAR")[0] == 555
    assert c.cmd("RCPT TO:<ü@example.net> NOTIFY=FAILURE ORCPT=rfc822;x@example.net")[0] == 250
    c.close()


# -- PROXY protocol --------------------------------------------------------------------


def test_proxy_protocol_v1_and_v2_give_the_real_client(mta: tuple[Daemon, Ports]) -> None:
    """Behind HAProxy the client is the one the header names: in the log,
    in relay control (192.0.2.7 is not in mynetworks), and the greeting
    waits for the header.  LOCAL (health check) keeps the proxy's address."""
    d, p = mta
    c = RawClient(p.proxied, greet=False)
    c.send(proxy_v1("192.0.2.7", "127.0.0.1", 40000, p.proxied))
    assert c.reply()[0] == 220
    c.cmd("EHLO far.example")
    c.cmd("MAIL FROM:<a@example.org>")
    code, text = c.cmd("RCPT TO:<x@example.net>")
    assert code == 554 and "Relay access denied" in text
    c.close()
    v2 = RawClient(p.proxied, greet=False)
    v2.send(proxy_v2("198.51.100.9", "127.0.0.1", 40001, p.proxied) + b"EHLO v2.example\r\n")
    assert v2.reply()[0] == 220
    assert v2.reply()[0] == 250
    v2.close()
    local = RawClient(p.proxied, greet=False)
    local.send(proxy_v2("0.0.0.0", "0.0.0.0", 0, 0, local=True))
    assert local.reply()[0] == 220
    local.cmd("EHLO lb.example")
    local.cmd("MAIL FROM:<a@example.org>")
    assert local.cmd("RCPT TO:<x@example.net>")[0] == 250  # 127.0.0.1: mynetworks
    local.close()
    wait_for(lambda: "connect from unknown[198.51.100.9]" in d.log_text(), 5, "the v2 log")
    assert "connect from unknown[192.0.2.7]" in d.log_text()


def test_proxy_protocol_bad_or_missing_header_closes(mta: tuple[Daemon, Ports]) -> None:
    """A connection that does not start with a PROXY header, or sends none
    within smtpd_upstream_proxy_timeout, is closed without a greeting."""
    d, p = mta
    bad = RawClient(p.proxied, greet=False)
    bad.send(b"EHLO direct.example\r\n")
    assert bad.closed() and bad.buf == b""
    silent = RawClient(p.proxied, greet=False)
    started = time.monotonic()
    assert silent.closed(5) and silent.buf == b""
    assert 0.5 < time.monotonic() - started < 4
    log = d.log_text()
    assert "warning: haproxy read: not a PROXY protocol header" in log
    assert "warning: haproxy read: timeout reading the PROXY protocol header" in log


# -- bad input -----------------------------------------------------------------------------


def test_bad_commands_get_codes(mta: tuple[Daemon, Ports]) -> None:
    """Garbage before EHLO, NUL and control bytes, an over-long line, a bare
    LF in DATA: each gets its code, and the last one closes (Postfix 3.9)."""
    _, p = mta
    c = RawClient(p.smtp)
    assert c.cmd("GARBAGE")[0] == 500
    c.send(b"NOOP \x00\x01\r\n")
    assert c.reply()[0] == 500
    c.send(b"NOOP " + b"x" * 5000 + b"\r\n")
    assert c.reply() == (500, "5.5.2 Error: line too long")
    assert c.cmd("EHLO c.example")[0] == 250
    c.cmd("MAIL FROM:<a@example.org>")
    c.cmd("RCPT TO:<x@example.net>")
    assert c.cmd("DATA")[0] == 354
    c.send(b"Subject: x\r\n\r\nline\n.\nMAIL FROM:<smuggled@example.org>\r\n.\r\n")
    code, text = c.reply()
    assert code == 521 and "bare <LF> received" in text
    assert c.closed()


def test_recipient_flood_is_cut_off_and_others_are_served(mta: tuple[Daemon, Ports]) -> None:
    """100,000 pipelined RCPTs: 452 past smtpd_recipient_limit, then errors,
    then 421 and close; a second client is answered meanwhile."""
    _, p = mta
    c = RawClient(p.smtp, timeout=60)
    c.cmd("EHLO flood.example")
    c.cmd("MAIL FROM:<a@example.org>")
    flood = b"".join(b"RCPT TO:<r%d@example.net>\r\n" % i for i in range(100_000))

    def send() -> None:
        try:
            c.sock.sendall(flood)
        except OSError:
            pass  # the server closed in the middle, as it should

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    other = RawClient(p.smtp)
    started = time.monotonic()
    assert other.cmd("NOOP")[0] == 250
    assert time.monotonic() - started < 2
    other.close()
    counts = {250: 0, 452: 0, 421: 0}
    while True:
        code, _ = c.reply()
        counts[code] = counts.get(code, 0) + 1
        if code == 421:
            break
    assert counts[250] == 1000 and counts[452] == 1000 + 20 and counts[421] == 1
    assert c.closed()
    sender.join(10)


def test_slow_and_silent_clients(mta: tuple[Daemon, Ports]) -> None:
    """A client that sends a byte at a time is answered correctly; with
    smtpd_per_request_deadline it cannot stretch one command past
    smtpd_timeout; a client that never speaks gets 421 4.4.2 and is closed."""
    _, p = mta
    slow = RawClient(p.smtp)
    for b in b"EHLO slow.example\r\n":
        slow.send(bytes([b]))
        time.sleep(0.02)
    assert slow.reply()[0] == 250
    slow.close()
    dribble = RawClient(p.strict)
    started = time.monotonic()
    try:
        for b in b"EHLO dribble.example.with.a.long.name.to.send\r\n":
            dribble.send(bytes([b]))
            time.sleep(0.25)
    except OSError:
        pass
    assert dribble.reply() == (421, "4.4.2 mta.test.example Error: timeout exceeded")
    assert time.monotonic() - started < 5
    dribble.close()
    silent = RawClient(p.strict)
    started = time.monotonic()
    assert silent.reply() == (421, "4.4.2 mta.test.example Error: timeout exceeded")
    assert 1.5 < time.monotonic() - started < 5
    assert silent.closed()


def test_tls_handshake_failing_half_way(mta: tuple[Daemon, Ports]) -> None:
    """After 220 to STARTTLS: garbage instead of a ClientHello, or half a
    handshake and silence — the server closes and logs, and keeps serving."""
    d, p = mta
    c = RawClient(p.smtp)
    c.cmd("EHLO c.example")
    assert c.cmd("STARTTLS")[0] == 220
    c.send(b"this is not TLS\r\n" * 20)
    assert c.closed()
    half = RawClient(p.strict)
    half.cmd("EHLO c.example")
    assert half.cmd("STARTTLS")[0] == 220
    started = time.monotonic()
    half.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello, cut short
    assert half.closed(10)
    assert time.monotonic() - started < 6  # smtpd_timeout = 2s
    half.close()
    wait_for(lambda: "SSL_accept error from localhost[127.0.0.1]" in d.log_text(), 5, "log")
    assert "lost connection after STARTTLS from localhost[127.0.0.1]" in d.log_text()
    ok = RawClient(p.smtp)
    assert ok.cmd("NOOP")[0] == 250
    ok.close()


def test_oversize_message_is_refused_with_bounded_memory(mta: tuple[Daemon, Ports]) -> None:
    """A client streaming 40 MB into a 1 MB limit gets 552 5.3.4 at the end;
    the daemon's memory does not grow with the stream."""
    d, p = mta
    assert d.proc is not None
    status = Path(f"/proc/{d.proc.pid}/status")

    def rss_kb() -> int:
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    before = rss_kb()
    c = RawClient(p.smtp, timeout=60)
    c.cmd("EHLO big.example")
    c.cmd("MAIL FROM:<a@example.org>")
    c.cmd("RCPT TO:<big@example.net>")
    assert c.cmd("DATA")[0] == 354
    line = b"x" * 998 + b"\r\n"
    block = line * 1024
    for _ in range(40):
        c.send(block)
    c.send(b".\r\n")
    assert c.reply() == (552, "5.3.4 Error: message file too big")
    assert c.cmd("NOOP")[0] == 250
    c.close()
    assert rss_kb() - before < 20_000  # well under the 40 MB streamed


# -- limits ---------------------------------------------------------------------------------


def test_client_limits_and_error_tarpit(mta: tuple[Daemon, Ports]) -> None:
    """smtpd_client_connection_count_limit (421 4.7.0), the message rate
    limit (450 4.7.1), and past smtpd_soft_error_limit each error reply is
    delayed by smtpd_error_sleep_time without stalling other clients."""
    d, p = mta
    held = [RawClient(p.strict) for _ in range(3)]
    extra = RawClient(p.strict, greet=False)
    assert extra.reply() == (
        421,
        "4.7.0 mta.test.example Error: too many connections from 127.0.0.1",
    )
    extra.close()
    c = held[0]
    c.cmd("EHLO c.example")
    for _ in range(3):
        assert c.cmd("MAIL FROM:<a@example.org>")[0] == 250
        assert c.cmd("RSET")[0] == 250
    assert c.cmd("MAIL FROM:<a@example.org>") == (450, "4.7.1 Error: too much mail from 127.0.0.1")
    for h in held[1:]:
        h.close()
    errors = RawClient(p.strict)
    errors.cmd("BAD1")
    errors.cmd("BAD2")
    started = time.monotonic()
    errors.send(b"BAD3\r\n")
    other = RawClient(p.smtp)
    assert other.cmd("NOOP")[0] == 250
    assert time.monotonic() - started < 0.9
    other.close()
    assert errors.reply()[0] == 500
    assert time.monotonic() - started >= 0.9
    c.close()
    wait_for(lambda: "Connection concurrency limit exceeded: 4" in d.log_text(), 5, "warning")
    assert "Message delivery request rate limit exceeded: 4 from localhost[127.0.0.1]" in (
        d.log_text()
    )


def test_check_reports_bad_certificate_files(tmp_path: Path) -> None:
    """A missing or unreadable certificate stops mta check and the start,
    naming the path and the reason."""
    conf = tmp_path / "conf"
    d = Daemon(
        conf,
        free_port(),
        {"smtpd_tls_security_level": "may", "smtpd_tls_cert_file": str(tmp_path / "missing.pem")},
    )
    r = d.mta("check")
    assert r.returncode == 1
    assert (
        f"certificate file {tmp_path / 'missing.pem'}: No such file or directory"
        in r.stderr + r.stdout
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    d.params["smtpd_tls_cert_file"] = str(garbage)
    d.write_config()
    r = d.mta("check")
    assert r.returncode == 1 and "no PEM certificate in it" in r.stderr + r.stdout
    d.start(wait=False)
    try:
        assert d.proc is not None
        assert d.proc.wait(30) != 0
        assert "no PEM certificate in it" in d.output()
    finally:
        d.stop()


def _fingerprint(port: int) -> str:
    r = subprocess.run(
        ["openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{port}"],
        input="QUIT\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    x = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256"],
        input=r.stdout,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return x.stdout.strip()


def test_reload_reads_new_certificate_and_refuses_a_missing_one(tmp_path: Path) -> None:
    """mta reload re-reads the TLS files: a new certificate is served to new
    sessions; a missing one refuses the reload and the old one keeps serving."""
    conf = tmp_path / "conf"
    cert, key = make_cert(conf / "tls", cn="first.example")
    d = Daemon(
        conf,
        free_port(),
        {
            "smtpd_tls_security_level": "may",
            "smtpd_tls_cert_file": str(cert),
            "smtpd_tls_key_file": str(key),
        },
    )
    d.start()
    try:
        first = _fingerprint(d.port)
        assert first.startswith("sha256 Fingerprint=")
        make_cert(conf / "tls", cn="second.example")
        r = d.mta("reload")
        assert r.returncode == 0, r.stderr
        wait_for(lambda: _fingerprint(d.port) not in ("", first), 10, "the new certificate")
        second = _fingerprint(d.port)
        cert.unlink()
        r = d.mta("reload")
        assert r.returncode == 1 and f"certificate file {cert}" in r.stderr
        assert _fingerprint(d.port) == second
    finally:
        d.stop()
