"""The mail log: one line per event, in Postfix's format or as JSON lines.

Lines look like syslog lines written by Postfix's daemons, so that tools
which read a Postfix mail log (pflogsumm, grep habits) read ours::

    Nov 22 03:21:27 mx mta/smtpd[4242]: 4Qx9...: client=localhost[127.0.0.1]
    Nov 22 03:21:27 mx mta/qmgr[4242]: 4Qx9...: from=<a@b>, size=310, nrcpt=1 (queue active)
    Nov 22 03:21:28 mx mta/smtp[4242]: 4Qx9...: to=<c@d>, relay=h[1.2.3.4]:25, delay=0.4, ...

The syslog name is ``mta`` (``pflogsumm --syslog-name=mta``).  With
``maillog_format = json`` each line is instead one JSON object: the time
(RFC 3339), host, program, pid, queue id and text, plus the ``name=value``
fields of the text (``to``, ``relay``, ``delay``, ``dsn``, ``status``, ...)
and the parenthesised ``detail`` after a status.

Inputs: ``(program, text)`` from smtpd, the queue manager and the daemon.
Outputs: lines on ``maillog_file`` (Postfix 3.4 name) or standard output, and
a ``LogEvent`` to each observer (the statistics service keeps the recent
deliveries that way).  The writer is swapped whole on reload and reopened
for logrotate (SIGUSR2, ``mta reopen-log``).  Writes are small appends,
flushed per line, so a crash loses no line that was written before it.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TextIO

SYSLOG_NAME = "mta"
LogFormat = Literal["postfix", "json"]

#: Words that start Postfix log texts and are not queue ids.
_NOT_IDS = frozenset({"warning", "error", "fatal", "panic", "statistics", "reject", "NOQUEUE"})
_QUEUE_ID = re.compile(r"([0-9A-Za-z]{1,64}): ")
_FIELD = re.compile(r"(?:^|(?<=[\s,;]))([a-z][a-z0-9_-]*)=(<[^>]*>|[^\s,;]*)")
_STATUS_DETAIL = re.compile(r"\bstatus=[a-z]+ \((.*)\)$")
_QUEUE_DETAIL = re.compile(r", nrcpt=\d+ \((.*)\)$")


@dataclass(frozen=True)
class LogEvent:
    """One mail log line as data: what observers receive and JSON lines hold."""

    time: float
    host: str
    program: str  # smtpd, qmgr, smtp, cleanup, bounce, master
    pid: int
    text: str
    queue_id: str | None = None
    fields: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        stamp = datetime.datetime.fromtimestamp(self.time).astimezone()
        record: dict[str, object] = {
            "time": stamp.isoformat(timespec="milliseconds"),
            "host": self.host,
            "program": f"{SYSLOG_NAME}/{self.program}",
            "pid": self.pid,
        }
        if self.queue_id is not None:
            record["queue_id"] = self.queue_id
        for name, value in self.fields.items():
            record.setdefault(name, value)
        record["text"] = self.text
        return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def parse_text(text: str) -> tuple[str | None, dict[str, str]]:
    """The queue id and the ``name=value`` fields of a Postfix log text; ``<addr>``
    values lose their brackets, and the text in parentheses after ``status=...``
    (or after ``nrcpt=N``) is the ``detail`` field."""
    queue_id: str | None = None
    rest = text
    match = _QUEUE_ID.match(text)
    if match is not None and match.group(1) not in _NOT_IDS:
        queue_id = match.group(1)
        rest = text[match.end() :]
    elif text.startswith("NOQUEUE: "):
        rest = text[len("NOQUEUE: ") :]
    fields: dict[str, str] = {}
    if rest.startswith("reject: "):
        # "reject: RCPT from host[addr]: 554 5.7.1 text; from=<a> to=<b> proto=ESMTP"
        head, _, tail = rest.partition("; ")
        words = head.split(" ", 4)
        fields["action"] = "reject"
        if len(words) >= 4:
            fields["stage"] = words[1]
            fields["client"] = words[3].rstrip(":")
        if len(words) == 5:
            fields["reply"] = words[4]
        rest = tail
    detail = _STATUS_DETAIL.search(rest) or _QUEUE_DETAIL.search(rest)
    # name=value pairs inside the detail (a remote reply) are not ours.
    head = rest if detail is None else rest[: detail.start(1)]
    for name, value in _FIELD.findall(head):
        if name not in fields:
            fields[name] = value[1:-1] if value.startswith("<") else value
    if detail is not None:
        fields["detail"] = detail.group(1)
    return queue_id, fields


def format_delay(seconds: float) -> str:
    """A delay as Postfix's log_adhoc.c prints it: whole seconds from 10 s, one
    decimal from 1 s, else hundredths, and ``0`` below 0.01 s (``delay=0.27``,
    ``delay=1.1``, ``delays=0/0/0.04/0``, ``delay=355``)."""
    seconds = max(0.0, seconds)
    if seconds >= 10:
        return str(int(seconds))
    if seconds >= 1:
        return f"{int(seconds)}.{int(seconds * 10) % 10}"
    hundredths = int(seconds * 100)
    return f"0.{hundredths:02d}" if hundredths else "0"


Observer = Callable[[LogEvent], None]


class MailLog:
    """Formats and writes mail log lines; one instance per daemon."""

    def __init__(
        self,
        path: Path | None,
        hostname: str,
        *,
        clock: Callable[[], float] = time.time,
        stream: TextIO | None = None,
        log_format: LogFormat = "postfix",
        observers: list[Observer] | None = None,
    ) -> None:
        self.path = path
        self.hostname = hostname.split(".")[0] or hostname
        self.log_format: LogFormat = log_format
        self.observers: list[Observer] = list(observers or [])
        self._clock = clock
        self._pid = os.getpid()
        self._lock = threading.Lock()  # lines may come from delivery threads
        self._stream: TextIO
        self._owned = False
        if path is not None:
            self._stream = self._open(path)
            self._owned = True
        else:
            # The process's real standard output: under twistd, sys.stdout is
            # a logging shim that would prefix every line with its own stamp.
            real = sys.__stdout__ if sys.__stdout__ is not None else sys.stdout
            self._stream = stream if stream is not None else real

    @staticmethod
    def _open(path: Path) -> TextIO:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "a", encoding="utf-8", errors="backslashreplace", buffering=1)

    def line(self, program: str, text: str) -> None:
        """Write one line as ``mta/PROGRAM[pid]: TEXT`` (or its JSON form)."""
        now = self._clock()
        # A single control character would let a peer forge extra log lines.
        clean = text.replace("\r", "\\r").replace("\n", "\\n")
        event: LogEvent | None = None
        if self.log_format == "json" or self.observers:
            queue_id, fields = parse_text(clean)
            event = LogEvent(now, self.hostname, program, self._pid, clean, queue_id, fields)
        if self.log_format == "json":
            assert event is not None
            out = event.to_json() + "\n"
        else:
            stamp = time.strftime("%b %d %H:%M:%S", time.localtime(now))
            out = f"{stamp} {self.hostname} {SYSLOG_NAME}/{program}[{self._pid}]: {clean}\n"
        with self._lock:
            try:
                self._stream.write(out)
                self._stream.flush()
            except (OSError, ValueError):
                pass  # a full disk must not take the daemon down with it
        if event is not None:
            for observer in self.observers:
                observer(event)

    def reopen(self) -> bool:
        """Reopen the log file (after logrotate moved it); False when there is no
        file (standard output).  Raises OSError when the file cannot be opened; the
        old stream is then kept, so no line is lost."""
        if not self._owned or self.path is None:
            return False
        with self._lock:
            new = self._open(self.path)
            old = self._stream
            self._stream = new
            old.close()
        return True

    def close(self) -> None:
        if self._owned:
            with self._lock:
                self._stream.close()
