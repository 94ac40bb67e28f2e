"""The walking skeleton end to end: real clients in, real servers out.

Each test starts ``twistd -n mta -c TMP`` and talks to it over loopback with
swaks, smtplib or a raw socket; delivery goes to Postfix's smtp-sink or an
aiosmtpd capture sink.  Assertions are about bytes at the sink, reply codes
and files in the queue.
"""

from __future__ import annotations

import json
import os
import signal
import smtplib
import socket
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.integration.harness import (
    CaptureSink,
    Daemon,
    SmtpSink,
    free_port,
    port_open,
    smtp_send,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)

MakeDaemon = Callable[..., Daemon]


def relay_to(port: int, **extra: str) -> dict[str, str]:
    return {"relayhost": f"[127.0.0.1]:{port}", **extra}


def body_lines(data: bytes) -> list[bytes]:
    return data.replace(b"\r\n", b"\n").split(b"\n")


def test_swaks_message_arrives_intact_at_smtp_sink(make_daemon: MakeDaemon, sink: SmtpSink) -> None:
    """swaks → mta → smtp-sink: the body arrives byte for byte (dot-stuffed
    lines, an 8-bit line), under our Received header, and the log has
    Postfix's from=/to= lines."""
    d = make_daemon(relay_to(sink.port))
    d.start()
    body = "Subject: skeleton\n\nfirst line\n.leading dot\n..two dots\n.\nÄpfel 8bit\nlast\n"
    r = subprocess.run(
        [
            "swaks",
            "--server",
            f"127.0.0.1:{d.port}",
            "--from",
            "alice@example.org",
            "--to",
            "a@example.net",
            "--data",
            body,
            "--timeout",
            "15",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "250 2.0.0 Ok: queued as" in r.stdout
    queue_id = r.stdout.split("queued as ")[1].split()[0]
    wait_for(lambda: len(sink.messages()) == 1, 15, "delivery to smtp-sink")
    got = sink.messages()[0]
    lines = body_lines(got)
    assert b"X-Rcpt-Args: <a@example.net>" in lines
    assert b"\tby mta.test.example (mta) with ESMTP id " + queue_id.encode() in got
    assert f"id {queue_id}".encode() in got
    tail = got.split(b"\nSubject: skeleton\n\n", 1)[1]
    assert tail.startswith("first line\n.leading dot\n..two dots\n.\nÄpfel 8bit\nlast\n".encode())
    wait_for(lambda: "removed" in d.log_text(), 10, "the queue file to be removed")
    log = d.log_text()
    assert f"{queue_id}: from=<alice@example.org>" in log
    assert f"{queue_id}: to=<a@example.net>, relay=127.0.0.1[127.0.0.1]:{sink.port}" in log
    assert "status=sent" in log
    assert not d.queue_files("active") and not d.queue_files("incoming")


def test_kill9_after_250_then_restart_delivers(make_daemon: MakeDaemon, sink: SmtpSink) -> None:
    """A message that got its 250 survives SIGKILL of the daemon: the next
    hop hangs (stopped), the daemon is killed mid-delivery, and after a
    restart the message is delivered."""
    assert sink.proc is not None
    os.kill(sink.proc.pid, signal.SIGSTOP)  # accepts TCP, never greets
    try:
        d = make_daemon(relay_to(sink.port))
        d.start()
        code, text = smtp_send(
            d.port, "s@example.org", ["r@example.net"], b"Subject: k\r\n\r\nsurvive\r\n"
        )
        assert code == 250, text
        qid = text.decode().split("queued as ")[1].strip()
        d.kill9()
        on_disk = d.queue_files("active") + d.queue_files("incoming")
        assert any(p.name == qid for p in on_disk), on_disk
    finally:
        os.kill(sink.proc.pid, signal.SIGCONT)
    d.start()
    wait_for(lambda: any(b"survive" in m for m in sink.messages()), 20, "delivery after restart")


def test_client_outside_mynetworks_gets_relay_denied(
    make_daemon: MakeDaemon, sink: SmtpSink
) -> None:
    """A client outside mynetworks gets 554 5.7.1 for a domain that is not in
    relay_domains, and 250 for one that is."""
    d = make_daemon(relay_to(sink.port, mynetworks="127.0.0.1/32", relay_domains="relay.example"))
    d.start()
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10, source_address=("127.0.0.9", 0)) as s:
        s.ehlo("outside.example")
        assert s.mail("x@outside.example")[0] == 250
        code, msg = s.rcpt("victim@example.net")
        assert code == 554
        assert msg.startswith(b"5.7.1 <victim@example.net>: Relay access denied")
        code, msg = s.rcpt("user@relay.example")
        assert code == 250, msg
        code, msg = s.rcpt("user@sub.relay.example")  # parent_domain_matches_subdomains
        assert code == 250, msg
    assert "reject: RCPT from unknown[127.0.0.9]: 554 5.7.1 <victim@example.net>" in d.log_text()


def test_disconnect_mid_data_leaves_nothing(make_daemon: MakeDaemon) -> None:
    """A client that disconnects in the middle of DATA leaves no file in any
    queue directory, tmp included."""
    d = make_daemon({"relayhost": "[127.0.0.1]:9"})
    d.start()
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
        while not f.readline().startswith(b"354"):
            pass
        s.sendall(b"Subject: half\r\n\r\n" + b"x" * 100_000)
        time.sleep(0.3)
        f.close()
    wait_for(lambda: "data=1 commands=4" in d.log_text(), 10, "the disconnect")
    for state in ("incoming", "active", "deferred"):
        for sub in ("tmp", "cur", "new"):
            p = d.queue_dir / state / sub
            assert not p.exists() or not any(p.iterdir()), (state, sub, list(p.iterdir()))


def test_5xx_for_one_recipient_bounces_to_sender(
    make_daemon: MakeDaemon, capture: CaptureSink
) -> None:
    """The next hop takes one recipient and refuses the other with 550: the
    good one is delivered and the sender gets one DSN with the 550 text."""
    d = make_daemon(relay_to(capture.port))
    d.start()
    code, _ = smtp_send(
        d.port,
        "sender@example.org",
        ["good@example.net", "reject-me@example.net"],
        b"Subject: partial\r\nMessage-Id: <p1@example.org>\r\n\r\nhello\r\n",
    )
    assert code == 250
    msgs = capture.wait(2)
    delivered = [m for m in msgs if m.sender == "sender@example.org"]
    notices = [m for m in msgs if m.sender == "<>"]  # aiosmtpd's spelling of the null sender
    assert len(delivered) == 1 and delivered[0].recipients == ["good@example.net"]
    assert len(notices) == 1 and notices[0].recipients == ["sender@example.org"]
    dsn = notices[0].data.decode("utf-8", "replace")
    assert "multipart/report; report-type=delivery-status" in dsn
    assert "Final-Recipient: rfc822; reject-me@example.net" in dsn
    assert "Action: failed" in dsn and "Status: 5.1.1" in dsn
    assert "Recipient address rejected: no such user" in dsn
    assert "Message-Id: <p1@example.org>" in dsn  # the original comes back
    time.sleep(0.5)
    assert len(capture.messages) == 2  # no second notice, nothing twice


def test_4xx_defers_with_reason_and_flush_delivers(make_daemon: MakeDaemon, tmp_path) -> None:
    """With the next hop down the message is deferred, and mailq shows the
    reason; once it is up, `mta flush` delivers it without waiting for the
    backoff."""
    port = free_port()
    d = make_daemon(relay_to(port, minimal_backoff_time="1h", maximal_backoff_time="2h"))
    d.start()
    code, text = smtp_send(
        d.port, "s@example.org", ["r@example.net"], b"Subject: later\r\n\r\nx\r\n"
    )
    assert code == 250
    qid = text.decode().split("queued as ")[1].strip()
    wait_for(lambda: bool(d.queue_files("deferred")), 15, "the message to be deferred")
    listing = d.mta("mailq")
    assert listing.returncode == 0, listing.stderr
    assert qid in listing.stdout
    assert "Connection refused" in listing.stdout
    entries = json.loads(d.mta("mailq", "--json").stdout)
    assert entries[0]["id"] == qid and entries[0]["queue"] == "deferred"
    sink = SmtpSink(tmp_path / "late-sink", port=port)
    sink.start()
    try:
        r = d.mta("flush")
        assert r.returncode == 0, r.stderr
        wait_for(lambda: len(sink.messages()) == 1, 15, "delivery after flush")
        wait_for(lambda: d.mta("mailq").stdout.strip() == "Mail queue is empty", 10, "empty queue")
    finally:
        sink.stop()


def test_sighup_reload_changes_behaviour_and_refuses_bad_config(make_daemon: MakeDaemon) -> None:
    """SIGHUP re-reads main.cf: a narrower mynetworks applies to new
    sessions.  A broken main.cf is refused by `mta reload` (exit 1, reason on
    stderr) and the daemon keeps serving with the old configuration."""
    d = make_daemon({"relayhost": "[127.0.0.1]:9"})
    d.start()

    def rcpt_code() -> int:
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            s.ehlo("x.example")
            s.mail("a@example.org")
            return s.rcpt("b@example.net")[0]

    assert rcpt_code() == 250
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as held:  # open across the reload
        held.ehlo("held.example")
        d.params["mynetworks"] = "127.0.0.2/32"
        d.write_config()
        r = d.mta("reload")
        assert r.returncode == 0, r.stderr
        wait_for(lambda: "reload --" in d.log_text(), 10, "the reload")
        assert rcpt_code() == 554
        held.mail("a@example.org")
        assert held.rcpt("b@example.net")[0] == 250  # old session, old rules

    main_cf = d.confdir / "main.cf"
    main_cf.write_text(main_cf.read_text() + "this line is not a parameter\n")
    r = d.mta("reload")
    assert r.returncode == 1
    assert "main.cf" in r.stderr and "reload refused" in r.stderr
    d.signal(signal.SIGHUP)  # the daemon refuses it on its own, too
    wait_for(lambda: "reload refused" in d.log_text(), 10, "the refusal in the log")
    assert port_open(d.port)
    assert rcpt_code() == 554  # still the last good configuration


def test_sigterm_lets_open_transaction_finish(make_daemon: MakeDaemon, sink: SmtpSink) -> None:
    """SIGTERM in the middle of DATA: the client may finish, gets its 250,
    the message is on disk, and the daemon exits."""
    d = make_daemon(relay_to(sink.port, minimal_backoff_time="1h"))
    d.start()
    s = smtplib.SMTP("127.0.0.1", d.port, timeout=15)
    s.ehlo("x.example")
    s.mail("a@example.org")
    s.rcpt("b@example.net")
    assert s.docmd("DATA")[0] == 354
    s.send(b"Subject: term\r\n\r\npart one\r\n")
    d.signal(signal.SIGTERM)
    time.sleep(0.5)
    s.send(b"part two\r\n.\r\n")
    code, text = s.getreply()
    assert code == 250, text
    s.close()
    assert d.proc is not None
    d.proc.wait(20)
    qid = text.decode().split("queued as ")[1].strip()
    delivered = any(b"part two" in m for m in sink.messages())
    queued = any(
        p.name == qid for st in ("incoming", "active", "deferred") for p in d.queue_files(st)
    )
    assert delivered or queued


def test_bad_config_stops_check_and_start_with_file_and_line(make_daemon: MakeDaemon) -> None:
    """A malformed main.cf line: `mta check` names file, line and reason and
    exits 1; the daemon refuses to start with the same words."""
    d = make_daemon({"message_size_limit": "lots"})
    r = d.mta("check")
    assert r.returncode == 1
    assert "main.cf:" in r.stderr and "message_size_limit" in r.stderr
    d.start(wait=False)
    assert d.proc is not None
    rc = d.proc.wait(20)
    d.proc = None
    assert rc != 0
    first = r.stderr.strip().splitlines()[0]
    assert first in d.output()


def test_pid_file_and_unsupported_parameter_warning(make_daemon: MakeDaemon) -> None:
    """The daemon writes $queue_directory/pid/master.pid; an unsupported
    parameter is a warning that does not stop it."""
    d = make_daemon({"relayhost": "[127.0.0.1]:9", "biff": "no"})
    r = d.mta("check")
    assert r.returncode == 0, r.stderr
    assert "warning: unsupported parameter: biff" in r.stdout + r.stderr
    d.start()
    pid = int((d.queue_dir / "pid" / "master.pid").read_text())
    assert d.proc is not None and pid == d.proc.pid
