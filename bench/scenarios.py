"""The scenarios: what load each one puts on a server, and what it measures.

Job: declare every scenario (name, description, the figures it reports) and
run one scenario against one server, returning its figures.  Four kinds:

``load``     smtp-source drives the server; accept-only (next hop a tarpit) or
             end-to-end relay (next hop smtp-sink); figures: messages/s
             accepted (and end to end), CPU per message, peak RSS/PSS.
``latency``  the latency probe is the load (M sessions): also p50/p99 from
             the written final dot to its 250.
``idle``     N connections held open, then one real transaction beside them.
``queue``    N deferred messages: ``mailq`` time and memory with the full
             queue, then a restart with ``flush``: time to the first delivery,
             memory while the queue drains.

Inputs: a :class:`Context` (work directory, message count scale, mta source
tree).  Outputs: :data:`SCENARIOS`, :func:`run_scenario` -> ``dict`` of
figure key -> value (None when a figure could not be measured) plus
``"error"``/``"note"`` strings.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench.peers import Sink, Tarpit, smtp_source
from bench.procs import OtherLoad, Sampler, cpu_seconds, free_port, settle, wait_for
from bench.servers import REPO, Mta, Postfix, Server, ServerError, shared_parameters

Better = Literal["higher", "lower", ""]
Value = float | int | str | None


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    better: Better
    digits: int = 1


F = Figure
ACCEPTED = F("accepted_per_s", "accepted messages/s", "higher")
END_TO_END = F("end_to_end_per_s", "end-to-end messages/s (at the sink)", "higher")
CPU = F("cpu_ms_per_msg", "CPU ms per message (all processes)", "lower", 2)
RSS = F("peak_rss_mb", "peak RSS, all processes (MB)", "lower")
PSS = F("peak_pss_mb", "peak PSS, all processes (MB)", "lower")
PROCS = F("peak_processes", "processes (peak)", "", 0)
OTHER = F("other_cpu_pct", "CPU used by other processes meanwhile (% of machine)", "", 0)
P50 = F("p50_ms", "p50 end of DATA -> 250 (ms)", "lower", 2)
P99 = F("p99_ms", "p99 end of DATA -> 250 (ms)", "lower", 2)

KB = 1024
SIZES = {"1k": KB, "10k": 10 * KB, "100k": 100 * KB, "10m": 10_000_000}


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: Literal["load", "latency", "idle", "queue"]
    describe: str
    figures: tuple[Figure, ...]
    default: bool = False
    mode: Literal["accept", "relay"] = "relay"
    size: int = KB
    sessions: int = 20
    messages: int = 1000
    reuse: bool = False

    def count(self, scale: float) -> int:
        """Messages for a load run: ``messages`` scaled, at least one per session."""
        return max(self.sessions, round(self.messages * scale))


#: Messages per load run by body size, for 20 and 200 sessions (one session: fewer).
LOAD_MESSAGES = {"1k": 2000, "10k": 2000, "100k": 1000, "10m": 40}


def _load_messages(size_name: str, sessions: int) -> int:
    """A few seconds of steady load at Postfix's pace, bounded in bytes (10m: 400 MB)."""
    count = LOAD_MESSAGES[size_name]
    return count if sessions > 1 else max(10, count // 4)


def _matrix() -> Iterator[Scenario]:
    defaults = {
        "relay-1k-s20-conn",
        "relay-1k-s20-reuse",
        "relay-1k-s1-conn",
        "relay-1k-s200-conn",
        "relay-10k-s20-conn",
        "relay-100k-s20-conn",
        "relay-10m-s20-conn",
        "accept-1k-s20-conn",
        "accept-1k-s20-reuse",
        "accept-100k-s20-conn",
        "accept-10m-s20-conn",
    }
    for mode in ("relay", "accept"):
        for size_name, size in SIZES.items():
            for sessions in (1, 20, 200):
                if size >= 1_000_000 and sessions > 20:
                    continue  # 2 GB per server and run: not a bounded benchmark
                for reuse in (False, True):
                    conn = "reuse" if reuse else "conn"
                    name = f"{mode}-{size_name}-s{sessions}-{conn}"
                    what = (
                        "end-to-end relay to smtp-sink"
                        if mode == "relay"
                        else ("accept-only (next hop a tarpit: mail stays queued)")
                    )
                    per = "many messages per connection" if reuse else "a connection per message"
                    figs = (ACCEPTED, END_TO_END) if mode == "relay" else (ACCEPTED,)
                    yield Scenario(
                        name=name,
                        kind="load",
                        describe=f"{what}, {size_name.upper()}B body, {sessions} sessions, {per}",
                        figures=(*figs, CPU, RSS, PSS, PROCS, OTHER),
                        default=name in defaults,
                        mode=mode,
                        size=size,
                        sessions=sessions,
                        messages=_load_messages(size_name, sessions),
                        reuse=reuse,
                    )


def _special() -> Iterator[Scenario]:
    for mode in ("relay", "accept"):
        yield Scenario(
            name=f"latency-{mode}-1k-s20",
            kind="latency",
            describe=f"latency probe as the load: 20 sessions, 1KB, a connection per message, "
            f"{'end-to-end relay' if mode == 'relay' else 'accept-only'}",
            figures=(P50, P99, ACCEPTED)
            + ((END_TO_END,) if mode == "relay" else ())
            + (CPU, RSS, PSS, PROCS, OTHER),
            default=True,
            mode=mode,
            messages=2000,
        )
    yield Scenario(
        name="idle-5000",
        kind="idle",
        describe="5000 idle connections (each has its greeting), then one transaction",
        figures=(
            F("held", "connections held", "higher", 0),
            F("open_s", "seconds to open them all", "lower", 2),
            F("transaction_s", "one transaction beside them: connect to QUIT (s)", "lower", 3),
            F("transaction_eod_ms", "its end of DATA -> 250 (ms)", "lower", 2),
            RSS,
            PSS,
            PROCS,
            OTHER,
        ),
        default=True,
        sessions=5000,
    )
    yield Scenario(
        name="queue",
        kind="queue",
        describe="deferred queue (next hop down), mailq, then restart with flush",
        figures=(
            F("deferred", "messages deferred", "", 0),
            F("fill_per_s", "fill: accepted and deferred messages/s", "higher"),
            F("mailq_s", "mailq | tail -1 with the full queue (s)", "lower", 2),
            F("idle_rss_mb", "RSS with the full queue, idle (MB)", "lower"),
            F("idle_pss_mb", "PSS with the full queue, idle (MB)", "lower"),
            F("listen_s", "restart: start -> listening (s)", "lower", 2),
            F("started_s", "restart: start -> 'daemon started' logged (s)", "lower", 2),
            F("first_delivery_s", "restart: start -> first delivery (s)", "lower", 2),
            F("drain_per_s", "drain after the restart, messages/s", "higher"),
            F("drained", "delivered within 30 s of the first delivery", "higher", 0),
            F("restart_rss_mb", "peak RSS, restart and drain (MB)", "lower"),
            F("restart_pss_mb", "peak PSS, restart and drain (MB)", "lower"),
            OTHER,
        ),
        default=True,
        sessions=20,
        messages=10_000,
    )


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (*_matrix(), *_special())}
QUICK = "relay-1k-s20-conn"


@dataclass
class Context:
    workdir: Path
    scale: float = 1.0
    mta_src: Path = REPO
    queue_size: int | None = None
    idle_count: int | None = None
    keep: bool = False
    timeout: float = 600.0
    log: Callable[[str], None] = print
    live: list[Callable[[], None]] = field(default_factory=list)  # clean-ups still due

    def messages(self, sc: Scenario) -> int:
        """Messages (connections, for ``idle``) in this context's runs of ``sc``:
        the idle and queue sizes are their own options, the rest is scaled."""
        if sc.kind == "idle":
            return self.idle_count or sc.sessions
        if sc.kind == "queue":
            return self.queue_size or max(1, round(sc.messages * self.scale))
        return sc.count(self.scale)

    @contextlib.contextmanager
    def cleanup(
        self, action: Callable[[], None], hard: Callable[[], None] | None = None
    ) -> Iterator[None]:
        """Run ``action`` on the way out; if the way out itself is interrupted
        (a second Ctrl-C), :meth:`kill_all` runs ``hard`` (default ``action``)."""
        entry = hard or action
        self.live.append(entry)
        try:
            yield
        finally:
            action()
            with contextlib.suppress(ValueError):
                self.live.remove(entry)

    def kill_all(self) -> None:
        """Kill whatever is still running (newest first)."""
        while self.live:
            action = self.live.pop()
            with contextlib.suppress(Exception):
                action()


def make_server(name: str, ctx: Context, base: Path, params: dict[str, str]) -> Server:
    port = free_port()
    if name == "postfix":
        return Postfix(base, port, params)
    return Mta(base, port, params, src=ctx.mta_src)


@contextlib.contextmanager
def running(ctx: Context, server: Server) -> Iterator[Server]:
    with ctx.cleanup(server.stop, server.kill):
        server.start()
        yield server


@contextlib.contextmanager
def workdir(ctx: Context, sc: Scenario, server: str, run: int) -> Iterator[Path]:
    base = ctx.workdir / f"{sc.name}.{server}.{run}"
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    try:
        yield base
    finally:
        if not ctx.keep:
            shutil.rmtree(base, ignore_errors=True)


def process_limit(sessions: int) -> int:
    """Both servers get room for every session: Postfix would leave the rest
    waiting in the listen queue, mta would answer them 421."""
    return max(100, sessions + 50)


def _mb(n: int) -> float:
    return n / 1e6


def run_scenario(sc: Scenario, server: str, run: int, ctx: Context) -> dict[str, Value]:
    runner = {"load": run_load, "latency": run_load, "idle": run_idle, "queue": run_queue}
    with workdir(ctx, sc, server, run) as base:
        other = OtherLoad()
        try:
            out = runner[sc.kind](sc, server, base, ctx)
        except (ServerError, TimeoutError, OSError, subprocess.SubprocessError) as e:
            out = {"error": f"{type(e).__name__}: {e}"}
        except Exception as e:  # a harness bug: report it, go on with the next run
            where = traceback.extract_tb(e.__traceback__)[-1]
            out = {"error": f"{type(e).__name__}: {e} ({where.filename}:{where.lineno})"}
        out.setdefault("other_cpu_pct", other.share() * 100)
        return out


# -- load and latency ------------------------------------------------------------
def run_load(sc: Scenario, name: str, base: Path, ctx: Context) -> dict[str, Value]:
    n = ctx.messages(sc)
    out: dict[str, Value] = {"messages": n}
    sink = Sink() if sc.mode == "relay" else None
    tarpit = Tarpit() if sc.mode == "accept" else None
    nexthop = sink.port if sink is not None else tarpit.port  # type: ignore[union-attr]
    params = shared_parameters(nexthop, process_limit(sc.sessions))
    server = make_server(name, ctx, base, params)
    with contextlib.ExitStack() as stack:
        if sink is not None:
            stack.enter_context(ctx.cleanup(sink.stop))
            sink.start()
        stack.enter_context(running(ctx, server))
        if tarpit is not None:
            # Closed first on the way out: waiting deliveries fail at once, so
            # the graceful stop has nothing to wait for.
            stack.callback(tarpit.close)
        settle(server.roots, timeout=10)
        cpu0 = cpu_seconds(server.roots())
        other = OtherLoad()  # over the measured part only
        with Sampler(server.roots) as sampler:
            began = time.monotonic()
            if sc.kind == "latency":
                probe = _probe_latency(server.port, sc, n, ctx)
                accepted_s = time.monotonic() - began
                out["p50_ms"] = float(probe["p50"]) * 1000 if probe.get("messages") else None
                out["p99_ms"] = float(probe["p99"]) * 1000 if probe.get("messages") else None
                sent = int(probe.get("messages", 0))
                if probe.get("errors"):
                    out["error"] = f"probe: {probe['errors']} errors, e.g. {probe['first_errors']}"
            else:
                result = smtp_source(
                    server.port,
                    messages=n,
                    sessions=sc.sessions,
                    size=sc.size,
                    reuse=sc.reuse,
                    timeout=ctx.timeout,
                )
                accepted_s = result.seconds
                sent = n if result.returncode == 0 else 0
                if result.returncode != 0:
                    out["error"] = (
                        f"smtp-source exited {result.returncode}: {result.output.strip()[-300:]}"
                    )
            out["accepted_per_s"] = sent / accepted_s if sent else None
            if sink is not None and sent:
                last = sink.wait_count(sent, ctx.timeout)
                if last is None:
                    out["error"] = f"only {sink.count} of {sent} messages reached the sink"
                    out["end_to_end_per_s"] = None
                else:
                    out["end_to_end_per_s"] = sent / (last - began)
            settle(server.roots, timeout=30)
        cpu = cpu_seconds(server.roots()) - cpu0
        out["other_cpu_pct"] = other.share() * 100
        out["cpu_ms_per_msg"] = cpu / sent * 1000 if sent else None
        out["peak_rss_mb"] = _mb(sampler.peak.rss)
        out["peak_pss_mb"] = _mb(sampler.peak.pss)
        out["peak_processes"] = sampler.peak.processes
        if sink is None and sent:
            queued = server.queue_total()
            if queued < sent:
                out["note"] = f"only {queued} of {sent} accepted messages are in the queue"
    return out


def _probe_latency(port: int, sc: Scenario, n: int, ctx: Context) -> dict[str, Any]:
    argv = [
        sys.executable,
        "-m",
        "bench.probe",
        "latency",
        "--port",
        str(port),
        "--connections",
        str(sc.sessions),
        "--messages",
        str(n),
        "--size",
        str(sc.size),
    ]
    if sc.reuse:
        argv.append("--reuse")
    done = subprocess.run(
        argv, capture_output=True, timeout=ctx.timeout, cwd=REPO, start_new_session=True
    )
    lines = done.stdout.decode().strip().splitlines()
    if not lines:
        raise ServerError(f"latency probe failed: {done.stderr.decode()[-500:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# -- idle connections ------------------------------------------------------------
def run_idle(sc: Scenario, name: str, base: Path, ctx: Context) -> dict[str, Value]:
    count = ctx.messages(sc)
    out: dict[str, Value] = {"connections": count}
    sink = Sink()
    params = shared_parameters(sink.port, process_limit(count))
    server = make_server(name, ctx, base, params)
    with ctx.cleanup(sink.stop), running(ctx, server):
        sink.start()
        probe = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.probe",
                "idle",
                "--port",
                str(server.port),
                "--count",
                str(count),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO,
            start_new_session=True,
        )
        with ctx.cleanup(lambda: _end(probe)), Sampler(server.roots, interval=2.0) as sampler:
            assert probe.stdout is not None and probe.stdin is not None
            opened = _read_event(probe, ctx.timeout)
            out["held"] = opened.get("opened")
            out["open_s"] = opened.get("seconds")
            if opened.get("failed"):
                out["note"] = f"{opened['failed']} connections failed: {opened['first_errors']}"
            tx = _read_event(probe, ctx.timeout)
            out["transaction_s"] = tx.get("seconds") if tx.get("ok") else None
            eod = tx.get("end_of_data_seconds")
            out["transaction_eod_ms"] = float(eod) * 1000 if isinstance(eod, float) else None
            if not tx.get("ok"):
                out["error"] = f"transaction failed: {tx.get('error')}"
            if tx.get("still_open") != out["held"]:
                out["note"] = f"{tx.get('still_open')} of {out['held']} still open after it"
            sampler.sample()  # with everything open
            probe.stdin.write(b"go\n")
            probe.stdin.flush()
            probe.wait(60)
        out["peak_rss_mb"] = _mb(sampler.peak.rss)
        out["peak_pss_mb"] = _mb(sampler.peak.pss)
        out["peak_processes"] = sampler.peak.processes
    return out


def _read_event(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Value]:
    assert proc.stdout is not None
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise TimeoutError("the idle probe did not report")
    line = proc.stdout.readline()
    if not line:
        raise ServerError("the idle probe exited early")
    event: dict[str, Value] = json.loads(line)
    return event


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


# -- a deferred queue --------------------------------------------------------------
_REQUESTS_RE = re.compile(r"in (\d+) Requests?")
DRAIN_WINDOW = 30.0  # seconds of draining watched after the first delivery


def run_queue(sc: Scenario, name: str, base: Path, ctx: Context) -> dict[str, Value]:
    n = ctx.messages(sc)
    out: dict[str, Value] = {"messages": n}
    nexthop = free_port()  # nothing listens there yet: every delivery is deferred
    params = shared_parameters(nexthop, process_limit(sc.sessions))
    server = make_server(name, ctx, base, params)
    # Fill: deliveries fail (connection refused), every message ends up deferred.
    # The bound on the fill grows with the queue (--queue-size 100000).
    fill_timeout = ctx.timeout * max(1.0, n / 10_000)
    with running(ctx, server):
        began = time.monotonic()
        result = smtp_source(
            server.port,
            messages=n,
            sessions=sc.sessions,
            size=sc.size,
            reuse=True,
            timeout=fill_timeout,
        )
        if result.returncode != 0:
            return {
                "error": f"fill: smtp-source exited {result.returncode}: {result.output[-300:]}"
            }
        try:
            wait_for(
                lambda: server.queue_count("deferred") >= n,
                fill_timeout,
                f"{n} deferred messages",
                interval=0.5,
            )
        except TimeoutError:
            out["note"] = f"only {server.queue_count('deferred')} of {n} deferred"
        out["fill_per_s"] = n / (time.monotonic() - began)
        settle(server.roots, timeout=30)
        server_deferred = out["deferred"] = server.queue_count("deferred")
        times = []
        for _ in range(3):
            seconds, text, rc = server.run_tool("mailq", timeout=ctx.timeout)
            last = text.strip().splitlines()[-1] if text.strip() else ""
            if rc != 0 or not _REQUESTS_RE.search(last):
                out["error"] = f"mailq exited {rc}, last line {last!r}"
                break
            times.append(seconds)
        out["mailq_s"] = sorted(times)[len(times) // 2] if times else None
        with Sampler(server.roots) as idle:
            time.sleep(1.5)
        out["idle_rss_mb"] = _mb(idle.peak.rss)
        out["idle_pss_mb"] = _mb(idle.peak.pss)
    # Restart with the next hop up, flush, and watch the first deliveries.
    sink = Sink(port=nexthop)
    with ctx.cleanup(sink.stop), ctx.cleanup(server.stop, server.kill):
        sink.start()
        logged = server.log_size()
        began = time.monotonic()
        with Sampler(server.roots) as sampler:
            server.start(timeout=ctx.timeout)
            out["listen_s"] = time.monotonic() - began
            # A flush before the daemon is ready may be lost or, worse, kill it:
            # wait for its "daemon started" log line first.
            server.wait_started(logged, ctx.timeout)
            out["started_s"] = time.monotonic() - began
            flush_deadline = time.monotonic() + 30
            while True:
                _, _, rc = server.run_tool("flush", timeout=60)
                if rc == 0 or time.monotonic() > flush_deadline:
                    break
                time.sleep(0.2)
            first = sink.wait_count(1, ctx.timeout)
            if not server.alive():
                raise ServerError(f"{server.name} exited {server.returncode()} after the flush")
            out["first_delivery_s"] = first - began if first is not None else None
            if first is not None:
                # A bounded look at the drain, not the whole of it.
                sink.wait_count(server_deferred or n, min(DRAIN_WINDOW, ctx.timeout))
                drained = sink.count
                last_at = sink.time_of(drained) or first
                out["drained"] = drained
                out["drain_per_s"] = (drained - 1) / (last_at - first) if last_at > first else None
        out["restart_rss_mb"] = _mb(sampler.peak.rss)
        out["restart_pss_mb"] = _mb(sampler.peak.pss)
    return out
