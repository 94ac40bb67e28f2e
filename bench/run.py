"""The benchmark command: ``python -m bench`` (see docs/performance.md).

Job: pick the scenarios, run each against Postfix and mta in the same run
(alternating which goes first), print a table per scenario with both
figures and the ratio, optionally profile mta with py-spy, and leave
nothing running: every server, sink and probe is stopped on the way out,
also on Ctrl-C or SIGTERM.

Inputs: the command line.  Outputs: the tables on stdout, progress on
stderr, optionally a JSON record (``--json``) and a profile (``--profile``).
Exit status 0 when every run completed without an error, 1 otherwise, 2 for
a usage problem (not root, tools missing, no scenario matched).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from bench.report import SERVER_ORDER, environment, medians, table
from bench.scenarios import QUICK, SCENARIOS, Context, Scenario, Value, run_scenario
from bench.servers import REPO

QUICK_SCALE = 0.05  # relay-1k-s20-conn: 100 messages
NOTES = """\
Both servers: the same main.cf parameters by their Postfix names (mydestination empty,
mynetworks 127.0.0.0/8, relayhost [127.0.0.1]:NEXTHOP, default_process_limit covering every
session), every message synced to disk before its 250, a maillog_file each. Load:
Postfix's smtp-source; next hop: smtp-sink (relay) or a tarpit that never answers (accept-
only: mail stays queued, no retry during the run). Ratios are mta/postfix."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark mta against a throwaway Postfix in the same run.",
    )
    p.add_argument(
        "-s",
        "--scenario",
        action="append",
        default=[],
        metavar="PATTERN",
        help="run the scenarios matching this glob (repeatable; see --list)",
    )
    p.add_argument("--all", action="store_true", help="every scenario, not just the defaults")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"CI smoke: {QUICK} with {QUICK_SCALE:g} of its messages",
    )
    p.add_argument("--runs", type=int, default=1, help="runs per scenario and server (median)")
    p.add_argument(
        "--scale",
        type=float,
        default=None,
        help="multiply every scenario's message count (default 1)",
    )
    p.add_argument(
        "--queue-size",
        type=int,
        default=None,
        help="deferred messages in the queue scenario (default 10000)",
    )
    p.add_argument(
        "--idle-count",
        type=int,
        default=None,
        help="connections in the idle scenario (default 5000)",
    )
    p.add_argument(
        "--servers",
        default="postfix,mta",
        help="which servers to run (comma-separated; default both)",
    )
    p.add_argument(
        "--mta-src",
        type=Path,
        default=REPO,
        help="the mta source tree to run (default: this checkout)",
    )
    p.add_argument(
        "--mta-label",
        default=None,
        help="how to name the mta tree in the report (e.g. the commit of an export)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the servers' queues go (default: a new directory in /var/tmp)",
    )
    p.add_argument("--keep", action="store_true", help="keep the work directories")
    p.add_argument(
        "--timeout", type=float, default=600.0, help="bound on each wait of a run, in seconds"
    )
    p.add_argument("--json", type=Path, default=None, help="write every run's figures here")
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"also profile mta with py-spy under {QUICK} into DIR",
    )
    p.add_argument(
        "--profile-scenario",
        default=QUICK,
        metavar="NAME",
        help=f"the load scenario to profile under (default {QUICK})",
    )
    return p.parse_args(argv)


def select(args: argparse.Namespace) -> list[Scenario]:
    if args.scenario:
        chosen = [
            sc
            for sc in SCENARIOS.values()
            if any(fnmatch.fnmatchcase(sc.name, pat) for pat in args.scenario)
        ]
    elif args.quick:
        chosen = [SCENARIOS[QUICK]]
    elif args.all:
        chosen = list(SCENARIOS.values())
    elif args.profile is not None:
        chosen = []  # --profile alone: just the profile
    else:
        chosen = [sc for sc in SCENARIOS.values() if sc.default]
    return chosen


def preflight(servers: list[str]) -> str | None:
    """Why the benchmark cannot run here, or None."""
    for tool in ("smtp-source", "smtp-sink"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} not found: install Debian's postfix package"
    if "postfix" in servers:
        if os.geteuid() != 0:
            return "the Postfix instance needs root (its master runs as root, daemons as postfix)"
        if not (shutil.which("postfix") or Path("/usr/sbin/postfix").exists()):
            return "postfix not found: install Debian's postfix package"
        try:
            import pwd

            pwd.getpwnam("postfix")
        except KeyError:
            return "no postfix user: install Debian's postfix package"
    return None


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for sc in SCENARIOS.values():
            print(f"{'*' if sc.default else ' '} {sc.name:<24} {sc.describe}")
        print("(* = run by default)")
        return 0
    scenarios = select(args)
    servers = [s for s in SERVER_ORDER if s in args.servers.split(",")]
    if not (scenarios or args.profile) or not servers:
        print("bench: no scenario or no server selected (see --list)", file=sys.stderr)
        return 2
    profiled = SCENARIOS.get(args.profile_scenario)
    if args.profile is not None and (profiled is None or profiled.kind != "load"):
        print(
            f"bench: {args.profile_scenario} is not a load scenario (see --list)", file=sys.stderr
        )
        return 2
    problem = preflight(servers)
    if problem:
        print(f"bench: {problem}", file=sys.stderr)
        return 2
    # The servers inherit the limit: 5,000 sessions need more than the usual 1,024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    idle = args.idle_count or SCENARIOS["idle-5000"].sessions
    if any(sc.kind == "idle" for sc in scenarios) and hard < idle + 1000:
        print(
            f"bench: warning: open files limit {hard} is too low for {idle} connections "
            "(ulimit -Hn)",
            file=sys.stderr,
        )
    scale = args.scale if args.scale is not None else (QUICK_SCALE if args.quick else 1.0)
    made_workdir = args.workdir is None
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mta-bench-", dir="/var/tmp"))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # Postfix's daemons (user postfix) reach their directories through it
    ctx = Context(
        workdir=workdir,
        scale=scale,
        mta_src=args.mta_src.resolve(),
        queue_size=args.queue_size,
        idle_count=args.idle_count,
        keep=args.keep,
        timeout=args.timeout,
        log=lambda s: print(s, file=sys.stderr, flush=True),
    )
    signal.signal(signal.SIGTERM, _interrupt)
    env = environment(workdir, ctx.mta_src)
    if args.mta_label:
        env["mta"] = f"{ctx.mta_src} ({args.mta_label})"
    print("\n".join(f"{k}: {v}" for k, v in env.items()))
    print(NOTES + "\n", flush=True)
    failed = False
    scenarios_record: dict[str, object] = {}
    record: dict[str, object] = {"environment": env, "scenarios": scenarios_record}
    current: tuple[Scenario, dict[str, list[dict[str, Value]]]] | None = None

    def report(sc: Scenario, results: dict[str, list[dict[str, Value]]], note: str = "") -> None:
        print(table(sc, results, ctx.messages(sc)) + note + "\n", flush=True)
        scenarios_record[sc.name] = {
            "describe": sc.describe,
            "count": ctx.messages(sc),
            "runs": results,
            "medians": {s: medians(r) for s, r in results.items()},
        }

    try:
        for sc in scenarios:
            results: dict[str, list[dict[str, Value]]] = {s: [] for s in servers}
            current = (sc, results)
            for run in range(args.runs):
                order = servers if run % 2 == 0 else servers[::-1]
                for name in order:
                    ctx.log(f"bench: {sc.name} run {run + 1}/{args.runs}: {name} ...")
                    began = time.monotonic()
                    result = run_scenario(sc, name, run, ctx)
                    result["wall_s"] = time.monotonic() - began
                    results[name].append(result)
                    failed |= bool(result.get("error"))
                    if result.get("error"):
                        ctx.log(f"bench: {sc.name} {name}: {result['error']}")
            current = None
            report(sc, results)
        if args.profile is not None and profiled is not None:
            from bench.profile import profile_mta

            ctx.log(f"bench: profiling mta under {args.profile_scenario} ...")
            ctx.scale = args.scale or 1.0  # a full-length load, even with --quick
            print(profile_mta(profiled, ctx, args.profile), flush=True)
    except KeyboardInterrupt:
        print("bench: interrupted; stopping everything", file=sys.stderr)
        failed = True
        if current is not None and any(current[1].values()):
            report(*current, note="\n  (interrupted: the runs finished so far)")
    finally:
        ctx.kill_all()
        if args.json is not None:
            args.json.write_text(json.dumps(record, indent=2, default=str))
        if made_workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0
