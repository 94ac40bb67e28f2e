"""The queue against a real daemon: SIGKILL under load loses nothing and
duplicates only what was in flight; queue lifetime expiry bounces; the
queue tools and sendmail beside a running (or stopped) daemon; queue_minfree;
a sidecar damaged while the daemon runs."""

from __future__ import annotations

import json
import random
import re
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

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

pytestmark = pytest.mark.timeout(180)

MakeDaemon = Callable[..., Daemon]
TOKEN = re.compile(rb"X-Token: (\d+)")


def relay_to(port: int, **extra: str) -> dict[str, str]:
    return {"relayhost": f"[127.0.0.1]:{port}", **extra}


def queued_id(text: bytes | str) -> str:
    s = text.decode() if isinstance(text, bytes) else text
    return s.split("queued as ")[1].split()[0]


def tokens_in(paths: list[Path]) -> set[int]:
    found = set()
    for p in paths:
        try:
            m = TOKEN.search(p.read_bytes())
        except OSError:
            continue
        if m:
            found.add(int(m.group(1)))
    return found


def test_sigkill_under_load_loses_nothing(make_daemon: MakeDaemon, capture: CaptureSink) -> None:
    """Six senders push 300 messages while the daemon is killed with SIGKILL
    three times at random moments and restarted.  At the sink: every message
    that got a 250 arrived; a message arrived twice only if it was in
    ``active`` (being delivered) at a kill.  The counts are printed."""
    rng = random.Random(4242)
    d = make_daemon(
        relay_to(
            capture.port,
            minimal_backoff_time="1s",
            maximal_backoff_time="2s",
            smtp_connect_timeout="2s",
        )
    )
    d.start()
    total, senders = 300, 6
    acked: set[int] = set()
    unacked = 0
    lock = threading.Lock()
    next_token = iter(range(1, 10**6))

    def sender(n: int) -> None:
        nonlocal unacked
        sent = 0
        while sent < n:
            with lock:
                token = next(next_token)
            body = f"Subject: load {token}\r\nX-Token: {token}\r\n\r\nmessage {token}\r\n"
            try:
                code, _ = smtp_send(d.port, "load@example.org", ["sink@example.net"], body.encode())
            except (OSError, smtplib.SMTPException):
                code = 0
            if code == 250:
                with lock:
                    acked.add(token)
                sent += 1
            else:
                # No 250: it may or may not be queued; send a new one (new token).
                with lock:
                    unacked += 1
                time.sleep(0.05)

    threads = [
        threading.Thread(target=sender, args=(total // senders,), daemon=True)
        for _ in range(senders)
    ]
    for t in threads:
        t.start()
    in_flight: set[int] = set()
    kills = 0
    # Kill at random points of the load: somewhere in each third of it.
    kill_at = [rng.randint(total * k // 3 + 10, total * (k + 1) // 3 - 10) for k in range(3)]
    deadline = time.monotonic() + 60
    for point in kill_at:
        while len(acked) < point and time.monotonic() < deadline:
            if all(not t.is_alive() for t in threads):
                break
            time.sleep(rng.uniform(0.001, 0.02))
        if all(not t.is_alive() for t in threads):
            break
        d.kill9()
        kills += 1
        in_flight |= tokens_in(d.queue_files("active"))
        d.start()
    for t in threads:
        t.join(90)
    assert all(not t.is_alive() for t in threads), "senders did not finish"
    assert kills == 3, "the load ended before the daemon could be killed"

    def settled() -> bool:
        listing = d.mta("mailq").stdout.strip()
        return listing == "Mail queue is empty" and acked <= delivered_tokens()

    def delivered_tokens() -> set[int]:
        return {int(m.group(1)) for c in list(capture.messages) if (m := TOKEN.search(c.data))}

    wait_for(settled, 60, "every acknowledged message at the sink")
    counts = Counter(int(m.group(1)) for c in list(capture.messages) if (m := TOKEN.search(c.data)))
    twice = {t for t, n in counts.items() if n > 1}
    print(
        f"\nkill -9 under load: {kills} kills, {len(acked)} acknowledged, "
        f"{unacked} unacknowledged attempts, {sum(counts.values())} deliveries of "
        f"{len(counts)} messages, in flight at the kills: {len(in_flight)}, "
        f"delivered twice: {len(twice)}"
    )
    assert acked <= set(counts), f"lost: {sorted(acked - set(counts))[:10]}"
    assert twice <= in_flight, f"duplicated though not in flight: {sorted(twice - in_flight)}"
    assert len(acked) == total // senders * senders


def test_queue_lifetime_expiry_bounces(make_daemon: MakeDaemon, capture: CaptureSink) -> None:
    """A recipient that keeps answering 450 past maximal_queue_lifetime: the
    message is returned to the sender with the 450 text, and leaves the queue."""
    d = make_daemon(
        relay_to(
            capture.port,
            maximal_queue_lifetime="3s",
            minimal_backoff_time="1s",
            maximal_backoff_time="1s",
        )
    )
    d.start()
    code, text = smtp_send(
        d.port, "sender@example.org", ["defer-me@example.net"], b"Subject: old\r\n\r\nx\r\n"
    )
    assert code == 250
    qid = queued_id(text)
    wait_for(lambda: bool(d.queue_files("deferred")), 10, "the first deferral")
    [notice] = capture.wait(1, 20)
    assert notice.sender == "<>" and notice.recipients == ["sender@example.org"]
    dsn = notice.data.decode("utf-8", "replace")
    assert "Undelivered Mail Returned to Sender" in dsn
    assert "Action: failed" in dsn and "Status: 4.2.0" in dsn
    assert "try again later" in dsn
    log = d.log_text()
    assert f"{qid}: from=<sender@example.org>, status=expired, returned to sender" in log
    wait_for(lambda: d.mta("mailq").stdout.strip() == "Mail queue is empty", 10, "empty queue")


def test_queue_tools_beside_the_running_daemon(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    """With the next hop down the message is deferred.  `queue hold` puts it
    on hold (mailq flags it "!"); flush does not deliver it; `queue release`
    delivers it at once, without waiting for the backoff.  `queue delete`
    removes another one for good."""
    port = free_port()
    d = make_daemon(relay_to(port, minimal_backoff_time="1h", maximal_backoff_time="2h"))
    d.start()
    ids = []
    for _ in range(2):
        code, text = smtp_send(
            d.port, "s@example.org", ["r@example.net"], b"Subject: t\r\n\r\nx\r\n"
        )
        assert code == 250
        ids.append(queued_id(text))
    held, doomed = ids
    wait_for(lambda: len(d.queue_files("deferred")) == 2, 15, "both deferred")
    r = d.mta("queue", "hold", held)
    assert r.returncode == 0, r.stderr
    assert "Placed on hold: 1 message" in r.stdout
    assert f"{held}!" in d.mta("mailq").stdout
    r = d.mta("queue", "delete", doomed)
    assert r.returncode == 0 and "Deleted: 1 message" in r.stdout
    sink = SmtpSink(tmp_path / "late-sink", port=port)
    sink.start()
    try:
        assert d.mta("flush").returncode == 0
        time.sleep(2)
        assert sink.messages() == []
        entries = json.loads(d.mta("mailq", "--json").stdout)
        assert [(e["id"], e["queue"]) for e in entries] == [(held, "hold")]
        r = d.mta("queue", "release", held)
        assert r.returncode == 0 and "Released from hold: 1 message" in r.stdout
        wait_for(lambda: len(sink.messages()) == 1, 10, "delivery after release")
        wait_for(lambda: d.mta("mailq").stdout.strip() == "Mail queue is empty", 10, "empty")
        assert f"{held}: released from hold" in d.log_text()
        assert f"{doomed}: removed" in d.log_text()
        r = d.mta("queue", "hold", doomed)
        assert r.returncode == 1 and "no such message" in r.stderr
    finally:
        sink.stop()


def test_sendmail_with_and_without_the_daemon(
    make_daemon: MakeDaemon, capture: CaptureSink
) -> None:
    """`mta sendmail -t` with the daemon stopped queues into incoming, and the
    daemon delivers it when it starts; with the daemon running a message is
    delivered at once (the daemon is woken, queue_run_delay is 300 s)."""
    d = make_daemon(relay_to(capture.port))
    message = b"To: Rcpt <rcpt@example.net>\nBcc: hidden@example.net\nSubject: local\n\nfrom cron\n"
    r = d.mta("sendmail", "-f", "cron@example.org", "-t", "-oi", input=message)
    assert r.returncode == 0, r.stderr
    assert len(d.queue_files("incoming")) == 1
    d.start()
    got = capture.wait(1, 15)
    assert got[0].sender == "cron@example.org"
    assert sorted(got[0].recipients) == ["hidden@example.net", "rcpt@example.net"]
    assert b"Bcc" not in got[0].data and b"from userid" in got[0].data
    started = time.monotonic()
    r = d.mta("sendmail", "other@example.net", input=b"Subject: second\n\nbody\n.\nnot sent\n")
    assert r.returncode == 0, r.stderr
    got = capture.wait(2, 15)
    assert time.monotonic() - started < 10
    second = got[1]
    assert second.recipients == ["other@example.net"]
    assert b"body" in second.data and b"not sent" not in second.data


def test_queue_minfree_refuses_mail_with_452(make_daemon: MakeDaemon) -> None:
    """More queue_minfree than the disk has: MAIL FROM is answered 452 4.3.1
    Insufficient system storage, and the log says why."""
    d = make_daemon({"relayhost": "[127.0.0.1]:9", "queue_minfree": "1000000000000000"})
    d.start()

    def mail_reply() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            s.ehlo("x.example")
            return s.mail("a@example.org")

    wait_for(lambda: mail_reply()[0] == 452, 10, "the first disk measurement")
    code, text = mail_reply()
    assert (code, text) == (452, b"4.3.1 Insufficient system storage")
    log = d.log_text()
    assert "warning: not enough free space in mail queue" in log
    assert (
        "NOQUEUE: reject: MAIL from localhost[127.0.0.1]: 452 4.3.1 Insufficient system storage"
        in log
    )


def test_sidecar_damaged_while_running_is_quarantined(make_daemon: MakeDaemon) -> None:
    """A deferred message's sidecar is truncated behind the daemon's back;
    at the next attempt it goes to corrupt with a note, and the daemon
    keeps accepting and queueing mail."""
    d = make_daemon(relay_to(free_port(), minimal_backoff_time="1h"))
    d.start()
    code, text = smtp_send(d.port, "s@example.org", ["r@example.net"], b"Subject: t\r\n\r\nx\r\n")
    qid = queued_id(text)
    wait_for(lambda: bool(d.queue_files("deferred")), 15, "the deferral")
    sidecar = d.queue_dir / "deferred" / "envelope" / f"{qid}.json"
    sidecar.write_bytes(sidecar.read_bytes()[:40])
    assert d.mta("flush").returncode == 0
    wait_for(lambda: (d.queue_dir / "corrupt" / "cur" / qid).exists(), 10, "the quarantine")
    note = (d.queue_dir / "corrupt" / "note" / qid).read_text()
    assert "unreadable envelope" in note
    assert f"{qid}: queue file quarantined as corrupt/{qid}" in d.log_text()
    assert port_open(d.port)
    code, _ = smtp_send(d.port, "s@example.org", ["r@example.net"], b"Subject: t2\r\n\r\nx\r\n")
    assert code == 250
