"""The peers around the servers: Postfix's smtp-sink and smtp-source, and a tarpit.

Job: start ``smtp-sink`` as the next hop and count the messages it receives,
with the time each count was reached (its ``-c`` counters, which it writes
and flushes on every event); run ``smtp-source`` as the load; provide a
tarpit — a listening socket that is never accepted — as the next hop of the
accept-only scenarios, so a server's delivery connections wait for a
greeting that never comes and no message leaves or is retried during the run.

Inputs: ports and smtp-source options.  Outputs: :class:`Sink`,
:class:`Tarpit`, :func:`smtp_source`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass

from bench.procs import free_port, port_open, wait_for

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
SINK_HOSTNAME = "sink.bench.example"  # not a server's myhostname: no loop detection

_COUNTER_RE = re.compile(rb"mesg=(\d+)")


def sink_user() -> str:
    """smtp-sink started as root must drop privileges to some user."""
    if os.geteuid() == 0:
        return "nobody"
    return subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()


class Sink:
    """``smtp-sink -c`` on 127.0.0.1, counting received messages (the ``.`` of
    each DATA).  It keeps no copies: the next hop costs as little as possible."""

    def __init__(self, port: int = 0, backlog: int = 1024) -> None:
        self.port = port or free_port()
        self.backlog = backlog
        self.proc: subprocess.Popen[bytes] | None = None
        self._count = 0
        self._times: list[tuple[float, int]] = []  # (monotonic time, count) at each change
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                SMTP_SINK,
                "-u",
                sink_user(),
                "-c",
                "-h",
                SINK_HOSTNAME,
                "-m",
                str(self.backlog),
                f"127.0.0.1:{self.port}",
                str(self.backlog),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, name="sink-reader", daemon=True)
        self._reader.start()
        wait_for(lambda: port_open(self.port), 10, "smtp-sink to listen")
        # port_open() made a session but no message: the count stays 0.

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            found = _COUNTER_RE.findall(chunk)
            if found:
                count = int(found[-1])
                with self._cond:
                    if count != self._count:
                        self._count = count
                        self._times.append((time.monotonic(), count))
                        self._cond.notify_all()

    @property
    def count(self) -> int:
        with self._cond:
            return self._count

    def wait_count(self, n: int, timeout: float) -> float | None:
        """Block until ``n`` messages arrived; the monotonic time the ``n``-th
        arrived, or None on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._count < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 1.0))
            return self.time_of(n)

    def time_of(self, n: int) -> float | None:
        """When the count first reached ``n`` (call with the lock or after the fact)."""
        for t, count in self._times:
            if count >= n:
                return t
        return None

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
        self.proc = None


class Tarpit:
    """A listening socket on 127.0.0.1 that never accepts: connections complete
    in the kernel (up to ``backlog``) and then hear nothing."""

    def __init__(self, backlog: int = 1024) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.port = int(self.sock.getsockname()[1])

    def close(self) -> None:
        """Closing resets the waiting connections: delivery attempts fail at once."""
        self.sock.close()


@dataclass(frozen=True)
class SourceResult:
    seconds: float
    returncode: int
    output: str


def smtp_source(
    port: int,
    *,
    messages: int,
    sessions: int,
    size: int,
    reuse: bool,
    timeout: float,
    sender: str = "source@bench.example",
    recipient: str = "sink@bench.example",
) -> SourceResult:
    """Run smtp-source against 127.0.0.1:``port``: ``messages`` messages of
    ``size`` body octets over ``sessions`` parallel sessions, a connection per
    message unless ``reuse`` (``-d``).  ``-N`` numbers the recipients so no
    cache sees a 100% hit rate.  Killed (process group) after ``timeout``."""
    argv = [
        SMTP_SOURCE,
        "-N",
        "-M",
        "source.bench.example",
        "-f",
        sender,
        "-t",
        recipient,
        "-s",
        str(sessions),
        "-m",
        str(messages),
        "-l",
        str(size),
    ]
    if reuse:
        argv.append("-d")
    argv.append(f"127.0.0.1:{port}")
    start = time.monotonic()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return SourceResult(time.monotonic() - start, -9, out.decode(errors="replace"))
    except BaseException:  # Ctrl-C: it runs in its own session, so stop it here
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return SourceResult(time.monotonic() - start, proc.returncode, out.decode(errors="replace"))
