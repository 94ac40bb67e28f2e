"""``mta sendmail``: Postfix sendmail's options, the headers cleanup adds or
removes for local submissions, -t, the dot rule, addresses completed with
myorigin, the queue files it writes without a daemon, and its exit codes."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from mta import sendmail
from mta.queue.store import QueueStore
from mta.sendmail import Local, Options, SendmailError, parse_args, prepare, read_input

LOCAL = Local("joe", 1000, "Joe User", "example.org", "mx.example.org")


def lines(text: str) -> list[bytes]:
    return read_input(io.BytesIO(text.encode()), dot_ends=True, limit=0)


def test_options_like_postfix() -> None:
    """getopt-style options, attached or separate values; recipients after."""
    o = parse_args(["-oi", "-f", "me@x.org", "-FMy Name", "-t", "-N", "success,delay", "a@b.c"])
    assert o.sender == "me@x.org" and o.full_name == "My Name" and o.extract
    assert not o.dot_ends and o.notify == ("SUCCESS", "DELAY") and o.recipients == ["a@b.c"]
    o = parse_args(["-i", "-odb", "-Rhdrs", "-V", "env1", "-B8BITMIME", "--", "-weird@x"])
    assert o.ret == "HDRS" and o.envid == "env1" and o.body == "8BITMIME"
    assert o.recipients == ["-weird@x"]
    assert parse_args(["-bp"]).mode == "mailq"
    assert parse_args(["-q"]).mode == "flush"
    assert parse_args(["-bv", "x@y"]).mode == "verify"
    assert parse_args(["-r", "<>", "x@y"]).sender == "<>"
    for bad in (["-Z"], ["-N", "sometimes"], ["-bs"], ["-f"]):
        with pytest.raises(SendmailError) as e:
            parse_args(bad)
        assert e.value.status == 64


def test_dot_ends_input_unless_i() -> None:
    """A lone "." ends the input, unless -i; CRLF and LF both end lines."""
    data = b"Subject: x\r\n\r\nbody\n.\nafter\n"
    assert read_input(io.BytesIO(data), dot_ends=True, limit=0) == [b"Subject: x", b"", b"body"]
    assert read_input(io.BytesIO(data), dot_ends=False, limit=0)[-2:] == [b".", b"after"]
    with pytest.raises(SendmailError, match="too big"):
        read_input(io.BytesIO(b"x" * 100 + b"\n"), dot_ends=False, limit=50)


def test_headers_added_for_a_bare_message() -> None:
    """A message with no headers gets Received, Date, Message-Id and From
    (with the user's full name); the sender is the login @myorigin."""
    p = prepare(lines("just a body\n"), Options(recipients=["bob"]), LOCAL, queue_id="QID1", now=0)
    assert p.sender == "joe@example.org" and p.recipients == ["bob@example.org"]
    text = p.message.decode()
    assert text.startswith("Received: by mx.example.org (mta, from userid 1000)\r\n\tid QID1; ")
    assert "\r\nDate: " in text
    assert "\r\nMessage-Id: <19700101000000.QID1@mx.example.org>\r\n" in text
    assert "\r\nFrom: Joe User <joe@example.org>\r\n\r\njust a body\r\n" in text
    assert p.message_id == "<19700101000000.QID1@mx.example.org>"


def test_existing_headers_are_kept_and_bcc_removed() -> None:
    """Date, Message-Id and From present are kept; Bcc and Return-Path go."""
    msg = (
        "From: Boss <boss@x.org>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n"
        "Message-Id: <m1@x.org>\nBcc: hidden@x.org\nReturn-Path: <forged@x.org>\n"
        "Subject: hi\n\nbody\n"
    )
    p = prepare(lines(msg), Options(recipients=["a@b.org"]), LOCAL, queue_id="Q", now=0)
    text = p.message.decode()
    assert "From: Boss <boss@x.org>" in text and "Message-Id: <m1@x.org>" in text
    assert text.count("Date:") == 1 and text.count("From:") == 1
    assert "Bcc" not in text and "forged" not in text
    assert p.message_id == "<m1@x.org>"


def test_t_takes_recipients_from_headers() -> None:
    """-t: To, Cc and Bcc (folded, with names) become recipients, added to
    the command line's; Resent- headers win when present."""
    msg = "To: A <a@x.org>, b@x.org\nCc:\n  c@x.org\nBcc: d\nSubject: s\n\nbody\n"
    p = prepare(
        lines(msg), Options(extract=True, recipients=["z@x.org"]), LOCAL, queue_id="Q", now=0
    )
    assert p.recipients == ["z@x.org", "a@x.org", "b@x.org", "c@x.org", "d@example.org"]
    assert b"d@example.org" not in p.message and b"Bcc" not in p.message
    resent = "To: old@x.org\nResent-To: new@x.org\n\nbody\n"
    p = prepare(lines(resent), Options(extract=True), LOCAL, queue_id="Q", now=0)
    assert p.recipients == ["new@x.org"]


def test_no_recipients_is_an_error() -> None:
    """No recipients anywhere: Postfix's two messages and exit codes."""
    with pytest.raises(SendmailError, match="No recipient addresses found") as e:
        prepare(lines("Subject: x\n\nbody\n"), Options(extract=True), LOCAL, queue_id="Q", now=0)
    assert e.value.status == 65
    with pytest.raises(SendmailError, match="must be specified") as e:
        prepare(lines("body\n"), Options(), LOCAL, queue_id="Q", now=0)
    assert e.value.status == 64


def test_null_sender_and_bad_addresses() -> None:
    """-f '<>' is the null sender; a recipient that is no address is a data error."""
    p = prepare(
        lines("x\n"), Options(sender="<>", recipients=["a@b.org"]), LOCAL, queue_id="Q", now=0
    )
    assert p.sender == ""
    with pytest.raises(SendmailError) as e:
        prepare(lines("x\n"), Options(recipients=["a@@b"]), LOCAL, queue_id="Q", now=0)
    assert e.value.status == 65


def write_conf(confdir: Path, **params: str) -> Path:
    confdir.mkdir(parents=True, exist_ok=True)
    base = {"myhostname": "mx.example.org", "myorigin": "example.org", "queue_directory": "queue"}
    base.update(params)
    (confdir / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in base.items()))
    return confdir / "queue"


def test_main_queues_into_incoming_without_a_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no daemon running, sendmail creates the queue and commits the
    message and its sidecar into incoming, where the daemon will find it;
    the sidecar has the DSN options and protocol local."""
    root = write_conf(tmp_path / "conf", maillog_file="maillog")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"Subject: hi\n\nbody\n")))
    rc = sendmail.main(
        ["-N", "failure", "-R", "hdrs", "-V", "e1", "r@example.net"], tmp_path / "conf"
    )
    assert rc == 0
    store = QueueStore(root)
    [qid] = store.queue_ids("incoming")
    env = json.loads(store.envelope_path("incoming", qid).read_text())
    assert env["recipients"][0]["address"] == "r@example.net"
    assert env["recipients"][0]["notify"] == ["FAILURE"]
    assert env["ret"] == "HDRS" and env["envid"] == "e1" and env["protocol"] == "local"
    data = store.message_path("incoming", qid).read_bytes()
    assert data.startswith(b"Received: by mx.example.org (mta, from userid ")
    assert b"\r\nSubject: hi\r\n" in data and data.endswith(b"\r\n\r\nbody\r\n")
    log = (tmp_path / "conf" / "maillog").read_text()
    assert "mta/pickup[" in log and f"{qid}: uid=" in log and f"{qid}: message-id=<" in log


def test_main_refuses_when_the_queue_is_short_of_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """queue_minfree larger than the free space: exit 75 (try again), nothing queued."""
    root = write_conf(tmp_path / "conf", queue_minfree="1000000000000000")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"body\n")))
    assert sendmail.main(["r@example.net"], tmp_path / "conf") == 75
    assert "Insufficient system storage" in capsys.readouterr().err
    assert not QueueStore(root).queue_ids("incoming")


def test_main_usage_errors_exit_64(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown option: exit 64 with one line on stderr."""
    write_conf(tmp_path / "conf")
    assert sendmail.main(["-Z", "r@x"], tmp_path / "conf") == 64
    err = capsys.readouterr().err
    assert err.startswith("mta: fatal: unknown option: -Z") and err.count("\n") == 1


def test_bv_mails_a_routing_report_to_the_sender(tmp_path: Path) -> None:
    """-bv delivers nothing: it queues a report, from the null sender to the
    sender, saying how each recipient would be routed."""
    root = write_conf(tmp_path / "conf", relayhost="[relay.example.org]:2525")
    rc = sendmail.main(["-bv", "-f", "me@example.org", "a@example.net", "b"], tmp_path / "conf")
    assert rc == 0
    store = QueueStore(root)
    [qid] = store.queue_ids("incoming")
    env = json.loads(store.envelope_path("incoming", qid).read_text())
    assert env["sender"] == "" and [r["address"] for r in env["recipients"]] == ["me@example.org"]
    text = store.message_path("incoming", qid).read_bytes().decode()
    assert "Subject: Mail Delivery Status Report" in text
    assert "<a@example.net>: delivery via smtp to [relay.example.org]:2525" in text


def test_called_as_sendmail_through_a_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed as /usr/sbin/sendmail (a link to mta), the command is
    sendmail itself; MAIL_CONFIG names the configuration directory."""
    from mta import cli

    root = write_conf(tmp_path / "conf")
    monkeypatch.setenv("MAIL_CONFIG", str(tmp_path / "conf"))
    monkeypatch.setattr(
        sys, "argv", ["/usr/sbin/sendmail", "-oi", "-f", "a@example.org", "r@x.org"]
    )
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"Subject: via link\n\nx\n")))
    assert cli.main() == 0
    [qid] = QueueStore(root).queue_ids("incoming")
    assert b"Subject: via link" in QueueStore(root).message_path("incoming", qid).read_bytes()
