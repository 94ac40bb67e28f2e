"""Free space of the queue file system: the one measurement everyone reads.

Job: ``statvfs`` the queue directory every ``interval`` seconds in a thread
(never on the reactor, never per SMTP command), and answer from the last
reading:

* ``has_room(message_size_limit)`` — Postfix's ``smtpd_check_queue``: mail
  is refused (452 4.3.1 Insufficient system storage) when the free space
  is at most ``queue_minfree``, or less than 1.5 times
  ``message_size_limit``.  Before the first reading, and when the
  measurement fails, the answer is yes: a commit that really finds the
  disk full still answers 451 and loses nothing.
* ``percent_free`` and ``warnings`` — the appliance datasheet's dashboard
  messages, "Data volume has less than 5% of free disk space" and "... less
  than 1% ..." (the more severe one only), for the statistics service; a
  change of warning is written to the mail log.

Inputs: the reactor, the queue directory, ``queue_minfree``, a log function
and (for tests) a ``statvfs`` and a way to run it.  Outputs: ``DiskSpace``;
``room_for_mail`` (the pure rule, also used by ``mta sendmail``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer, task, threads

log = logging.getLogger(__name__)

WARN_LOW = "Data volume has less than 5% of free disk space"
WARN_CRITICAL = "Data volume has less than 1% of free disk space"
INTERVAL = 10.0
SPACE_FACTOR = 1.5  # Postfix smtpd_space_multf


@dataclass(frozen=True)
class Reading:
    """One ``statvfs``: octets free for unprivileged users, and the size."""

    free: int
    total: int

    @property
    def percent_free(self) -> float:
        return 100.0 * self.free / self.total if self.total else 100.0


def measure(path: Path, statvfs: Callable[[Path], Any] = os.statvfs) -> Reading:
    """Blocking: one ``statvfs`` of ``path``."""
    st = statvfs(path)
    return Reading(free=st.f_bavail * st.f_frsize, total=st.f_blocks * st.f_frsize)


def room_for_mail(free: int, *, queue_minfree: int, message_size_limit: int) -> bool:
    """Postfix ``smtpd_check_queue``: is there room to accept mail?"""
    if queue_minfree >= free:
        return False
    return message_size_limit < free / SPACE_FACTOR


def warnings_for(percent: float | None) -> list[str]:
    """The datasheet's warning for this much free space (at most one)."""
    if percent is None:
        return []
    if percent < 1.0:
        return [WARN_CRITICAL]
    if percent < 5.0:
        return [WARN_LOW]
    return []


def _in_thread(reactor: Any) -> Callable[..., Awaitable[Reading]]:
    def run(f: Callable[..., Reading], *args: Any) -> Awaitable[Reading]:
        d: defer.Deferred[Reading] = threads.deferToThreadPool(
            reactor, reactor.getThreadPool(), f, *args
        )
        return d

    return run


class DiskSpace:
    def __init__(
        self,
        reactor: Any,
        path: Path,
        *,
        queue_minfree: int = 0,
        log_line: Callable[[str], None] | None = None,
        interval: float = INTERVAL,
        statvfs: Callable[[Path], Any] = os.statvfs,
        run_in_thread: Callable[..., Awaitable[Reading]] | None = None,
    ) -> None:
        self.reactor = reactor
        self.path = Path(path)
        self.queue_minfree = queue_minfree
        self.log_line = log_line or (lambda text: log.warning("%s", text))
        self.interval = interval
        self._statvfs = statvfs
        self._run = run_in_thread or _in_thread(reactor)
        self.reading: Reading | None = None
        self._warned: list[str] = []
        self._loop: task.LoopingCall | None = None

    # -- what others read ----------------------------------------------------------
    @property
    def percent_free(self) -> float | None:
        return None if self.reading is None else self.reading.percent_free

    @property
    def free_bytes(self) -> int | None:
        return None if self.reading is None else self.reading.free

    @property
    def warnings(self) -> list[str]:
        return warnings_for(self.percent_free)

    def snapshot(self) -> tuple[float | None, list[str]]:
        """(percent free, warnings): the statistics service's ``DiskReading``."""
        return self.percent_free, self.warnings

    def has_room(self, message_size_limit: int) -> bool:
        if self.reading is None:
            return True
        return room_for_mail(
            self.reading.free,
            queue_minfree=self.queue_minfree,
            message_size_limit=message_size_limit,
        )

    def shortage(self, message_size_limit: int) -> str | None:
        """None when there is room; else Postfix's warning for the log."""
        if self.has_room(message_size_limit):
            return None
        return (
            f"not enough free space in mail queue: {self.free_bytes} bytes < "
            f"{SPACE_FACTOR:g}*message size limit"
        )

    # -- life cycle ---------------------------------------------------------------
    def start(self) -> None:
        if self._loop is not None:
            return
        self._loop = task.LoopingCall(lambda: defer.Deferred.fromCoroutine(self.refresh()))
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=True).addErrback(
            lambda f: log.error("disk space monitor stopped: %s", f.getErrorMessage())
        )

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    async def refresh(self) -> None:
        """Measure once, off the reactor thread; log a change of warning."""
        try:
            reading = await self._run(measure, self.path, self._statvfs)
        except OSError as e:
            log.warning("cannot measure free space of %s: %s", self.path, e)
            return
        self.reading = reading
        current = warnings_for(reading.percent_free)
        if current != self._warned:
            for text in current:
                self.log_line(f"warning: {text} ({reading.percent_free:.1f}% free)")
            if not current:
                self.log_line(
                    f"Data volume has {reading.percent_free:.1f}% of free disk space again"
                )
            self._warned = current
