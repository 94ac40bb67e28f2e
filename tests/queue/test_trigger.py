"""The tools' wake-up FIFO: a tool learns whether a daemon reads it,
requests arrive whole and in order, garbage is ignored."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mta.queue import trigger


class FakeReactor:
    def __init__(self) -> None:
        self.readers: list[object] = []

    def addReader(self, reader: object) -> None:
        self.readers.append(reader)

    def removeReader(self, reader: object) -> None:
        self.readers.remove(reader)


def test_no_reader_means_no_daemon(tmp_path: Path) -> None:
    """Without a FIFO, or with nobody reading it, send() says False."""
    assert trigger.send(tmp_path, ["scan"]) is False
    trigger.ensure_fifo(tmp_path)
    assert trigger.send(tmp_path, ["scan"]) is False


def test_requests_reach_the_reader_in_order(tmp_path: Path) -> None:
    """Lines written by send() come out of doRead() as (word, argument),
    many of them at once, in order."""
    path = trigger.ensure_fifo(tmp_path)
    assert stat.S_ISFIFO(os.lstat(path).st_mode)
    got: list[tuple[str, str]] = []
    reactor = FakeReactor()
    reader = trigger.TriggerReader(reactor, path, lambda w, a: got.append((w, a)))
    reader.start()
    assert reactor.readers == [reader]
    ids = [f"ID{i:05d}" for i in range(300)]  # more than one atomic write
    assert trigger.send(tmp_path, ["scan", *(f"release {q}" for q in ids), "flush"])
    reader.doRead()
    assert got == [("scan", ""), *(("release", q) for q in ids), ("flush", "")]
    reader.stop()
    assert reactor.readers == []
    assert trigger.send(tmp_path, ["scan"]) is False


def test_garbage_is_ignored(tmp_path: Path) -> None:
    """Unknown words, ids that are not queue ids and stray bytes are dropped;
    the good requests around them still arrive."""
    path = trigger.ensure_fifo(tmp_path)
    got: list[tuple[str, str]] = []
    reader = trigger.TriggerReader(FakeReactor(), path, lambda w, a: got.append((w, a)))
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    os.write(fd, b"rm -rf /\nhold ../etc\nscan now\nhold ABC123\n\xff\xfe\ndelete X1")
    reader.doRead()
    assert got == [("hold", "ABC123")]
    os.write(fd, b"\n")  # the rest of a line split across writes
    reader.doRead()
    assert got == [("hold", "ABC123"), ("delete", "X1")]
    os.close(fd)
    reader.stop()


def test_ensure_fifo_replaces_a_regular_file(tmp_path: Path) -> None:
    """A regular file where the FIFO belongs is replaced by a FIFO."""
    path = trigger.fifo_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("not a fifo")
    trigger.ensure_fifo(tmp_path)
    assert stat.S_ISFIFO(os.lstat(path).st_mode)
