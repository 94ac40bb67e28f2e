"""Operating a running daemon: properties.yaml, start-up errors, systemd
notifications, log reopening for logrotate, pflogsumm, JSON logs, privileges.

Each test starts ``twistd -n mta -c TMP`` (or runs ``mta``) against real peers on
loopback: Postfix's smtp-sink, an aiosmtpd capture sink, Debian's pflogsumm.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import stat
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.harness import (
    REPO,
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
PFLOGSUMM = shutil.which("pflogsumm") or "/usr/sbin/pflogsumm"


def http_status(url: str, user: str | None = None, password: str = "") -> int:
    request = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code


# -- appliance properties ---------------------------------------------------------------------


def test_properties_yaml_configures_the_daemon(make_daemon: MakeDaemon, sink: SmtpSink) -> None:
    """The appliance properties become main.cf parameters (mta postconf shows them)
    and the daemon acts on them: the greeting's host name, the smart relay, the
    statistics port and password, the mail log on the log volume, the time zone."""
    ui_port = free_port()
    d = make_daemon({"appliance_log_directory": "logvol"})
    (d.confdir / "logvol").mkdir()
    (d.confdir / "properties.yaml").write_text(
        "hostname: relay1.example.com\n"
        f"smart_relay: 127.0.0.1:{sink.port}\n"
        "smtpd_trusted_networks: 127.0.0.0/8\n"
        "username: admin\n"
        "password: pa$$word\n"
        f"ui_port: {ui_port}\n"
        "logs_enabled: yes\n"
        "maillog_filename: /relay1/maillog\n"
        "timezone: Asia/Tokyo\n"
    )
    shown = d.mta("postconf", "myhostname", "relayhost", "mynetworks", "stats_username")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        "myhostname = relay1.example.com",
        f"relayhost = [127.0.0.1]:{sink.port}",
        "mynetworks = 127.0.0.0/8",
        "stats_username = admin",
    ]
    listen = d.mta("postconf", "-h", "stats_listen").stdout.strip()
    assert listen == f"*:{ui_port}"
    d.start()
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
        assert s.ehlo("c.example")[1].startswith(b"relay1.example.com")
    code, _ = smtp_send(d.port, "a@example.org", ["b@example.net"], b"Subject: p\r\n\r\nx\r\n")
    assert code == 250
    wait_for(lambda: len(sink.messages()) == 1, 20, "delivery to the smart relay")
    wait_for(lambda: port_open(ui_port), 10, "the statistics port")
    url = f"http://127.0.0.1:{ui_port}/api/stats"
    assert http_status(url) == 401
    assert http_status(url, "admin", "pa$$word") == 200
    log = d.confdir / "logvol" / "relay1" / "maillog"
    wait_for(lambda: log.exists() and "status=sent" in log.read_text(), 10, "the log line")
    assert not d.maillog.exists()
    first = log.read_text().splitlines()[0]
    tokyo = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=9)
    hour = int(first.split()[2].split(":")[0])
    assert hour in (tokyo.hour, (tokyo.hour - 1) % 24)


@pytest.mark.parametrize(
    ("properties", "words"),
    [
        ("ui_port: 0\n", "Error: ui_port value must be between 1 and 65535"),
        ("hostname: [broken\n", "Error: failed to preconfigure the MTA"),
        ("logs_enabled: yes\n", "Error: logs are enabled but the 'log' terminal is not connected."),
        ("ssl_disabled: no\nssl_cert_file: ''\n", "ssl_disabled=no, but ssl key files are not"),
        ("ssl_disabled: no\n", "Error: failed to mount key volume."),
    ],
)
def test_broken_properties_are_the_datasheet_errors(
    make_daemon: MakeDaemon, properties: str, words: str
) -> None:
    """A broken properties.yaml: mta check prints the datasheet's error and exits 1."""
    d = make_daemon({"appliance_log_directory": "no-such-volume"})
    (d.confdir / "properties.yaml").write_text(properties)
    r = d.mta("check")
    assert r.returncode == 1
    assert words in r.stderr and "properties.yaml" in r.stderr


def test_daemon_does_not_start_on_broken_properties(make_daemon: MakeDaemon) -> None:
    """The daemon refuses to start with the same words and a non-zero exit."""
    d = make_daemon()
    (d.confdir / "properties.yaml").write_text("ui_port: 99999\n")
    d.start(wait=False)
    assert d.proc is not None
    rc = d.proc.wait(20)
    d.proc = None
    assert rc != 0
    assert "Error: ui_port value must be between 1 and 65535" in d.output()
    assert not port_open(d.port)


def test_start_up_errors_name_what_is_missing(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    """Every missing or unusable path is one clear error line from mta check."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    (tmp_path / "logdir").mkdir()
    cases = {
        "queue_directory": (str(blocker / "queue"), "is not a directory"),
        "maillog_file": (str(tmp_path / "logdir"), "maillog_file"),
        "stats_tls_cert_file": (str(tmp_path / "absent.pem"), "No such file or directory"),
    }
    for name, (value, words) in cases.items():
        d = make_daemon({name: value, "stats_listen": f"127.0.0.1:{free_port()}"})
        r = d.mta("check")
        assert r.returncode == 1, name
        errors = [line for line in r.stderr.splitlines() if ": error: " in line]
        assert len(errors) == 1 and words in errors[0] and name in errors[0], r.stderr
    (d.confdir / "main.cf").unlink()
    r = d.mta("check")
    assert r.returncode != 0 and "main.cf: no such file" in r.stderr


def test_busy_ports_stop_the_start_with_one_line(make_daemon: MakeDaemon) -> None:
    """A statistics port (or SMTP port) that is taken: one clear line, exit 1,
    no traceback, no pid file left behind."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d = make_daemon({"relayhost": "[127.0.0.1]:9", "stats_listen": f"127.0.0.1:{port}"})
        d.start(wait=False)
        assert d.proc is not None
        assert d.proc.wait(20) == 1
        d.proc = None
        out = d.output()
        assert (
            f"mta: fatal: Error: failed to initialize the UI backend: statistics service: "
            f"bind 127.0.0.1 port {port}: Address already in use" in out
        )
        assert "Traceback" not in out
        assert not (d.queue_dir / "pid" / "master.pid").exists()
        d2 = make_daemon({"relayhost": "[127.0.0.1]:9"}, f"127.0.0.1:{port} inet n - n - - smtpd\n")
        d2.start(wait=False)
        assert d2.proc is not None and d2.proc.wait(20) == 1
        d2.proc = None
        assert f"mta: fatal: bind 127.0.0.1 port {port}: Address already in use" in d2.output()


# -- systemd ----------------------------------------------------------------------------------


def test_sd_notify_ready_reloading_stopping(
    make_daemon: MakeDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under Type=notify: READY=1 once listening, RELOADING=1 then READY=1 around a
    SIGHUP, STOPPING=1 at SIGTERM, over a real unix datagram socket."""
    path = Path(tempfile.mkdtemp(prefix="mta-notify-")) / "s"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(20)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        d = make_daemon({"relayhost": "[127.0.0.1]:9"})
        d.start()

        def next_message() -> dict[str, str]:
            lines = sock.recv(4096).decode().splitlines()
            return dict(line.split("=", 1) for line in lines)

        ready = next_message()
        assert ready["READY"] == "1" and f"127.0.0.1:{d.port}" in ready["STATUS"]
        assert d.proc is not None and ready["MAINPID"] == str(d.proc.pid)
        d.signal(signal.SIGHUP)
        reloading = next_message()
        assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
        assert next_message()["READY"] == "1"
        d.signal(signal.SIGTERM)
        assert next_message()["STOPPING"] == "1"
        assert d.proc.wait(20) is not None
    finally:
        sock.close()
        shutil.rmtree(path.parent, ignore_errors=True)


def test_unit_file_is_type_notify_and_hardened() -> None:
    """conf/mta.service: Type=notify, reload by SIGHUP, the hardening options, and
    systemd-analyze finds nothing wrong but the (not installed) executables."""
    unit = (REPO / "conf" / "mta.service").read_text()
    settings = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and line[0] != "#"
    )
    assert settings["Type"] == "notify" and settings["NotifyAccess"] == "main"
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert "twistd" in settings["ExecStart"] and "-c /etc/mta" in settings["ExecStart"]
    for option in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "ProtectHome"):
        assert option in settings
    assert "/var/spool/mta" in settings["ReadWritePaths"]
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return
    r = subprocess.run(
        [analyze, "verify", str(REPO / "conf" / "mta.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    complaints = [
        line
        for line in (r.stdout + r.stderr).splitlines()
        if line.strip() and "is not executable" not in line
    ]
    assert complaints == []


# -- logs -------------------------------------------------------------------------------------


def test_reopen_log_after_logrotate(make_daemon: MakeDaemon) -> None:
    """logrotate moves the file; `mta reopen-log` (SIGUSR2) makes the daemon write
    to a new file at the configured path."""
    d = make_daemon({"relayhost": "[127.0.0.1]:9"})
    d.start()
    wait_for(lambda: "daemon started" in d.log_text(), 10, "the first line")
    rotated = d.maillog.with_name("maillog.1")
    d.maillog.rename(rotated)
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
        s.ehlo("before.example")
    r = d.mta("reopen-log")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: "reopened the mail log file" in d.log_text(), 10, "the reopened log")
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
        s.ehlo("after.example")
    wait_for(lambda: "connect from" in d.log_text(), 10, "a line in the new file")
    assert "daemon started" in rotated.read_text() and "daemon started" not in d.log_text()


def pflogsumm_totals(text: str) -> dict[str, int]:
    totals = {}
    section = text.split("Grand Totals", 1)[1].split("Per-Day", 1)[0]
    for match in re.finditer(
        r"^\s+(\d+)\s+(received|delivered|deferred|bounced|rejected)\b", section, re.M
    ):
        totals[match.group(2)] = int(match.group(1))
    return totals


def test_pflogsumm_summarises_the_log(make_daemon: MakeDaemon, capture: CaptureSink) -> None:
    """Debian's pflogsumm --syslog-name=mta reads a day of our log: it counts what
    was received, delivered, deferred, bounced and rejected, with the reasons."""
    d = make_daemon(
        {
            "relayhost": f"[127.0.0.1]:{capture.port}",
            "mynetworks": "127.0.0.2/32",  # the tests' client may only send to relay_domains
            "relay_domains": "example.net",
            "minimal_backoff_time": "1h",
            "maximal_backoff_time": "2h",
        }
    )
    d.start()
    body = b"Subject: summary\r\n\r\nhello\r\n"
    for rcpt in ("ok1@example.net", "ok2@example.net", "defer1@example.net", "reject1@example.net"):
        code, _ = smtp_send(d.port, "sender@example.net", [rcpt], body)
        assert code == 250
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
        s.ehlo("client.example")
        s.mail("sender@example.net")
        assert s.rcpt("someone@elsewhere.example")[0] == 554  # relay access denied
    # Two deliveries, the bounce notice to the sender, a deferral, a bounce.
    capture.wait(3)
    wait_for(lambda: d.log_text().count("status=") == 5, 20, "five delivery outcomes")
    r = subprocess.run(
        [PFLOGSUMM, "--syslog-name=mta", str(d.maillog)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    totals = pflogsumm_totals(r.stdout)
    assert totals == {
        "received": 4,
        "delivered": 3,
        "deferred": 1,
        "bounced": 1,
        "rejected": 1,
    }, r.stdout
    assert "try again later" in r.stdout  # deferral detail
    assert "no such user" in r.stdout  # bounce detail
    assert "Relay access denied" in r.stdout  # reject detail
    assert "example.net" in r.stdout.split("Host/Domain Summary: Message Delivery")[1]


def test_json_log_lines(make_daemon: MakeDaemon, sink: SmtpSink) -> None:
    """maillog_format = json: every line is one JSON object with the fields."""
    d = make_daemon({"relayhost": f"[127.0.0.1]:{sink.port}", "maillog_format": "json"})
    d.start()
    code, text = smtp_send(d.port, "a@example.org", ["b@example.net"], b"Subject: j\r\n\r\nx\r\n")
    assert code == 250
    qid = text.decode().split("queued as ")[1].strip()
    wait_for(lambda: '"status":"sent"' in d.log_text(), 20, "the delivery line")
    records = [json.loads(line) for line in d.log_text().splitlines()]
    sent = next(r for r in records if r.get("status") == "sent")
    assert sent["queue_id"] == qid and sent["to"] == "b@example.net"
    assert sent["program"] == "mta/smtp" and sent["relay"].endswith(f":{sink.port}")
    assert any(r.get("program") == "mta/qmgr" and r.get("from") == "a@example.org" for r in records)


# -- privileges -------------------------------------------------------------------------------


def _readable_by_everyone(path: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents) if p != Path("/"))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
@pytest.mark.skipif(
    not _readable_by_everyone(Path(sys.prefix)) or not _readable_by_everyone(REPO),
    reason="the interpreter or the checkout is not readable by an unprivileged user",
)
def test_privilege_drop_to_mail_owner(tmp_path: Path) -> None:
    """Started as root, the daemon binds, then runs as mail_owner and owns its queue."""
    base = Path(tempfile.mkdtemp(prefix="mta-priv-"))
    base.chmod(0o755)
    d = Daemon(base / "conf", free_port(), {"relayhost": "[127.0.0.1]:9", "mail_owner": "nobody"})
    try:
        base.joinpath("conf").chmod(0o755)
        d.start()
        assert d.proc is not None
        status = Path(f"/proc/{d.proc.pid}/status").read_text()
        uid = pwd.getpwnam("nobody").pw_uid
        assert re.search(rf"^Uid:\s+{uid}\s+{uid}\s+{uid}\s+{uid}$", status, re.M)
        assert d.queue_dir.stat().st_uid == uid
        code, _ = smtp_send(d.port, "a@example.org", ["b@example.net"], b"Subject: u\r\n\r\nx\r\n")
        assert code == 250
    finally:
        d.stop()
        shutil.rmtree(base, ignore_errors=True)
