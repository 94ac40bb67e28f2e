"""The access policy against real peers on loopback: a DNS server for the
block lists, Debian's postgrey as policy server, a policy server that hangs,
address verification against a capture sink, and the message actions
(HOLD, DISCARD, PREPEND, REDIRECT, header_checks) seen in the queue and at
the next hop."""

from __future__ import annotations

import getpass
import grp
import os
import shutil
import smtplib
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.dnsserver import DNSServer
from tests.integration.harness import CaptureSink, Daemon, free_port, port_open, wait_for

pytestmark = pytest.mark.timeout(120)

MakeDaemon = Callable[..., Daemon]
POSTGREY = shutil.which("postgrey") or "/usr/sbin/postgrey"


def relay_params(capture: CaptureSink, **extra: str) -> dict[str, str]:
    base = {
        "mynetworks": "192.0.2.0/24",
        "relay_domains": "relay.test",
        "relayhost": f"[127.0.0.1]:{capture.port}",
        "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
    }
    base.update(extra)
    return base


def session(port: int) -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", port, timeout=20)
    s.ehlo("client.example.org")
    return s


@pytest.fixture
def dns() -> Iterator[DNSServer]:
    server = DNSServer().start()
    yield server
    server.stop()


def test_rbl_rejects_through_a_real_dns_server(
    make_daemon: MakeDaemon, capture: CaptureSink, dns: DNSServer
) -> None:
    """reject_rbl_client looks the client up in the list through
    dns_nameservers; the reply carries the list's TXT text; an unlisted
    sender domain passes reject_rhsbl_sender, a listed one does not."""
    dns.add("1.0.0.127.zen.test", "A", "127.0.0.2")
    dns.add("1.0.0.127.zen.test", "TXT", '"https://zen.test/lookup?ip=127.0.0.1"')
    dns.add("spam.test.dbl.test", "A", "127.0.1.2")
    d = make_daemon(
        relay_params(
            capture,
            dns_nameservers=dns.address,
            smtpd_sender_restrictions="reject_rhsbl_sender dbl.test",
            smtpd_recipient_restrictions=(
                "check_recipient_access inline:{{rbl@relay.test=reject_rbl_client zen.test}}"
            ),
        )
    )
    d.start()
    s = session(d.port)
    s.mail("good@example.org")
    code, text = s.rcpt("rbl@relay.test")
    assert (code, text.decode()) == (
        554,
        "5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.test; "
        "https://zen.test/lookup?ip=127.0.0.1",
    )
    assert s.rcpt("other@relay.test")[0] == 250
    s.rset()
    s.mail("x@spam.test")
    code, text = s.rcpt("other@relay.test")
    assert code == 554
    assert text.decode().endswith("Sender address [x@spam.test] blocked using dbl.test")
    s.quit()
    assert dns.queries[("1.0.0.127.zen.test.", "A")] == 1
    assert "rule=check_recipient_access inline:{{rbl@relay.test=reject_rbl_client zen.test}}" in (
        d.log_text()
    )


@pytest.fixture
def postgrey(tmp_path: Path) -> Iterator[int]:
    if not os.path.exists(POSTGREY):
        pytest.skip("postgrey is not installed (apt-get install postgrey)")
    port = free_port()
    dbdir = tmp_path / "postgrey"
    dbdir.mkdir()
    user = getpass.getuser()
    group = grp.getgrgid(os.getgid()).gr_name
    proc = subprocess.Popen(
        [
            POSTGREY,
            f"--inet=127.0.0.1:{port}",
            f"--dbdir={dbdir}",
            "--delay=1",
            f"--user={user}",
            f"--group={group}",
            "--auto-whitelist-clients=0",
            "--whitelist-clients=/dev/null",
            "--whitelist-recipients=/dev/null",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: port_open(port) or proc.poll() is not None, 20, "postgrey")
        if proc.poll() is not None:
            pytest.fail(f"postgrey exited with {proc.returncode}")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_postgrey_greylists_first_attempt_and_accepts_retry(
    make_daemon: MakeDaemon, capture: CaptureSink, postgrey: int
) -> None:
    """check_policy_service asks postgrey: the first attempt gets 450
    (DEFER_IF_PERMIT), the retry after the delay is accepted and carries
    postgrey's PREPENDed X-Greylist header to the next hop."""
    d = make_daemon(
        relay_params(
            capture,
            smtpd_recipient_restrictions=(
                f"reject_unauth_destination, check_policy_service inet:127.0.0.1:{postgrey}"
            ),
        )
    )
    d.start()
    s = session(d.port)
    s.mail("sender@example.org")
    code, text = s.rcpt("rcpt@relay.test")
    s.quit()
    assert code == 450, text
    # postgrey answers "DEFER_IF_PERMIT 4.2.0 Greylisted, see ...": its DSN is kept.
    assert text.decode().startswith(
        "4.2.0 <rcpt@relay.test>: Recipient address rejected: Greylisted, see http"
    )
    time.sleep(2.2)
    s = session(d.port)
    s.mail("sender@example.org")
    assert s.rcpt("rcpt@relay.test")[0] == 250
    assert s.data(b"Subject: retry\r\n\r\nhello\r\n")[0] == 250
    s.quit()
    [message] = capture.wait(1)
    assert b"X-Greylist: delayed " in message.data


class HangingPolicyServer:
    """Accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def test_hung_policy_server_costs_its_time_limit_only(
    make_daemon: MakeDaemon, capture: CaptureSink
) -> None:
    """A policy server that never answers: the request takes its default
    action after the time limit, and other sessions are served meanwhile."""
    server = HangingPolicyServer()
    try:
        d = make_daemon(
            relay_params(
                capture,
                smtpd_recipient_restrictions=(
                    "reject_unauth_destination, check_policy_service "
                    f"{{ inet:127.0.0.1:{server.port}, timeout=2s, try_limit=1 }}"
                ),
            )
        )
        d.start()
        result: dict[str, object] = {}

        def slow() -> None:
            s = session(d.port)
            s.mail("a@example.org")
            started = time.monotonic()
            result["reply"] = s.rcpt("x@relay.test")
            result["took"] = time.monotonic() - started
            s.quit()

        thread = threading.Thread(target=slow)
        thread.start()
        time.sleep(0.5)
        started = time.monotonic()
        other = session(d.port)
        assert other.mail("b@example.org")[0] == 250
        other.quit()
        assert time.monotonic() - started < 1.0  # not stalled by the hung request
        thread.join(15)
        code, text = result["reply"]  # type: ignore[misc]
        assert code == 451
        assert text.decode() == (
            "4.3.5 <x@relay.test>: Recipient address rejected: Server configuration problem"
        )
        assert 1.8 < result["took"] < 6  # type: ignore[operator]
        assert f"problem talking to server inet:127.0.0.1:{server.port}" in d.log_text()
    finally:
        server.close()


def test_address_verification(make_daemon: MakeDaemon) -> None:
    """reject_unverified_recipient probes the next hop: an address it
    refuses gets unverified_recipient_reject_code, one it takes passes; the
    probes deliver nothing; the results survive a restart (the cache file)
    even when the next hop is gone."""
    capture = CaptureSink()
    capture.start()
    running = True
    try:
        d = make_daemon(
            relay_params(
                capture,
                smtpd_recipient_restrictions=(
                    "reject_unauth_destination, reject_unverified_recipient"
                ),
                unverified_recipient_reject_code="550",
                address_verify_poll_count="5",
                address_verify_poll_delay="1s",
            )
        )
        d.start()
        s = session(d.port)
        s.mail("sender@example.org")
        code, text = s.rcpt("reject-me@relay.test")
        assert code == 550
        assert text.decode() == (
            "5.1.1 <reject-me@relay.test>: Recipient address rejected: undeliverable address: "
            "host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <reject-me@relay.test>: Recipient address "
            "rejected: no such user (in reply to RCPT TO command)"
        )
        assert s.rcpt("welcome@relay.test")[0] == 250
        s.quit()
        time.sleep(0.5)
        assert capture.messages == []  # probes never send a message
        d.stop()
        cache = d.queue_dir / "verify_cache"
        assert "reject-me@relay.test\tbounce:" in cache.read_text()
        capture.stop()  # the next hop is gone: answers come from the cache
        running = False
        d.start()
        s = session(d.port)
        s.mail("sender@example.org")
        assert s.rcpt("reject-me@relay.test")[0] == 550
        assert s.rcpt("welcome@relay.test")[0] == 250
        s.quit()
    finally:
        if running:
            capture.stop()


def test_message_actions(make_daemon: MakeDaemon, capture: CaptureSink) -> None:
    """HOLD keeps the message in the hold queue, DISCARD answers 250 and
    keeps nothing, PREPEND adds a header, REDIRECT changes the recipients,
    FILTER sends the message to the content filter instead of the next hop,
    and the CipherMail header_checks rule rejects at end of data."""
    content_filter = CaptureSink()
    content_filter.start()
    try:
        _message_actions(make_daemon, capture, content_filter)
    finally:
        content_filter.stop()


def _message_actions(
    make_daemon: MakeDaemon, capture: CaptureSink, content_filter: CaptureSink
) -> None:
    d = make_daemon(
        relay_params(
            capture,
            smtpd_sender_restrictions="check_sender_access hash:senders",
            header_checks="regexp:header_checks",
        )
    )
    (d.confdir / "senders").write_text(
        "hold@example.org      HOLD\n"
        "discard@example.org   DISCARD\n"
        "prepend@example.org   PREPEND X-Policy: tagged\n"
        "redirect@example.org  REDIRECT boss@relay.test\n"
        f"filter@example.org    FILTER smtp:[127.0.0.1]:{content_filter.port}\n"
    )
    (d.confdir / "header_checks").write_text(
        "/^Subject: make money fast/     REJECT spam detected\n"
    )
    d.start()

    def send(sender: str, subject: str) -> tuple[int, bytes]:
        s = session(d.port)
        s.mail(sender)
        assert s.rcpt("rcpt@relay.test")[0] == 250
        reply = s.data(f"Subject: {subject}\r\n\r\nbody\r\n".encode())
        s.quit()
        return reply

    code, text = send("hold@example.org", "held")
    assert code == 250
    held_id = text.decode().split("queued as ")[1]
    wait_for(lambda: bool(d.queue_files("hold")), 10, "the message in the hold queue")
    assert held_id in [p.name for p in d.queue_files("hold")]
    assert send("discard@example.org", "dropped")[0] == 250
    assert send("prepend@example.org", "tagged")[0] == 250
    assert send("redirect@example.org", "redirected")[0] == 250
    assert send("filter@example.org", "filtered")[0] == 250
    code, text = send("alice@example.org", "make money fast")
    assert (code, text) == (550, b"5.7.1 spam detected")
    messages = capture.wait(2)
    time.sleep(0.5)
    assert len(capture.messages) == 2  # nothing held, discarded or rejected arrived
    by_subject = {m.data.split(b"Subject: ")[1].split(b"\r\n")[0]: m for m in messages}
    assert by_subject[b"tagged"].data.startswith(b"X-Policy: tagged\r\nReceived: ")
    assert by_subject[b"redirected"].recipients == ["boss@relay.test"]
    [filtered] = content_filter.wait(1)
    assert b"Subject: filtered" in filtered.data
    assert filtered.recipients == ["rcpt@relay.test"]
    log = d.log_text()
    assert (
        "hold: RCPT from localhost[127.0.0.1]: <hold@example.org>: "
        "Sender address triggers HOLD action" in log
    )
    assert "reject: header Subject: make money fast from localhost[127.0.0.1];" in log
    assert not d.queue_files("incoming") and not d.queue_files("deferred")


def test_bad_table_refused_at_reload_and_edits_apply(
    make_daemon: MakeDaemon, capture: CaptureSink
) -> None:
    """A regexp that does not compile: mta check and mta reload name file,
    line and reason, and the daemon keeps its old rules; a good edit to the
    table applies on reload (no postmap step)."""
    d = make_daemon(
        relay_params(capture, smtpd_sender_restrictions="check_sender_access pcre:senders")
    )
    table = d.confdir / "senders"
    table.write_text("/^spam@/ REJECT old rule\n")
    d.start()

    def rcpt_reply(sender: str) -> tuple[int, bytes]:
        s = session(d.port)
        s.mail(sender)
        reply = s.rcpt("x@relay.test")
        s.quit()
        return reply

    assert rcpt_reply("spam@example.org") == (
        554,
        b"5.7.1 <spam@example.org>: Sender address rejected: old rule",
    )
    table.write_text("/^spam@/ REJECT old rule\n/^(unclosed@/ REJECT new\n")
    checked = d.mta("check")
    assert checked.returncode == 1
    assert f"{table}:2: pcre map: bad pattern" in checked.stderr
    assert "main.cf" in checked.stderr and "smtpd_sender_restrictions" in checked.stderr
    reload = d.mta("reload")
    assert reload.returncode == 1
    assert f"{table}:2: pcre map: bad pattern" in reload.stderr
    assert rcpt_reply("spam@example.org")[1].endswith(b"old rule")
    table.write_text("/^spam@/ REJECT new rule\n")
    assert d.mta("reload").returncode == 0
    wait_for(lambda: rcpt_reply("spam@example.org")[1].endswith(b"new rule"), 10, "the reload")
