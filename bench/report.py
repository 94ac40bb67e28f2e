"""The benchmark's output: one table per scenario, both servers and the ratio.

Job: reduce the runs of a scenario to the median of each figure per server,
and print a table with the Postfix figure, the mta figure and the ratio
mta/Postfix, with which direction is better; also the environment header
and the JSON record of every run.

Inputs: scenarios and their per-server lists of run results.  Outputs:
:func:`medians`, :func:`table` (text), :func:`environment` (dict).
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.scenarios import Scenario, Value

SERVER_ORDER = ("postfix", "mta")
DISTURBED_PCT = 10.0  # other processes' CPU share that makes a run's figures suspect
# Read-only: never refresh the index of the checkout being measured.
_GIT_STATUS = ["git", "--no-optional-locks", "-C"]


def medians(runs: list[dict[str, Value]]) -> dict[str, float | None]:
    """Per figure, the median over the runs that measured it."""
    keys = {k for r in runs for k, v in r.items() if isinstance(v, int | float)}
    out: dict[str, float | None] = {}
    for k in keys:
        values = [float(v) for r in runs if isinstance(v := r.get(k), int | float)]
        out[k] = statistics.median(values) if values else None
    return out


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    if digits == 0:
        return f"{value:.0f}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def ratio(mta: float | None, postfix: float | None) -> str:
    if mta is None or postfix is None or postfix == 0:
        return "-"
    return f"{mta / postfix:.2f}x"


def table(sc: Scenario, results: dict[str, list[dict[str, Value]]], messages: int) -> str:
    """The scenario's table: a figure a line, both servers' medians, the ratio."""
    runs = max((len(v) for v in results.values()), default=0)
    what = "connections" if sc.kind == "idle" else "messages"
    lines = [
        f"== {sc.name}: {sc.describe}; {messages} {what}, median of {runs} run(s)",
        f"  {'figure':<52} {'better':>6} {'postfix':>10} {'mta':>10} {'mta/postfix':>12}",
    ]
    med = {name: medians(results.get(name, [])) for name in SERVER_ORDER}
    for fig in sc.figures:
        p, m = med["postfix"].get(fig.key), med["mta"].get(fig.key)
        lines.append(
            f"  {fig.label:<52} {fig.better or '':>6} {_fmt(p, fig.digits):>10} "
            f"{_fmt(m, fig.digits):>10} {ratio(m, p) if fig.better else '':>12}"
        )
    for name in SERVER_ORDER:
        for i, r in enumerate(results.get(name, []), 1):
            for kind in ("error", "note"):
                if r.get(kind):
                    lines.append(f"  {kind}: {name} run {i}: {r[kind]}")
            other = r.get("other_cpu_pct")
            if isinstance(other, int | float) and other > DISTURBED_PCT:
                lines.append(
                    f"  warning: {name} run {i}: other processes used {other:.0f}% of the "
                    "machine meanwhile: its figures are disturbed"
                )
    return "\n".join(lines)


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()


def filesystem(path: Path) -> str:
    """The type of the file system holding ``path`` (fsync costs depend on it)."""
    best, kind = "", "?"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    real = str(path.resolve())
    for line in mounts:
        parts = line.split()
        inside = len(parts) >= 3 and (
            real == parts[1] or real.startswith(parts[1].rstrip("/") + "/")
        )
        if inside and len(parts[1]) >= len(best):
            best, kind = parts[1], f"{parts[2]} ({parts[0]} on {parts[1]})"
    return kind


def environment(workdir: Path, mta_src: Path) -> dict[str, str]:
    commit = _run(["git", "-C", str(mta_src), "rev-parse", "--short", "HEAD"])
    if commit and _run([*_GIT_STATUS, str(mta_src), "status", "--porcelain", "--", "mta"]):
        commit += " + uncommitted changes in mta/"
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load average": f"{load} (at the start)",
        "host": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Linux {platform.release()}",
        "postfix": _run(["postconf", "-d", "-h", "mail_version"]) or "?",
        "python": sys.version.split()[0],
        "mta": f"{mta_src} ({commit or 'not a git checkout'})",
        "workdir": f"{workdir}: {filesystem(workdir)}",
    }
