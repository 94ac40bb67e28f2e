"""SMTP client probes that smtp-source cannot be: latency timing and idle connections.

Job: (1) the latency probe sends N messages over M concurrent connections and
times each end of DATA — from the moment the final ``.`` has been written to
the moment the complete reply to it has been read — and (2) the idle probe
holds many connections open (each has read its greeting) and then times one
real transaction while they stay open.

Inputs: command-line options (``python -m bench.probe latency|idle --help``).
Outputs: one JSON object per line on stdout.  The idle probe prints
``{"event": "opened", ...}`` once its connections are open, then
``{"event": "transaction", ...}``, then waits for a line (or end of file) on
stdin before it closes everything, so the harness can measure the server
while the connections are held.

Both use asyncio streams with each command written as one pre-built byte
string, so the client costs little next to the server it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import time
from dataclasses import dataclass


class SMTPError(Exception):
    """The server answered something other than what the transaction needs."""


@dataclass(frozen=True)
class Envelope:
    sender: str
    recipient: str
    helo: str


def make_message(size: int, seq: int) -> bytes:
    """A message of about ``size`` bytes of body in 78-octet lines (CRLF), with
    no line that starts with a dot, so it needs no dot-stuffing."""
    header = (
        f"From: <probe@bench.example>\r\nTo: <sink@bench.example>\r\n"
        f"Subject: latency probe {seq}\r\nMessage-ID: <probe-{seq}-{time.time_ns()}@bench>\r\n"
        "\r\n"
    ).encode()
    line = b"x" * 76 + b"\r\n"
    lines, rest = divmod(size, len(line))
    body = line * lines + (b"y" * max(0, rest - 2) + b"\r\n" if rest else b"")
    return header + body


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One complete (possibly multi-line) reply: its code and its last line."""
    while True:
        line = await reader.readline()
        if not line:
            raise SMTPError("connection closed by the server")
        if len(line) < 4 or not line[:3].isdigit():
            raise SMTPError(f"malformed reply: {line!r}")
        if line[3:4] != b"-":
            return int(line[:3]), line.rstrip(b"\r\n")


async def expect(reader: asyncio.StreamReader, wanted: int, what: str) -> bytes:
    code, line = await read_reply(reader)
    if code // 100 != wanted // 100:
        raise SMTPError(f"{what}: {line.decode(errors='replace')}")
    return line


class Session:
    """One SMTP connection, driven one transaction at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int, helo: str) -> Session:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        session = cls(reader, writer)
        await expect(reader, 220, "greeting")
        writer.write(b"EHLO " + helo.encode() + b"\r\n")
        await expect(reader, 250, "EHLO")
        return session

    async def send(self, env: Envelope, message: bytes) -> float:
        """One transaction; returns seconds from the written final dot to its reply."""
        w, r = self.writer, self.reader
        w.write(f"MAIL FROM:<{env.sender}>\r\n".encode())
        await expect(r, 250, "MAIL")
        w.write(f"RCPT TO:<{env.recipient}>\r\n".encode())
        await expect(r, 250, "RCPT")
        w.write(b"DATA\r\n")
        await expect(r, 354, "DATA")
        w.write(message)
        w.write(b".\r\n")
        await w.drain()
        start = time.perf_counter()
        await expect(r, 250, "end of DATA")
        return time.perf_counter() - start

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.write(b"QUIT\r\n")
            await asyncio.wait_for(read_reply(self.reader), 5)
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (not interpolated)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-fraction * len(ordered) // 1))))
    return ordered[rank - 1]


async def run_latency(
    host: str, port: int, connections: int, messages: int, size: int, reuse: bool, env: Envelope
) -> dict[str, object]:
    """Send ``messages`` over ``connections`` workers; a new connection per message
    unless ``reuse``.  Returns the timings and any errors."""
    latencies: list[float] = []
    errors: list[str] = []
    next_seq = iter(range(messages))
    bodies = {seq: make_message(size, seq) for seq in range(min(messages, connections))}

    async def worker(slot: int) -> None:
        session: Session | None = None
        body = bodies.get(slot) or make_message(size, slot)
        try:
            for _seq in next_seq:
                try:
                    if session is None:
                        session = await Session.open(host, port, env.helo)
                    latencies.append(await session.send(env, body))
                except (OSError, SMTPError, asyncio.IncompleteReadError) as e:
                    errors.append(str(e))
                    if session is not None:
                        await session.close()
                    session = None
                    continue
                if not reuse:
                    await session.close()
                    session = None
        finally:
            if session is not None:
                await session.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(connections)))
    elapsed = time.perf_counter() - start
    return {
        "event": "latency",
        "messages": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:5],
        "seconds": elapsed,
        "p50": percentile(latencies, 0.50),
        "p99": percentile(latencies, 0.99),
        "max": max(latencies) if latencies else float("nan"),
    }


async def run_idle(
    host: str, port: int, count: int, parallel: int, size: int, env: Envelope, timeout: float
) -> None:
    """Open ``count`` connections that each read their greeting (``parallel`` at a
    time, so no listen queue overflows), time one transaction beside them, report,
    then hold everything until stdin says go."""
    held: list[Session] = []
    failures: list[str] = []
    gate = asyncio.Semaphore(parallel)

    async def open_one() -> None:
        async with gate:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), timeout
                )
                await asyncio.wait_for(expect(reader, 220, "greeting"), timeout)
                held.append(Session(reader, writer))
            except (TimeoutError, OSError, SMTPError, asyncio.IncompleteReadError) as e:
                failures.append(f"{type(e).__name__}: {e}")

    start = time.perf_counter()
    await asyncio.gather(*(open_one() for _ in range(count)))
    emit(
        {
            "event": "opened",
            "opened": len(held),
            "failed": len(failures),
            "first_errors": failures[:5],
            "seconds": time.perf_counter() - start,
        }
    )
    result: dict[str, object] = {"event": "transaction"}
    start = time.perf_counter()
    try:
        session = await asyncio.wait_for(Session.open(host, port, env.helo), timeout)
        result["connect_seconds"] = time.perf_counter() - start
        result["end_of_data_seconds"] = await asyncio.wait_for(
            session.send(env, make_message(size, 0)), timeout
        )
        await session.close()
        result["seconds"] = time.perf_counter() - start
        result["ok"] = True
    except (TimeoutError, OSError, SMTPError, asyncio.IncompleteReadError) as e:
        result["ok"] = False
        result["error"] = f"{type(e).__name__}: {e}"
        result["seconds"] = time.perf_counter() - start
    # Still open after the transaction: the server did not drop idle sessions.
    result["still_open"] = sum(1 for s in held if not s.reader.at_eof())
    emit(result)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    for s in held:
        s.writer.close()


def emit(obj: dict[str, object]) -> None:
    print(json.dumps(obj), flush=True)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.probe", description=__doc__)
    sub = parser.add_subparsers(dest="kind", required=True)
    for name in ("latency", "idle"):
        p = sub.add_parser(name)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--size", type=int, default=1024, help="body octets per message")
        p.add_argument("--from", dest="sender", default="probe@bench.example")
        p.add_argument("--to", dest="recipient", default="sink@bench.example")
        p.add_argument("--helo", default="probe.bench.example")
    lat = sub.choices["latency"]
    lat.add_argument("--connections", type=int, default=20)
    lat.add_argument("--messages", type=int, default=1000)
    lat.add_argument("--reuse", action="store_true", help="many messages per connection")
    idle = sub.choices["idle"]
    idle.add_argument("--count", type=int, default=5000)
    idle.add_argument("--parallel", type=int, default=100, help="connections opening at once")
    idle.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    raise_fd_limit()
    env = Envelope(args.sender, args.recipient, args.helo)
    if args.kind == "latency":
        result = asyncio.run(
            run_latency(
                args.host, args.port, args.connections, args.messages, args.size, args.reuse, env
            )
        )
        emit(result)
        return 0 if result["messages"] else 1
    asyncio.run(
        run_idle(args.host, args.port, args.count, args.parallel, args.size, env, args.timeout)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
