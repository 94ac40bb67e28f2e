"""The statistics service of a running daemon: authentication, figures that match
the queue, Prometheus, bad requests, TLS, reload, and the page in a real browser.

Each test starts ``twistd -n mta -c TMP`` with ``stats_listen`` on a free loopback
port and talks to it with urllib, raw sockets and Debian's chromium.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import smtplib
import socket
import ssl
import struct
import subprocess
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.harness import Daemon, free_port, port_open, smtp_send, wait_for
from tests.stats.certs import make_cert

pytestmark = pytest.mark.timeout(120)

MakeDaemon = Callable[..., Daemon]
USER, PASSWORD = "monitor", "s3cret:pass"
GOOD = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def get(
    url: str, auth: str | None = GOOD, context: ssl.SSLContext | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def raw(port: int, data: bytes) -> bytes:
    """Send raw bytes, read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def stats_daemon(make_daemon: MakeDaemon, **extra: str) -> tuple[Daemon, int]:
    port = free_port()
    params = {
        "relayhost": f"[127.0.0.1]:{free_port()}",  # nobody listens: mail is deferred
        "minimal_backoff_time": "1h",
        "maximal_backoff_time": "2h",
        "stats_listen": f"127.0.0.1:{port}",
        "stats_username": USER,
        "stats_password": PASSWORD,
        **extra,
    }
    return make_daemon(params), port


@pytest.fixture
def held_sessions() -> Iterator[Callable[[int, int], list[smtplib.SMTP]]]:
    with ExitStack() as stack:

        def open_sessions(port: int, n: int) -> list[smtplib.SMTP]:
            sessions = []
            for _ in range(n):
                s = stack.enter_context(smtplib.SMTP("127.0.0.1", port, timeout=10))
                s.ehlo("held.example")
                sessions.append(s)
            return sessions

        yield open_sessions


def test_auth_and_figures_match_the_queue(
    make_daemon: MakeDaemon, held_sessions: Callable[[int, int], list[smtplib.SMTP]]
) -> None:
    """401 without and with wrong credentials, 200 with the right ones; after three
    messages were deferred and with two sessions held open, the JSON and /metrics
    say what the queue (mailq) says; bad requests get 400/404/413 and SMTP keeps
    answering."""
    d, port = stats_daemon(make_daemon)
    d.start()
    url = f"http://127.0.0.1:{port}"
    status, headers, body = get(url + "/api/stats", auth=None)
    assert status == 401 and headers["WWW-Authenticate"].startswith('Basic realm="mta statistics"')
    assert body == b"401 Unauthorized\n"
    wrong = "Basic " + base64.b64encode(f"{USER}:nope".encode()).decode()
    assert get(url + "/api/stats", auth=wrong)[0] == 401
    assert get(url + "/metrics", auth=wrong)[0] == 401

    for i in range(3):
        message = f"Subject: stats {i}\r\n\r\n".encode() + b"x" * (700 * (i + 1)) + b"\r\n"
        code, _ = smtp_send(d.port, "sender@example.org", [f"r{i}@dest{i % 2}.example"], message)
        assert code == 250
    wait_for(lambda: len(d.queue_files("deferred")) == 3, 20, "three deferred messages")
    held_sessions(d.port, 2)

    status, headers, body = get(url + "/api/stats")
    assert status == 200 and headers["Content-Type"] == "application/json; charset=utf-8"
    stats = json.loads(body)
    listing = json.loads(d.mta("mailq", "--json").stdout)
    trailer = d.mta("mailq").stdout.strip().splitlines()[-1]  # -- N Kbytes in M Requests.
    assert stats["mqueue_messages"] == len(listing) == 3
    assert f"-- {stats['mqueue_kbytes']} Kbytes in 3 Requests." == trailer
    on_disk = sum(p.stat().st_size for p in d.queue_files("deferred"))
    assert stats["mqueue_bytes"] == on_disk
    assert stats["queue"] == {"incoming": 0, "active": 0, "deferred": 3, "hold": 0, "corrupt": 0}
    assert stats["smtp_active_sessions"] == 2
    assert stats["totals"]["accepted"] == 3 and stats["totals"]["deferred"] == 3
    assert stats["totals"]["delivered"] == 0
    assert 0 < stats["disk_free_percent"] <= 100
    assert {r["domain"]: r["messages"] for r in stats["deferred_by_destination"]} == {
        "dest0.example": 2,
        "dest1.example": 1,
    }
    oldest = stats["oldest_deferred"]
    assert {m["id"] for m in oldest} == {e["id"] for e in listing}
    assert all("Connection refused" in m["recipients"][0]["reason"] for m in oldest)
    assert [r["status"] for r in stats["recent_deliveries"]] == ["deferred"] * 3

    status, headers, body = get(url + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    value = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert value[("mta_mqueue_messages", ())] == 3
    assert value[("mta_mqueue_kbytes", ())] == stats["mqueue_kbytes"]
    assert value[("mta_smtp_active_sessions", ())] == 2
    assert value[("mta_queue", (("state", "deferred"),))] == 3
    assert value[("mta_totals", (("kind", "accepted"),))] == 3
    assert all(f.documentation for f in families.values())

    # Bad requests: nothing leaks, and SMTP is unaffected.
    malformed = raw(
        port,
        b"GET /api/stats HTTP/1.1\r\nHost: x\r\nAuthorization: Basic !!\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert malformed.startswith(b"HTTP/1.1 400 ") and PASSWORD.encode() not in malformed
    assert get(url + "/etc/passwd")[0] == 404
    assert get(url + "/api/stats/../../main.cf")[0] == 404
    huge = raw(port, b"POST /api/stats HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n")
    assert huge.startswith(b"HTTP/1.1 413 ")
    for answer in (malformed, huge):
        assert b"Traceback" not in answer and b"main.cf" not in answer
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
        assert s.ehlo("after.example")[0] == 250


def test_warnings_beyond_loopback_and_https(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    """Listening on every address without a password is reported by mta check and
    in the log; with stats_tls_cert_file the service speaks HTTPS only, and a
    reload picks up a renewed certificate."""
    port = free_port()
    d = make_daemon({"relayhost": "[127.0.0.1]:9", "stats_listen": f"*:{port}"})
    check = d.mta("check")
    assert check.returncode == 0, check.stderr
    assert "without authentication" in check.stdout and "without TLS" in check.stdout
    d.start()
    wait_for(lambda: port_open(port), 10, "the statistics port")
    assert "warning: the statistics service listens on *:" in d.log_text()
    assert get(f"http://127.0.0.1:{port}/api/stats", auth=None)[0] == 200  # no auth: open
    d.stop()

    cert, key = make_cert(tmp_path / "tls")
    port2 = free_port()
    d2 = make_daemon(
        {
            "relayhost": "[127.0.0.1]:9",
            "stats_listen": f"127.0.0.1:{port2}",
            "stats_username": USER,
            "stats_password": PASSWORD,
            "stats_tls_cert_file": str(cert),
            "stats_tls_key_file": str(key),
        }
    )
    d2.start()
    wait_for(lambda: port_open(port2), 10, "the HTTPS port")
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    status, _, body = get(f"https://127.0.0.1:{port2}/api/stats", context=context)
    assert status == 200 and json.loads(body)["mqueue_messages"] == 0
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{port2}/api/stats", timeout=5).read()
    # A renewed certificate is picked up by a reload, on the same port.
    renewed, _ = make_cert(tmp_path / "tls", host="renewed.example")
    assert renewed == cert
    assert d2.mta("reload").returncode == 0
    wait_for(lambda: "reload --" in d2.log_text(), 10, "the reload")
    with socket.create_connection(("127.0.0.1", port2), timeout=10) as raw_sock:
        plain = ssl.create_default_context()
        plain.check_hostname = False
        plain.verify_mode = ssl.CERT_NONE
        with plain.wrap_socket(raw_sock) as tls_sock:
            der = tls_sock.getpeercert(binary_form=True)
    assert der is not None and b"renewed.example" in der


def test_reload_moves_the_service_and_changes_the_password(make_daemon: MakeDaemon) -> None:
    """SIGHUP with a new stats_listen and password: the new address answers with
    the new password, the old address is closed; a bad stats_listen is refused
    and the service keeps its address."""
    d, port = stats_daemon(make_daemon)
    d.start()
    wait_for(lambda: port_open(port), 10, "the statistics port")
    new_port = free_port()
    d.params.update(stats_listen=f"127.0.0.1:{new_port}", stats_password="fresh")
    d.write_config()
    assert d.mta("reload").returncode == 0
    wait_for(lambda: port_open(new_port), 10, "the new statistics port")
    wait_for(lambda: not port_open(port), 10, "the old port to close")
    fresh = "Basic " + base64.b64encode(f"{USER}:fresh".encode()).decode()
    assert get(f"http://127.0.0.1:{new_port}/api/stats", auth=fresh)[0] == 200
    assert get(f"http://127.0.0.1:{new_port}/api/stats")[0] == 401
    d.params.update(stats_listen="nowhere")
    d.write_config()
    refused = d.mta("reload")
    assert refused.returncode == 1 and "stats_listen" in refused.stderr
    assert get(f"http://127.0.0.1:{new_port}/api/stats", auth=fresh)[0] == 200


def png_size_and_colours(path: Path) -> tuple[int, int, int]:
    """Width, height and the number of distinct bytes in the image data."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    pos, idat = 8, b""
    while pos < len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_page_renders_in_headless_chromium(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    """The page, as a browser renders it: the DOM has the counters and the deferred
    message with its reason, and a screenshot is a real picture (copied to
    $MTA_SCREENSHOT_DIR when that is set, to look at)."""
    d, port = stats_daemon(make_daemon, stats_username="", stats_password="")
    d.start()
    code, _ = smtp_send(d.port, "a@example.org", ["b@slow.example"], b"Subject: s\r\n\r\nx\r\n")
    assert code == 250
    wait_for(lambda: len(d.queue_files("deferred")) == 1, 20, "a deferred message")
    url = f"http://127.0.0.1:{port}/"
    assert CHROMIUM is not None
    browser = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--hide-scrollbars",
    ]
    dom = subprocess.run(
        [*browser, "--dump-dom", url], capture_output=True, text=True, timeout=60
    ).stdout
    assert 'id="mqueue_messages"' in dom and "Mqueue messages" in dom
    assert '<div class="value">1</div>' in dom  # one message in the queue
    assert "slow.example" in dom and "Connection refused" in dom
    shot = tmp_path / "stats.png"
    subprocess.run(
        [*browser, f"--screenshot={shot}", "--window-size=1280,1000", url],
        capture_output=True,
        timeout=60,
    )
    width, height, colours = png_size_and_colours(shot)
    assert (width, height) == (1280, 1000) and colours > 20
    keep = os.environ.get("MTA_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / "stats.png")
