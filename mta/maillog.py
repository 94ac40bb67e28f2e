"""The mail log: one line per event, in Postfix's format.

Lines look like syslog lines written by Postfix's daemons, so that tools
which read a Postfix mail log (pflogsumm, grep habits) read ours::

    Nov 22 03:21:27 mx mta/smtpd[4242]: 4Qx9...: client=localhost[127.0.0.1]
    Nov 22 03:21:27 mx mta/qmgr[4242]: 4Qx9...: from=<a@b>, size=310, nrcpt=1 (queue active)
    Nov 22 03:21:28 mx mta/smtp[4242]: 4Qx9...: to=<c@d>, relay=h[1.2.3.4]:25, delay=0.4, ...

Destination: ``maillog_file`` (Postfix 3.4 name) or standard output.  The
writer is swapped whole on reload and reopened for logrotate.  Writes are
small appends to a buffered file, flushed per line, so a crash loses no line
that was written before it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

SYSLOG_NAME = "mta"


class MailLog:
    """Formats and writes mail log lines; one instance per daemon."""

    def __init__(
        self,
        path: Path | None,
        hostname: str,
        *,
        clock: Callable[[], float] = time.time,
        stream: TextIO | None = None,
    ) -> None:
        self.path = path
        self.hostname = hostname.split(".")[0] or hostname
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
        """Write one line as ``mta/PROGRAM[pid]: TEXT``."""
        stamp = time.strftime("%b %d %H:%M:%S", time.localtime(self._clock()))
        # A single control character would let a peer forge extra log lines.
        clean = text.replace("\r", "\\r").replace("\n", "\\n")
        out = f"{stamp} {self.hostname} {SYSLOG_NAME}/{program}[{self._pid}]: {clean}\n"
        with self._lock:
            try:
                self._stream.write(out)
                self._stream.flush()
            except (OSError, ValueError):
                pass  # a full disk must not take the daemon down with it

    def reopen(self) -> None:
        """Reopen the log file (after logrotate moved it)."""
        if not self._owned or self.path is None:
            return
        with self._lock:
            old = self._stream
            self._stream = self._open(self.path)
            old.close()

    def close(self) -> None:
        if self._owned:
            with self._lock:
                self._stream.close()
