"""Profiling mta under load with py-spy, and the hot spots it finds.

Job: run one load scenario against mta only, with ``py-spy record`` attached
to the daemon (and its subprocesses) for the length of the load, keep the
collapsed stacks (``--format raw``: one ``frame;frame;... count`` line per
stack, readable by speedscope, inferno or flamegraph.pl) and reduce them to a
hot-spot table: per thread the share of samples, and per function the share
of samples in which it is running (self) and on the stack (total).

Inputs: a scenario, a Context, an output directory.  Outputs: the files
``mta.collapsed``, ``hotspots.txt`` in that directory, and the hot-spot text.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

from bench.peers import Sink, Tarpit, smtp_source
from bench.scenarios import Context, Scenario, make_server, process_limit, running
from bench.servers import shared_parameters

PY_SPY = shutil.which("py-spy") or "py-spy"
_LINE_RE = re.compile(r"^(.*) (\d+)$")
_THREAD_RE = re.compile(r"^thread \((\d+|0x[0-9A-Fa-f]+)\): ?(.*)$")
_SKIP_TOTAL = 0.9  # frames on (nearly) every stack of a thread say nothing
_OWN_CODE = "(mta/"  # frames of the project itself, as py-spy names them


def _short(frame: str) -> str:
    return frame.split(" (", 1)[0]


def _thread_group(frame: str) -> str:
    """``thread (TID): PoolThread-mta-fsync-3`` -> ``PoolThread-mta-fsync-*``."""
    m = _THREAD_RE.match(frame)
    name = (m.group(2) if m else frame) or "thread"
    return re.sub(r"-\d+$", "-*", name)


def parse_collapsed(collapsed: str) -> list[tuple[str, list[str], int]]:
    """(thread group, frames outermost first, samples) per line of py-spy's raw
    output recorded with ``--threads``.  The leading ``process PID:"cmdline"``
    frame (``--subprocesses``) may itself hold semicolons: the thread frame is
    the first ``;thread (`` after it."""
    stacks = []
    for line in collapsed.splitlines():
        m = _LINE_RE.match(line.strip())
        if not m:
            continue
        text, count = m.group(1), int(m.group(2))
        if text.startswith("process "):
            cut = text.find(";thread (")
            text = text[cut + 1 :] if cut >= 0 else text
        frames = text.split(";")
        group = "?"
        if frames and frames[0].startswith("thread ("):
            group = _thread_group(frames.pop(0))
        if frames:
            stacks.append((group, frames, count))
    return stacks


def hotspots(collapsed: str, seconds: float, rate: int, top: int = 20) -> str:
    """The hot-spot text of collapsed stacks: per thread group its busy share of
    the wall-clock time (py-spy leaves out idle samples), then per group the
    functions by self samples (with their most frequent callers) and by total
    samples (on the stack)."""
    stacks = parse_collapsed(collapsed)
    if not stacks:
        return "no samples (was the daemon busy?)\n"
    wall = max(1.0, seconds * rate)
    groups: Counter[str] = Counter()
    for group, _, count in stacks:
        groups[group] += count
    out = [
        f"{sum(groups.values())} samples at {rate}/s over {seconds:.1f}s; "
        "busy = share of the wall-clock time a thread group was running (not idle):"
    ]
    out += [f"  {n / wall:6.1%} busy  {g}" for g, n in groups.most_common()]
    for group, busy in groups.most_common():
        if busy < 0.02 * wall:
            continue
        self_: Counter[str] = Counter()
        callers: dict[str, Counter[str]] = {}
        inclusive: Counter[str] = Counter()
        for g, frames, count in stacks:
            if g != group:
                continue
            leaf = frames[-1]
            self_[leaf] += count
            path = " < ".join(_short(f) for f in reversed(frames[-4:-1]))
            callers.setdefault(leaf, Counter())[path] += count
            for frame in set(frames):
                inclusive[frame] += count
        out += ["", f"{group}: top {top} by self time (share of wall-clock; usual callers)"]
        for frame, n in self_.most_common(top):
            path = callers[frame].most_common(1)[0][0]
            out.append(f"  {n / wall:6.1%}  {frame}  < {path}")
        out += ["", f"{group}: top {top} by total time (on the stack)"]
        shown = [(f, n) for f, n in inclusive.most_common() if n < _SKIP_TOTAL * busy]
        out += [f"  {n / wall:6.1%}  {f}" for f, n in shown[:top]]
        own = [(f, n) for f, n in shown if _OWN_CODE in f]
        if own:
            out += ["", f"{group}: top {top} mta functions by total time (on the stack)"]
            out += [f"  {n / wall:6.1%}  {f}" for f, n in own[:top]]
    return "\n".join(out) + "\n"


def profile_mta(sc: Scenario, ctx: Context, outdir: Path, rate: int = 200) -> str:
    """Run ``sc`` (a load scenario) against mta under py-spy; returns the hot
    spots, also written to ``outdir/SCENARIO.hotspots.txt`` beside the stacks
    ``outdir/SCENARIO.collapsed``."""
    outdir.mkdir(parents=True, exist_ok=True)
    collapsed = outdir / f"{sc.name}.collapsed"
    n = ctx.messages(sc)
    sink = Sink() if sc.mode == "relay" else None
    tarpit = Tarpit() if sc.mode == "accept" else None
    nexthop = sink.port if sink is not None else tarpit.port  # type: ignore[union-attr]
    base = ctx.workdir / f"profile.{sc.name}"
    shutil.rmtree(base, ignore_errors=True)
    params = shared_parameters(nexthop, process_limit(sc.sessions))
    server = make_server("mta", ctx, base, params)
    with contextlib.ExitStack() as stack:
        if sink is not None:
            stack.enter_context(ctx.cleanup(sink.stop))
            sink.start()
        stack.enter_context(running(ctx, server))
        if tarpit is not None:
            stack.callback(tarpit.close)
        argv = [
            PY_SPY, "record", "--pid", str(server.roots()[0]), "--subprocesses", "--threads",
            "--function", "--nonblocking", "--rate", str(rate), "--format", "raw",
            "--output", str(collapsed),
        ]  # fmt: skip
        spy = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        stack.enter_context(ctx.cleanup(lambda: _stop_spy(spy)))
        time.sleep(1.0)  # py-spy attaches; the idle daemon gives no samples meanwhile
        began = time.monotonic()
        result = smtp_source(
            server.port, messages=n, sessions=sc.sessions, size=sc.size, reuse=sc.reuse,
            timeout=ctx.timeout,
        )  # fmt: skip
        if sink is not None:
            sink.wait_count(n, ctx.timeout)
        seconds = time.monotonic() - began
    if not ctx.keep:
        shutil.rmtree(base, ignore_errors=True)
    text = collapsed.read_text() if collapsed.exists() else ""
    moved = f"{sink.count} at the sink" if sink is not None else f"{n} accepted"
    head = (
        f"py-spy {' '.join(argv[1:])}\n"
        f"load: {sc.name} ({sc.describe}), {n} messages, smtp-source exit {result.returncode}, "
        f"{moved} in {seconds:.1f}s under the profiler\n"
    )
    if not text and spy.stderr is not None:
        head += f"py-spy: {spy.stderr.read().decode(errors='replace')[-500:]}\n"
    report = head + hotspots(text, seconds, rate)
    (outdir / f"{sc.name}.hotspots.txt").write_text(report)
    return report


def _stop_spy(spy: subprocess.Popen[bytes]) -> None:
    """py-spy writes its output when interrupted."""
    if spy.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(spy.pid, signal.SIGINT)
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(spy.pid, signal.SIGKILL)
            spy.wait(5)
