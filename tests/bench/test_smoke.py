"""CI smoke of the benchmark harness: ``python -m bench --quick`` runs both
servers on one tiny scenario and prints a table of numbers, and leaves nothing
running — also when interrupted.  Never a timing assertion: these are
benchmarks, not tests (docs/performance.md)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the Postfix instance needs root"),
    pytest.mark.skipif(
        not (shutil.which("postfix") or Path("/usr/sbin/postfix").exists())
        or not (shutil.which("smtp-source") or Path("/usr/sbin/smtp-source").exists()),
        reason="Debian's postfix package (postfix, smtp-source, smtp-sink) is not installed",
    ),
]


MARK = "MTA_BENCH_SMOKE"


def leftovers(work: Path) -> list[str]:
    """Live processes that belong to a bench run: they carry its environment
    marker (inherited by everything the harness starts, but Postfix's master
    cleans its daemons' environment) or work in its directory (Postfix's
    daemons chdir to their queue_directory)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        proc = Path("/proc", name)
        try:
            environ = (proc / "environ").read_bytes()
            cwd = os.readlink(proc / "cwd")
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone, or a kernel thread
        if f"{MARK}={work}".encode() in environ or cwd.startswith(str(work)):
            found.append(f"{name} in {cwd}: {cmdline}")
    return found


@pytest.fixture
def work() -> Iterator[Path]:
    """A work directory the postfix user can reach (pytest's own are private)."""
    path = Path(tempfile.mkdtemp(prefix="mta-bench-test-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def bench(work: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench", "--workdir", str(work), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, MARK: str(work)},
    )


@pytest.mark.timeout(120)
def test_quick_run_prints_a_table_of_numbers_for_both_servers(tmp_path: Path, work: Path) -> None:
    """--quick relays through a real Postfix and a real mta into smtp-sink and
    reports, for both, messages/s, CPU per message and memory as numbers with a
    ratio; the JSON record holds the same figures; no process is left over."""
    record = tmp_path / "bench.json"
    proc = bench(work, "--quick", "--json", str(record))
    out, err = proc.communicate(timeout=110)
    assert proc.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"

    assert "== relay-1k-s20-conn:" in out
    rows = {
        label: line
        for line in out.splitlines()
        for label in (
            "accepted messages/s",
            "end-to-end messages/s",
            "CPU ms per message",
            "peak PSS",
        )
        if line.strip().startswith(label)
    }
    assert len(rows) == 4, out
    number = r"[0-9][0-9,]*(?:\.[0-9]+)?"
    for label, line in rows.items():
        # postfix figure, mta figure, ratio
        assert re.search(rf"{number}\s+{number}\s+{number}x\s*$", line), (label, line)

    data = json.loads(record.read_text())
    scenario = data["scenarios"]["relay-1k-s20-conn"]
    for server in ("postfix", "mta"):
        (run,) = scenario["runs"][server]
        assert "error" not in run, run
        assert run["messages"] == scenario["count"] > 0
        for key in ("accepted_per_s", "end_to_end_per_s", "cpu_ms_per_msg", "peak_pss_mb"):
            assert run[key] > 0, (server, key, run)
    # Postfix is many processes, mta at least one: the trees were measured.
    assert scenario["runs"]["postfix"][0]["peak_processes"] > 1
    assert scenario["runs"]["mta"][0]["peak_processes"] >= 1
    assert leftovers(work) == []


@pytest.mark.timeout(90)
def test_interrupted_run_leaves_nothing_running(work: Path) -> None:
    """Ctrl-C while a server is up: the harness stops every server and peer it
    started and exits non-zero."""
    proc = bench(work, "--quick", "--scale", "1")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(work.glob("*/queue/pid/master.pid")):
            time.sleep(0.2)
        time.sleep(1.0)  # the load is running
        assert leftovers(work), "no server ever started"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, (out, err)
    assert "interrupted" in err
    time.sleep(0.5)
    assert leftovers(work) == []
