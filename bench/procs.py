"""Process plumbing for the benchmark: /proc accounting, sampling, clean-up.

Job: measure a server as the whole tree of processes under one root — CPU
seconds (``utime + stime`` of the live processes plus ``cutime + cstime``, the
CPU of children they already reaped), resident memory (RSS) and proportional
memory (PSS, from ``/proc/PID/smaps_rollup``) — sample the memory in a thread
while a scenario runs to keep the peak, and kill whole process trees and
sessions so nothing outlives the run.  Also the small waiting and port helpers.

Inputs: process ids.  Outputs: :class:`ProcStat`, :func:`tree`,
:func:`cpu_seconds`, :func:`memory`, :class:`Sampler`, :class:`OtherLoad`, :func:`kill_tree`,
:func:`free_port`, :func:`port_open`, :func:`wait_for`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/PID/stat`` the benchmark needs (times in ticks)."""

    pid: int
    ppid: int
    session: int
    ticks: int  # utime + stime + cutime + cstime


def read_stat(pid: int) -> ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after it.
    fields = raw[raw.rindex(b")") + 2 :].split()
    # fields[0] is field 3 (state); utime..cstime are fields 14..17.
    ticks = sum(int(x) for x in fields[11:15])
    return ProcStat(pid, int(fields[1]), int(fields[3]), ticks)


def process_table() -> dict[int, ProcStat]:
    table: dict[int, ProcStat] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = read_stat(int(name))
            if st is not None:
                table[st.pid] = st
    return table


def tree(roots: Iterable[int], table: dict[int, ProcStat] | None = None) -> list[ProcStat]:
    """The processes under ``roots`` (included), by parent links."""
    table = process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for st in table.values():
        children.setdefault(st.ppid, []).append(st.pid)
    found: list[ProcStat] = []
    todo = [pid for pid in roots if pid in table]
    seen: set[int] = set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        found.append(table[pid])
        todo.extend(children.get(pid, ()))
    return found


def cpu_seconds(roots: Iterable[int]) -> float:
    """CPU seconds the tree has used so far, including reaped children.  A child
    that exits between two readings moves from its own ``utime`` to its parent's
    ``cutime``, so the difference of two readings is the CPU used in between."""
    return sum(st.ticks for st in tree(roots)) / CLOCK_TICKS


def machine_busy_seconds(interrupts: bool = True) -> float:
    """CPU seconds the whole machine has been busy (all CPUs, from /proc/stat):
    user, nice, system and steal time, plus irq and softirq time unless
    ``interrupts`` is false (that time is mostly the network and disk work of
    whatever runs, charged to no process)."""
    with open("/proc/stat", "rb") as f:
        fields = f.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    busy = user + nice + system + steal + (irq + softirq if interrupts else 0)
    return busy / CLOCK_TICKS


KERNEL_THREADS = 2  # kthreadd: the parent of every kernel thread


class OtherLoad:
    """How much CPU other processes used while the benchmark measured: the
    machine's busy time minus the CPU of the benchmark's own process tree
    (the servers, the load generator, the sink) and of the kernel's threads
    (writeback and the like, which work for whoever does I/O), as a share of
    all CPUs.  A high share means the figures were disturbed."""

    def __init__(self) -> None:
        self.began = time.monotonic()
        self.busy = machine_busy_seconds(interrupts=False)
        self.ours = self._ours()

    @staticmethod
    def _ours() -> float:
        return cpu_seconds([os.getpid(), KERNEL_THREADS])

    def share(self) -> float:
        wall = (time.monotonic() - self.began) * (os.cpu_count() or 1)
        other = machine_busy_seconds(interrupts=False) - self.busy - (self._ours() - self.ours)
        return max(0.0, other / wall) if wall > 0 else 0.0


def memory(pids: Iterable[int]) -> tuple[int, int]:
    """(RSS, PSS) in bytes summed over ``pids``; processes that are gone count 0."""
    rss = pss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
                text = f.read()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(b"Rss:"):
                rss += int(line.split()[1]) * 1024
            elif line.startswith(b"Pss:"):
                pss += int(line.split()[1]) * 1024
    return rss, pss


@dataclass
class MemoryPeak:
    rss: int = 0
    pss: int = 0
    processes: int = 0
    samples: int = 0


class Sampler:
    """Samples the memory of the trees under ``roots()`` every ``interval``
    seconds in a thread and keeps the peaks; use as a context manager."""

    def __init__(self, roots: Callable[[], list[int]], interval: float = 0.5) -> None:
        self.roots = roots
        self.interval = interval
        self.peak = MemoryPeak()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def sample(self) -> None:
        procs = tree(self.roots())
        rss, pss = memory(st.pid for st in procs)
        p = self.peak
        p.rss, p.pss = max(p.rss, rss), max(p.pss, pss)
        p.processes = max(p.processes, len(procs))
        p.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a vanished root is not an error
                self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        with contextlib.suppress(Exception):
            self.sample()


def kill_tree(roots: Iterable[int], sig: int = signal.SIGKILL) -> int:
    """Signal every process under ``roots`` and every process in a session led by
    one of them (daemons that call setsid() leave the tree but keep the session);
    returns how many were signalled."""
    roots = list(roots)
    table = process_table()
    targets = {st.pid for st in tree(roots, table)}
    targets |= {st.pid for st in table.values() if st.session in roots}
    targets.discard(os.getpid())
    for pid in targets:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)
    return len(targets)


def settle(
    roots: Callable[[], list[int]], idle: float = 0.02, window: float = 0.5, timeout: float = 15.0
) -> float:
    """Wait until the tree uses less than ``idle`` of a CPU over ``window`` seconds
    (its work after the load, such as moving queue files, is done); returns the
    seconds waited."""
    start = time.monotonic()
    last = cpu_seconds(roots())
    while time.monotonic() - start < timeout:
        time.sleep(window)
        now = cpu_seconds(roots())
        if now - last < idle * window:
            break
        last = now
    return time.monotonic() - start


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> float:
    """Poll ``predicate`` until true; returns the seconds waited, raises
    TimeoutError naming ``what`` after ``timeout`` seconds."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
