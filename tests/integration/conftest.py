"""Fixtures that start real peers on loopback and always clean them up."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.harness import CaptureSink, Daemon, SmtpSink, free_port


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SmtpSink]:
    s = SmtpSink(tmp_path / "sink")
    s.start()
    yield s
    s.stop()


@pytest.fixture
def capture() -> Iterator[CaptureSink]:
    c = CaptureSink()
    c.start()
    yield c
    c.stop()


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Build (not start) daemons; every one is stopped at the end."""
    made: list[Daemon] = []

    def make(params: dict[str, str] | None = None, master_cf: str | None = None) -> Daemon:
        d = Daemon(tmp_path / f"mta{len(made)}", free_port(), dict(params or {}), master_cf)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()
