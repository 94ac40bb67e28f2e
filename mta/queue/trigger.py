"""Wake-up requests from the ``mta`` tools to the running daemon.

Postfix's tools wake its queue manager through a FIFO (``public/qmgr``);
so do ours: ``$queue_directory/public/qmgr``.  The daemon holds the FIFO
open for reading (and for writing, so that it never sees end-of-file); a
tool opens it for writing without blocking, which fails with ENXIO when no
daemon reads it — that is how a tool knows the daemon is not running — and
writes one request a line.  Writes of up to ``PIPE_BUF`` octets are atomic,
so the requests of tools running at once never mix.

Requests (words, then a queue id where one is needed):

``scan``           rescan the queue directories (new mail from ``mta sendmail``,
                   messages that ``mta queue`` moved)
``flush``          ``mta flush``: every deferred message is due now
``release ID``     ID was released from hold or requeued: due now
``hold ID``, ``delete ID``, ``requeue ID``
                   ID is in ``active``, being delivered: do it when the
                   current attempt ends

A lost request costs little: the daemon rescans every ``queue_run_delay``,
and a held or deleted message is safe without any request (the daemon finds
it gone when it reaches for it).

Inputs: the queue directory; for the reader, the reactor and a function
that takes each request line.  Outputs: ``TriggerReader`` (the daemon's
end), ``send`` (the tools' end), ``fifo_path``, ``ensure_fifo``.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IReadDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

log = logging.getLogger(__name__)

FIFO_DIR = "public"
FIFO_NAME = "qmgr"
REQUESTS = frozenset({"scan", "flush", "release", "hold", "delete", "requeue"})
_MAX_LINE = 200
_PIPE_BUF = 512  # POSIX's minimum; Linux's is 4096


def fifo_path(queue_directory: Path) -> Path:
    return Path(queue_directory) / FIFO_DIR / FIFO_NAME


def ensure_fifo(queue_directory: Path) -> Path:
    """Create ``public/qmgr`` (a FIFO, mode 0600) unless it is one already;
    a file of another kind in its place is replaced."""
    path = fifo_path(queue_directory)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISFIFO(st.st_mode):
        log.warning("%s is not a FIFO: replacing it", path)
        os.unlink(path)
        st = None
    if st is None:
        os.mkfifo(path, 0o600)
    return path


def parse(line: str) -> tuple[str, str] | None:
    """A request line as (word, argument); None for one that is not a request."""
    word, _, arg = line.strip().partition(" ")
    if word not in REQUESTS:
        return None
    arg = arg.strip()
    if word in ("scan", "flush"):
        return (word, "") if not arg else None
    if not arg or not arg.isascii() or not arg.isalnum() or len(arg) > 64:
        return None
    return word, arg


@implementer(IReadDescriptor)
class TriggerReader:
    """The daemon's end of the FIFO: each complete line goes to ``on_request``."""

    def __init__(self, reactor: Any, path: Path, on_request: Callable[[str, str], None]) -> None:
        self.reactor = reactor
        self.path = path
        self.on_request = on_request
        # O_RDWR: the daemon is a writer too, so the FIFO never reports EOF
        # when the last tool closes it (Linux and BSD allow this on FIFOs).
        self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self._buffer = b""
        self._reading = False

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "mta-trigger"

    def start(self) -> None:
        if not self._reading:
            self._reading = True
            self.reactor.addReader(self)

    def stop(self) -> None:
        if self._reading:
            self._reading = False
            self.reactor.removeReader(self)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def doRead(self) -> None:
        while True:
            try:
                chunk = os.read(self._fd, 4096)
            except BlockingIOError:
                break
            except OSError as e:
                log.error("reading %s: %s", self.path, e)
                break
            if not chunk:
                break
            self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > _MAX_LINE:
            self._buffer = b""  # garbage without a newline: drop it
        for raw in lines:
            request = parse(raw.decode("ascii", "replace"))
            if request is None:
                if raw.strip():
                    log.warning("%s: ignoring request %r", self.path, raw[:_MAX_LINE])
                continue
            try:
                self.on_request(*request)
            except Exception:
                log.exception("handling request %r", raw)

    def connectionLost(self, reason: Failure) -> None:
        pass  # nothing to tell anyone: stop() closes the descriptor


def send(queue_directory: Path, requests: Iterable[str], *, timeout: float = 5.0) -> bool:
    """Write request lines to the daemon; False when no daemon is reading
    (not running, or the FIFO is missing).  Blocks at most ``timeout``
    seconds when the FIFO is full (the daemon is busy)."""
    path = fifo_path(queue_directory)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ENXIO, errno.ENOENT, errno.ENOTDIR):
            return False
        raise
    try:
        deadline = time.monotonic() + timeout
        for chunk in _chunks(requests):
            while True:
                try:
                    os.write(fd, chunk)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{path}: the daemon does not read requests") from None
                    time.sleep(0.01)
    finally:
        os.close(fd)
    return True


def _chunks(requests: Iterable[str]) -> Iterable[bytes]:
    """Whole lines, at most PIPE_BUF octets a write, so that each write is atomic."""
    chunk = b""
    for request in requests:
        line = request.encode("ascii") + b"\n"
        if chunk and len(chunk) + len(line) > _PIPE_BUF:
            yield chunk
            chunk = b""
        chunk += line
    if chunk:
        yield chunk
