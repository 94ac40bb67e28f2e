"""The daemon end to end: SMTP in, delivery out, for the pieces of issue 5
that live in the SMTP server and the default configuration: virtual mailbox
users (known ones land in their maildir, unknown ones get 550 at RCPT),
automatic BCC, and the repository's conf/ delivering mail for localhost."""

from __future__ import annotations

import shutil
import smtplib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.harness import REPO, CaptureSink, Daemon, smtp_send, wait_for

pytestmark = pytest.mark.timeout(90)

MakeDaemon = Callable[..., Daemon]


def test_virtual_mailbox_delivery_unknown_user_and_bcc(
    make_daemon: MakeDaemon, capture: CaptureSink
) -> None:
    """A known virtual user gets the message in its maildir with a
    Postfix-style log line (relay=virtual); an unknown one is refused at
    RCPT with 'User unknown in virtual mailbox table'; always_bcc gets a
    copy through the relayhost."""
    d = make_daemon(
        {
            "virtual_mailbox_domains": "virt.test",
            "virtual_mailbox_maps": "texthash:vmailbox",
            "virtual_mailbox_base": "mail",
            "always_bcc": "archive@example.net",
            "relayhost": f"[127.0.0.1]:{capture.port}",
        }
    )
    (d.confdir / "vmailbox").write_text("alice@virt.test alice/\n")
    d.start()
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as s:
        s.ehlo("client.test")
        s.mail("sender@example.org")
        code, text = s.rcpt("nobody@virt.test")
        assert code == 550
        assert text == (
            b"5.1.1 <nobody@virt.test>: Recipient address rejected: "
            b"User unknown in virtual mailbox table"
        )
    code, _ = smtp_send(
        d.port, "sender@example.org", ["alice@virt.test"], b"Subject: v\r\n\r\nhi\r\n"
    )
    assert code == 250
    new = d.confdir / "mail" / "alice" / "new"
    wait_for(lambda: new.exists() and any(new.iterdir()), 15, "maildir delivery")
    [path] = list(new.iterdir())
    assert path.read_bytes().startswith(
        b"Return-Path: <sender@example.org>\nDelivered-To: alice@virt.test\n"
    )
    [copy] = capture.wait(1)
    assert copy.recipients == ["archive@example.net"]
    wait_for(lambda: "status=sent (delivered to maildir)" in d.log_text(), 10, "log line")
    assert "to=<alice@virt.test>, relay=virtual," in d.log_text()


def test_default_conf_delivers_localhost_into_maildir(
    make_daemon: MakeDaemon, tmp_path: Path
) -> None:
    """The repository's conf/ (with its own listener port) takes mail for
    you@localhost and puts it into run/mail/you/new, as the README tour says."""
    confdir = tmp_path / "repo" / "conf"
    shutil.copytree(REPO / "conf", confdir)
    d = make_daemon()
    d.confdir = confdir
    d.log_path = confdir / "daemon.out"
    plugdir = confdir / "plugins" / "twisted" / "plugins"
    plugdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "twisted_plugins" / "mta_plugin.py", plugdir / "mta_plugin.py")
    main_cf = confdir / "main.cf"
    text = main_cf.read_text().replace("stats_listen = 127.0.0.1:8025", "stats_listen =")
    main_cf.write_text(text + "maillog_file = maillog\ndns_nameservers = 127.0.0.1:9\n")
    (confdir / "master.cf").write_text(f"127.0.0.1:{d.port} inet n - n - - smtpd\n")
    d.start()
    code, _ = smtp_send(
        d.port, "me@example.org", ["you@localhost"], b"Subject: tour\r\n\r\nhello\r\n"
    )
    assert code == 250
    new = tmp_path / "repo" / "run" / "mail" / "you" / "new"
    wait_for(lambda: new.exists() and any(new.iterdir()), 15, "maildir delivery")
    assert b"Subject: tour\n\nhello\n" in next(new.iterdir()).read_bytes()
