"""The fleet benchmark: messages per second through HAProxy with 1, 2, 3 nodes.

``python -m bench.fleet [--messages N] [--sessions S] [--nodes 1,2,3]``
starts Debian's haproxy (TCP mode, ``send-proxy-v2``, ``option smtpchk``)
in front of N mta nodes that relay to one smtp-sink, drives it with
Postfix's smtp-source, and prints one row per node count: the accept rate
(messages / smtp-source's run time), the end-to-end rate (until the sink
has every message), and the CPU seconds the nodes and haproxy used, per
message.  docs/fleet.md records a run.

Input: the command line.  Output: a Markdown table on standard output.
Everything is on 127.0.0.1, temporary, and stopped at the end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.peers import Sink, smtp_source
from bench.procs import cpu_seconds, free_port, machine_busy_seconds
from tests.integration.fleetkit import HAProxy
from tests.integration.harness import Daemon, wait_for


@dataclass(frozen=True)
class Row:
    nodes: int
    messages: int
    accept_rate: float
    end_to_end_rate: float
    node_cpu: float
    haproxy_cpu: float
    machine_cpu: float


def run(nodes: int, messages: int, sessions: int, size: int) -> Row:
    with tempfile.TemporaryDirectory(prefix="mta-fleet-bench-") as tmp:
        work = Path(tmp)
        sink = Sink()
        sink.start()
        daemons: list[Daemon] = []
        haproxy: HAProxy | None = None
        try:
            for i in range(1, nodes + 1):
                port = free_port()
                master = (
                    f"127.0.0.1:{port} inet n - n - - smtpd\n"
                    "  -o smtpd_upstream_proxy_protocol=haproxy\n"
                )
                d = Daemon(
                    work / f"node{i}",
                    port,
                    {
                        "myhostname": f"node{i}.bench.example",
                        "mynetworks": "127.0.0.0/8",
                        "relayhost": f"[127.0.0.1]:{sink.port}",
                        "smtpd_client_connection_count_limit": "0",
                    },
                    master,
                )
                d.start()
                daemons.append(d)
            haproxy = HAProxy(work / "haproxy", [d.port for d in daemons])
            haproxy.start()
            wait_for(lambda: set(haproxy.status().values()) == {"UP"}, 15, "nodes UP")
            pids = [d.proc.pid for d in daemons if d.proc is not None]
            hpid = [haproxy.proc.pid] if haproxy.proc is not None else []
            cpu0, hcpu0, busy0 = cpu_seconds(pids), cpu_seconds(hpid), machine_busy_seconds()
            start = time.monotonic()
            result = smtp_source(
                haproxy.port,
                messages=messages,
                sessions=sessions,
                size=size,
                reuse=False,
                timeout=600,
            )
            if result.returncode != 0:
                raise RuntimeError(f"smtp-source failed: {result.output[-500:]}")
            done = sink.wait_count(messages, 600)
            if done is None:
                raise RuntimeError(f"only {sink.count} of {messages} messages delivered")
            cpu, hcpu = cpu_seconds(pids) - cpu0, cpu_seconds(hpid) - hcpu0
            busy = machine_busy_seconds() - busy0
            return Row(
                nodes,
                messages,
                messages / result.seconds,
                messages / (done - start),
                cpu,
                hcpu,
                busy,
            )
        finally:
            if haproxy is not None:
                haproxy.stop()
            for d in daemons:
                d.stop()
            sink.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--size", type=int, default=2000, help="body octets per message")
    p.add_argument("--nodes", default="1,2,3", help="node counts to run, comma-separated")
    args = p.parse_args(argv)
    print(
        "| nodes | messages | accepted msg/s | end-to-end msg/s |"
        " node CPU s | haproxy CPU s | machine CPU s | node CPU ms/msg |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in (int(x) for x in args.nodes.split(",")):
        r = run(n, args.messages, args.sessions, args.size)
        print(
            f"| {r.nodes} | {r.messages} | {r.accept_rate:.0f} | {r.end_to_end_rate:.0f} |"
            f" {r.node_cpu:.1f} | {r.haproxy_cpu:.2f} | {r.machine_cpu:.1f} |"
            f" {1000 * r.node_cpu / r.messages:.2f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
