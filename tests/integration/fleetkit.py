"""Fleet peers for the tests: a throw-away redis-server and haproxy on loopback.

Each is started from a temporary configuration on a free port, waited for,
and stopped (SIGTERM, then SIGKILL) by its ``stop``.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.harness import free_port, port_open, wait_for

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


@dataclass
class RedisServer:
    """redis-server on 127.0.0.1, no persistence."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "redis.conf"
        conf.write_text(
            f'bind 127.0.0.1\nport {self.port}\nsave ""\nappendonly no\n'
            f"dir {self.workdir}\nlogfile {self.workdir / 'redis.log'}\n"
        )
        self.proc = subprocess.Popen([REDIS_SERVER, str(conf)], stdin=subprocess.DEVNULL)
        wait_for(lambda: port_open(self.port), 10.0, "redis-server listening")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def pause(self) -> None:
        """SIGSTOP: connections open but nothing answers (a hung server)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def get(self, key: str) -> str | None:
        """GET over a plain socket (the test's own view of the shared state)."""
        import socket

        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            data = key.encode()
            s.sendall(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(data), data))
            reply = b""
            while not reply.endswith(b"\r\n") or (
                reply.startswith(b"$") and reply.count(b"\r\n") < 2 and reply != b"$-1\r\n"
            ):
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
        if reply.startswith(b"$-1"):
            return None
        return reply.split(b"\r\n")[1].decode()

    def cf(self, path: Path, **extra: str) -> Path:
        """A redis.cf table file for mta naming this server."""
        lines = [f"hosts = 127.0.0.1:{self.port}", "key_prefix = test:"]
        lines += [f"{k} = {v}" for k, v in extra.items()]
        path.write_text("\n".join(lines) + "\n")
        return path


@dataclass
class HAProxy:
    """haproxy in TCP mode in front of SMTP nodes: PROXY v2 to each node,
    ``option smtpchk`` health checks that send the PROXY header too."""

    workdir: Path
    backends: list[int]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.workdir / "admin.sock"

    def config(self) -> str:
        servers = "\n".join(
            f"    server node{i} 127.0.0.1:{p} send-proxy-v2 check check-send-proxy"
            " inter 300ms fall 1 rise 1"
            for i, p in enumerate(self.backends, start=1)
        )
        return f"""global
    stats socket {self.socket} mode 600 level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch
frontend smtp
    bind 127.0.0.1:{self.port}
    default_backend nodes
backend nodes
    balance roundrobin
    option smtpchk HELO haproxy.test
{servers}
"""

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "haproxy.cfg"
        conf.write_text(self.config())
        log = open(self.workdir / "haproxy.out", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(conf)], stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        log.close()
        wait_for(lambda: port_open(self.port), 10.0, "haproxy listening")

    def command(self, text: str) -> str:
        import socket

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.socket))
            s.sendall(text.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def status(self) -> dict[str, str]:
        """Each server's health (UP, DOWN, ...), from ``show stat``."""
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        out = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == "nodes" and row.get("svname", "").startswith("node"):
                out[row["svname"]] = row.get("status", "")
        return out

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class ProbeTarget:
    """An aiosmtpd server that answers RCPT (``reject*`` → 550) and counts
    every RCPT per address: the address-verification probes."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.port = free_port()
        self.rcpts: dict[str, int] = {}
        target = self

        class Handler:
            async def handle_RCPT(self, server, session, envelope, address, options):  # type: ignore[no-untyped-def]
                target.rcpts[address.lower()] = target.rcpts.get(address.lower(), 0) + 1
                if address.startswith("reject"):
                    return f"550 5.1.1 <{address}>: Recipient address rejected: no such user"
                envelope.rcpt_tos.append(address)
                return "250 2.1.5 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()
