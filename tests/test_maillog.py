"""Tests of mta.maillog: Postfix-format lines, JSON lines, observers, reopening."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mta.maillog import LogEvent, MailLog, format_delay, parse_text

T = 1_700_000_000.0  # a fixed clock


def test_postfix_line_format() -> None:
    """``Mmm dd hh:mm:ss host mta/program[pid]: text``, the first label of the host."""
    out = io.StringIO()
    log = MailLog(None, "mx.example.com", clock=lambda: T, stream=out)
    log.line("smtpd", "connect from localhost[127.0.0.1]")
    line = out.getvalue()
    assert re.fullmatch(
        r"[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d mx mta/smtpd\[\d+\]: "
        r"connect from localhost\[127\.0\.0\.1\]\n",
        line,
    )


def test_control_characters_cannot_forge_lines() -> None:
    """A CR or LF from a peer is escaped: one event, one line."""
    out = io.StringIO()
    MailLog(None, "mx", clock=lambda: T, stream=out).line("smtpd", "a\r\nfake: line")
    assert out.getvalue().count("\n") == 1 and "a\\r\\nfake: line" in out.getvalue()


def test_json_lines_carry_the_fields() -> None:
    """maillog_format=json: one object a line with time, program, queue id, the
    name=value fields and the status detail."""
    out = io.StringIO()
    log = MailLog(None, "mx.example", clock=lambda: T, stream=out, log_format="json")
    log.line(
        "smtp",
        "4QxAB: to=<c@d.example>, relay=h[192.0.2.1]:25, delay=0.4, delays=0.1/0/0.2/0.1, "
        "dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as X)",
    )
    record = json.loads(out.getvalue())
    assert record["program"] == "mta/smtp" and record["host"] == "mx"
    assert record["queue_id"] == "4QxAB" and record["to"] == "c@d.example"
    assert record["status"] == "sent" and record["detail"] == "250 2.0.0 Ok: queued as X"
    assert record["relay"] == "h[192.0.2.1]:25" and record["dsn"] == "2.0.0"
    assert record["time"].startswith("2023-11-14T") and record["text"].startswith("4QxAB: to=")


def test_parse_reject_line() -> None:
    """An smtpd reject line: stage, client, reply and the envelope fields."""
    queue_id, fields = parse_text(
        "NOQUEUE: reject: RCPT from unknown[192.0.2.9]: 554 5.7.1 <b@x>: Relay access "
        "denied; from=<a@b> to=<b@x> proto=ESMTP helo=<h>"
    )
    assert queue_id is None
    assert fields == {
        "action": "reject",
        "stage": "RCPT",
        "client": "unknown[192.0.2.9]",
        "reply": "554 5.7.1 <b@x>: Relay access denied",
        "from": "a@b",
        "to": "b@x",
        "proto": "ESMTP",
        "helo": "h",
    }


def test_fields_inside_a_remote_reply_are_not_taken() -> None:
    """name=value text in the detail is the remote's, not a field."""
    _, fields = parse_text("Q1: to=<a@b>, relay=none, status=bounced (said: to=<x@y> no)")
    assert fields["to"] == "a@b" and fields["detail"] == "said: to=<x@y> no"


def test_warnings_are_not_queue_ids() -> None:
    """``warning: ...`` lines have no queue id."""
    assert parse_text("warning: something odd")[0] is None


@given(st.text(max_size=200))
def test_parse_text_never_fails(text: str) -> None:
    """Any text parses into an id (or None) and string fields."""
    queue_id, fields = parse_text(text)
    assert queue_id is None or queue_id.isalnum()
    assert all(isinstance(v, str) for v in fields.values())


def test_observers_see_every_line() -> None:
    """Observers receive each line as a LogEvent with its parsed fields."""
    seen: list[LogEvent] = []
    log = MailLog(None, "mx", clock=lambda: T, stream=io.StringIO(), observers=[seen.append])
    log.line("qmgr", "Q1: from=<a@b>, size=10, nrcpt=1 (queue active)")
    assert seen[0].program == "qmgr" and seen[0].queue_id == "Q1"
    assert seen[0].fields == {"from": "a@b", "size": "10", "nrcpt": "1", "detail": "queue active"}


def test_reopen_after_logrotate_moved_the_file(tmp_path: Path) -> None:
    """After the file was renamed away, reopen() writes to a new file at the path."""
    path = tmp_path / "logs" / "maillog"
    log = MailLog(path, "mx", clock=lambda: T)
    log.line("master", "one")
    path.rename(tmp_path / "maillog.1")
    log.line("master", "two")  # still the old file
    assert log.reopen()
    log.line("master", "three")
    log.close()
    assert "two" in (tmp_path / "maillog.1").read_text()
    assert "three" in path.read_text() and "two" not in path.read_text()


def test_reopen_without_a_file_is_a_no_op() -> None:
    """Standard output is not reopened."""
    assert not MailLog(None, "mx", stream=io.StringIO()).reopen()


def test_delay_format_is_postfix() -> None:
    """Delays as Postfix prints them."""
    assert [format_delay(x) for x in (0, 0.004, 0.04, 0.27, 1.15, 9.99, 10.5, 355.2, -1)] == [
        "0",
        "0",
        "0.04",
        "0.27",
        "1.1",
        "9.9",
        "10",
        "355",
        "0",
    ]


def test_reopen_failure_keeps_the_old_file(tmp_path: Path) -> None:
    """When the path cannot be opened again, reopen raises and lines still go to
    the old file."""
    path = tmp_path / "logs" / "maillog"
    log = MailLog(path, "mx", clock=lambda: T)
    path.rename(tmp_path / "maillog.1")
    path.mkdir()  # the path is now a directory: cannot be opened as a file
    with pytest.raises(OSError):
        log.reopen()
    log.line("master", "still logged")
    log.close()
    assert "still logged" in (tmp_path / "maillog.1").read_text()
