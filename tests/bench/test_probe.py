"""The latency probe (bench/probe.py): its arithmetic and a run against smtp-sink."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.probe import Envelope, make_message, percentile, run_latency
from bench.procs import free_port, port_open, wait_for

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


def test_percentile_is_nearest_rank() -> None:
    """p50 of 1..100 is 50, p99 is 99, p100 the maximum; one value is every percentile."""
    values = [float(v) for v in range(100, 0, -1)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0


def test_message_has_the_body_size_and_needs_no_dot_stuffing() -> None:
    """The body after the blank line is the requested size, in CRLF lines none of
    which starts with a dot."""
    for size in (1, 100, 1024, 10_000):
        msg = make_message(size, 3)
        body = msg.split(b"\r\n\r\n", 1)[1]
        assert abs(len(body) - size) <= 2, size
        assert body.endswith(b"\r\n")
        assert not any(line.startswith(b".") for line in msg.split(b"\r\n"))


@pytest.mark.skipif(not Path(SMTP_SINK).exists(), reason="smtp-sink is not installed")
@pytest.mark.timeout(30)
def test_latency_run_against_smtp_sink_times_every_message() -> None:
    """N messages over M connections all get their 250 and a latency each."""
    port = free_port()
    user = "nobody" if os.geteuid() == 0 else os.environ.get("USER", "nobody")
    sink = subprocess.Popen([SMTP_SINK, "-u", user, f"127.0.0.1:{port}", "64"])
    try:
        wait_for(lambda: port_open(port), 10, "smtp-sink")
        env = Envelope("a@bench.example", "b@bench.example", "probe.bench.example")
        result = asyncio.run(run_latency("127.0.0.1", port, 4, 40, 1024, False, env))
        assert result["messages"] == 40 and result["errors"] == 0
        assert 0 < result["p50"] <= result["p99"] <= result["max"]  # type: ignore[operator]
        result = asyncio.run(run_latency("127.0.0.1", port, 4, 40, 1024, True, env))
        assert result["messages"] == 40 and result["errors"] == 0
    finally:
        sink.kill()
        sink.wait()
