"""SMTP AUTH against Debian's real Dovecot (smtpd_sasl_type = dovecot).

The test starts dovecot's auth service from a temporary directory with its
own configuration and a passwd-file user database, listening on a UNIX socket
and on a loopback TCP port; mta's submission services use one each
(``smtpd_sasl_path = /path`` and ``inet:127.0.0.1:PORT``).  swaks
authenticates with PLAIN and LOGIN over STARTTLS and the mail is relayed.
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator

import pytest

from tests.integration.esmtp_peers import DOVECOT, Dovecot, RawClient, make_cert
from tests.integration.harness import Daemon, SmtpSink, free_port, port_open, wait_for

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which(DOVECOT) is None, reason="dovecot-core is not installed"),
]

USER, PASSWORD = "bob", "dovecot secret"


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Dovecot, int, int]]:
    root = tmp_path_factory.mktemp("dovecot-auth")
    sink = SmtpSink(root / "sink")
    dovecot = Dovecot(root / "dovecot", {USER: PASSWORD}, inet_port=free_port())
    sink.start()
    dovecot.start()
    wait_for(lambda: port_open(dovecot.inet_port), 10, "dovecot's inet listener")
    cert, key = make_cert(root / "tls")
    unix_port, inet_port = free_port(), free_port()
    master = f"""
127.0.0.1:{unix_port} inet n - n - - smtpd
  -o smtpd_tls_security_level=may
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
127.0.0.1:{inet_port} inet n - n - - smtpd
  -o smtpd_tls_security_level=may
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_path=inet:127.0.0.1:{dovecot.inet_port}
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
"""
    d = Daemon(
        root / "mta",
        unix_port,
        {
            "relayhost": f"[127.0.0.1]:{sink.port}",
            "smtpd_tls_cert_file": str(cert),
            "smtpd_tls_key_file": str(key),
            "smtpd_sasl_type": "dovecot",
            "smtpd_sasl_path": str(dovecot.socket_path),
        },
        master,
    )
    try:
        d.start()
        wait_for(lambda: port_open(inet_port), 10, "the second service")
        d.sink = sink  # type: ignore[attr-defined]
        yield d, dovecot, unix_port, inet_port
    finally:
        d.stop()
        dovecot.stop()
        sink.stop()


def swaks(port: int, *args: str) -> str:
    import subprocess

    r = subprocess.run(
        [
            "swaks",
            "--timeout",
            "15",
            "--server",
            f"127.0.0.1:{port}",
            "--tls",
            "--from",
            "bob@example.org",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return r.stdout + r.stderr


def test_auth_plain_and_login_against_dovecot(peers: tuple[Daemon, Dovecot, int, int]) -> None:
    """PLAIN over the UNIX socket and LOGIN over TCP: Dovecot says yes, the
    mail is relayed with ESMTPSA and the log names the Dovecot user."""
    d, dovecot, unix_port, inet_port = peers
    sink: SmtpSink = d.sink  # type: ignore[attr-defined]
    out = swaks(
        unix_port,
        "--auth",
        "PLAIN",
        "--auth-user",
        USER,
        "--auth-password",
        PASSWORD,
        "--to",
        "dove1@example.net",
        "--header",
        "Subject: dovecot-plain",
    )
    assert "235 2.7.0 Authentication successful" in out, out + dovecot.log()
    out = swaks(
        inet_port,
        "--auth",
        "LOGIN",
        "--auth-user",
        USER,
        "--auth-password",
        PASSWORD,
        "--to",
        "dove2@example.net",
        "--header",
        "Subject: dovecot-login",
    )
    assert "235 2.7.0 Authentication successful" in out, out + dovecot.log()
    wait_for(lambda: len(sink.messages()) >= 2, 15, "two deliveries")
    msgs = sink.messages()
    assert any(b"dovecot-plain" in m and b"with ESMTPSA" in m for m in msgs)
    assert any(b"dovecot-login" in m and b"with ESMTPSA" in m for m in msgs)
    assert f"sasl_method=LOGIN, sasl_username={USER}" in d.log_text()


def test_dovecot_refuses_a_wrong_password(peers: tuple[Daemon, Dovecot, int, int]) -> None:
    """A wrong password: Dovecot's FAIL becomes 535 5.7.8 and a logged
    warning; relaying stays closed."""
    d, _, unix_port, _ = peers
    c = RawClient(unix_port)
    c.cmd("EHLO c.example")
    c.starttls()
    assert "AUTH PLAIN LOGIN" in c.cmd("EHLO c.example")[1]
    bad = base64.b64encode(f"\0{USER}\0nope".encode()).decode()
    assert c.cmd(f"AUTH PLAIN {bad}")[0] == 535
    assert c.cmd("AUTH LOGIN")[0] == 334
    assert c.cmd(base64.b64encode(USER.encode()).decode())[0] == 334
    assert c.cmd(base64.b64encode(b"nope").decode())[0] == 535
    c.cmd("MAIL FROM:<bob@example.org>")
    assert c.cmd("RCPT TO:<x@example.net>")[0] == 554
    c.close()
    assert "SASL PLAIN authentication failed" in d.log_text()


def test_auth_disappears_while_dovecot_is_down(peers: tuple[Daemon, Dovecot, int, int]) -> None:
    """With Dovecot stopped, EHLO no longer offers AUTH (and the log says
    why); once it is back, AUTH works again."""
    d, dovecot, unix_port, _ = peers
    dovecot.stop()
    try:
        c = RawClient(unix_port)
        c.cmd("EHLO c.example")
        c.starttls()
        code, text = c.cmd("EHLO c.example")
        assert code == 250 and "AUTH" not in text
        assert c.cmd("AUTH PLAIN AGJvYgB4")[0] == 503
        c.close()
        assert f"warning: SASL: connect to {dovecot.socket_path}:" in d.log_text()
    finally:
        dovecot.start()
    out = swaks(
        unix_port,
        "--auth",
        "PLAIN",
        "--auth-user",
        USER,
        "--auth-password",
        PASSWORD,
        "--to",
        "dove3@example.net",
    )
    assert "235 2.7.0 Authentication successful" in out, out
