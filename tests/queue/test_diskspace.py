"""Free space of the queue file system: Postfix's queue_minfree rule, the
datasheet's 5%/1% warnings and their log lines, measured with a fake
statvfs on a ``task.Clock`` (no threads)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

from twisted.internet import defer, task

from mta.queue.diskspace import (
    WARN_CRITICAL,
    WARN_LOW,
    DiskSpace,
    measure,
    room_for_mail,
    warnings_for,
)


def fake_statvfs(free_blocks: list[int], total_blocks: int = 1000, block: int = 4096):  # type: ignore[no-untyped-def]
    def statvfs(path: Path) -> SimpleNamespace:
        return SimpleNamespace(
            f_bavail=free_blocks[0], f_blocks=total_blocks, f_frsize=block, f_bsize=block
        )

    return statvfs


def now(f, *args):  # type: ignore[no-untyped-def]
    return defer.maybeDeferred(f, *args)


def test_room_for_mail_follows_smtpd_check_queue() -> None:
    """Refused when free space is at most queue_minfree, or below 1.5 times
    message_size_limit; message_size_limit 0 leaves only queue_minfree."""
    assert room_for_mail(10_000_000, queue_minfree=0, message_size_limit=1_000_000)
    assert not room_for_mail(1_400_000, queue_minfree=0, message_size_limit=1_000_000)
    assert room_for_mail(1_600_000, queue_minfree=0, message_size_limit=1_000_000)
    assert not room_for_mail(5_000_000, queue_minfree=5_000_000, message_size_limit=0)
    assert room_for_mail(5_000_001, queue_minfree=5_000_000, message_size_limit=0)


def test_warnings_for_percentages() -> None:
    """Under 5%: the low warning; under 1%: the critical one alone."""
    assert warnings_for(None) == []
    assert warnings_for(50.0) == []
    assert warnings_for(4.9) == [WARN_LOW]
    assert warnings_for(0.5) == [WARN_CRITICAL]
    assert WARN_LOW == "Data volume has less than 5% of free disk space"
    assert WARN_CRITICAL == "Data volume has less than 1% of free disk space"


def test_measure_reads_the_real_file_system(tmp_path: Path) -> None:
    """measure() reports the free octets for unprivileged users."""
    r = measure(tmp_path)
    st = os.statvfs(tmp_path)
    assert r.total == st.f_blocks * st.f_frsize
    assert 0 < r.free <= r.total
    assert 0 < r.percent_free <= 100


def test_periodic_measurement_warns_on_changes_and_refuses_mail(tmp_path: Path) -> None:
    """Every interval the space is measured; entering the 5% and 1% zones
    and leaving them is logged once each; has_room follows the last reading."""
    clock = task.Clock()
    free = [500]
    lines: list[str] = []
    space = DiskSpace(
        clock,
        tmp_path,
        queue_minfree=0,
        log_line=lines.append,
        interval=10,
        statvfs=fake_statvfs(free),
        run_in_thread=now,
    )
    assert space.has_room(10**12)  # not measured yet: no refusal
    assert space.snapshot() == (None, [])
    space.start()
    assert space.percent_free == 50.0 and space.warnings == []
    assert space.free_bytes == 500 * 4096
    assert space.has_room(1_000_000) and not space.has_room(2_000_000)
    assert "1.5*message size limit" in (space.shortage(2_000_000) or "")
    free[0] = 40
    clock.advance(10)
    assert space.warnings == [WARN_LOW]
    free[0] = 5
    clock.advance(10)
    assert space.snapshot() == (0.5, [WARN_CRITICAL])
    clock.advance(10)  # unchanged: no new line
    free[0] = 900
    clock.advance(10)
    assert lines == [
        f"warning: {WARN_LOW} (4.0% free)",
        f"warning: {WARN_CRITICAL} (0.5% free)",
        "Data volume has 90.0% of free disk space again",
    ]
    space.queue_minfree = 900 * 4096
    assert not space.has_room(0)
    space.stop()


def test_failed_measurement_keeps_the_last_reading(tmp_path: Path) -> None:
    """statvfs failing (the file system went away) keeps the previous
    reading and does not stop the daemon."""
    clock = task.Clock()
    calls = [0]

    def flaky(path: Path) -> SimpleNamespace:
        calls[0] += 1
        if calls[0] > 1:
            raise OSError(5, "Input/output error")
        return SimpleNamespace(f_bavail=10, f_blocks=100, f_frsize=1, f_bsize=1)

    space = DiskSpace(clock, tmp_path, statvfs=flaky, run_in_thread=now, interval=1)
    space.start()
    clock.advance(1)
    clock.advance(1)
    assert space.percent_free == 10.0 and calls[0] == 3
    space.stop()
