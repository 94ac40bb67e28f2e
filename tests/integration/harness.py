"""Real peers for integration tests: the mta daemon under twistd, Postfix's
smtp-sink, and an aiosmtpd capture sink — all on loopback, on ports picked
by binding port 0, bounded in time, and cleaned up by their fixtures."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# twistd of this interpreter (the script on PATH may belong to another one).
TWISTD = "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def write_main_cf(confdir: Path, params: dict[str, str]) -> None:
    lines = [f"{k} = {v}" for k, v in params.items()]
    (confdir / "main.cf").write_text("\n".join(lines) + "\n")


@dataclass
class Daemon:
    """``twistd -n mta -c CONFDIR`` as a child process."""

    confdir: Path
    port: int
    params: dict[str, str]
    master_cf: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.confdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.confdir / "daemon.out"
        self.write_config()
        # The checkout's plugin, whether or not the package is installed.
        plugdir = self.confdir / "plugins" / "twisted" / "plugins"
        plugdir.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "twisted_plugins" / "mta_plugin.py", plugdir / "mta_plugin.py")

    @property
    def queue_dir(self) -> Path:
        return self.confdir / "queue"

    @property
    def maillog(self) -> Path:
        return self.confdir / "maillog"

    def write_config(self) -> None:
        base = {
            "myhostname": "mta.test.example",
            "queue_directory": "queue",
            "maillog_file": "maillog",
            "mynetworks": "127.0.0.0/8 [::1]/128",
            "dns_nameservers": "127.0.0.1:9",  # never the outside world
        }
        base.update(self.params)
        write_main_cf(self.confdir, base)
        master = self.master_cf
        if master is None:
            master = f"127.0.0.1:{self.port} inet n - n - - smtpd\n"
        (self.confdir / "master.cf").write_text(master)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), str(self.confdir / "plugins"), env.get("PYTHONPATH", "")]
        )
        return env

    def start(self, wait: bool = True) -> None:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "mta", "-c", str(self.confdir)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env(),
                cwd=str(self.confdir),
            )
        if wait:
            wait_for(
                lambda: port_open(self.port) or self.proc is None or self.proc.poll() is not None,
                20,
                "the daemon to listen",
            )
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}: {self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_text(self) -> str:
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        rc = self.proc.returncode
        self.proc = None
        return rc

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(5)
        self.proc = None

    def mta(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mta.cli", "-c", str(self.confdir), *args],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=60,
            input=input.decode() if input is not None else None,
        )

    def queue_files(self, state: str) -> list[Path]:
        d = self.queue_dir / state / "cur"
        return sorted(p for p in d.iterdir()) if d.exists() else []


@dataclass
class SmtpSink:
    """Postfix's smtp-sink, dumping each message to a file."""

    dump_dir: Path
    port: int = 0
    extra: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.dump_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        user = (
            os.environ.get("USER")
            or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
        )
        self.proc = subprocess.Popen(
            [
                SMTP_SINK,
                "-u",
                user,
                *self.extra,
                "-d",
                f"{self.dump_dir}/%M.",
                f"127.0.0.1:{self.port}",
                "100",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: port_open(self.port), 10, "smtp-sink")

    def messages(self) -> list[bytes]:
        """The dumps that are complete: smtp-sink writes a dump while the
        transaction runs, so a file counts once it is non-empty and stopped
        growing."""
        out = []
        for p in sorted(self.dump_dir.rglob("*")):
            if not p.is_file():
                continue
            first = p.stat().st_size
            if first == 0 or time.time() - p.stat().st_mtime < 0.2:
                time.sleep(0.2)
                if p.stat().st_size != first or first == 0:
                    continue
            out.append(p.read_bytes())
        return out

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


@dataclass
class Captured:
    sender: str
    recipients: list[str]
    data: bytes


class CaptureSink:
    """An aiosmtpd server that records messages and rejects recipients whose
    local part starts with ``reject`` (550) or ``defer`` (450)."""

    def __init__(self, port: int = 0) -> None:
        from aiosmtpd.controller import Controller

        self.port = port or free_port()
        self.messages: list[Captured] = []
        self._lock = threading.Lock()
        sink = self

        class Handler:
            async def handle_RCPT(self, server, session, envelope, address, options):  # type: ignore[no-untyped-def]
                local = address.split("@")[0]
                if local.startswith("reject"):
                    return f"550 5.1.1 <{address}>: Recipient address rejected: no such user"
                if local.startswith("defer"):
                    return f"450 4.2.0 <{address}>: try again later"
                envelope.rcpt_tos.append(address)
                return "250 2.1.5 OK"

            async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
                with sink._lock:
                    sink.messages.append(
                        Captured(
                            envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content
                        )
                    )
                return "250 2.0.0 OK captured"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()

    def wait(self, n: int, timeout: float = 15.0) -> list[Captured]:
        wait_for(lambda: len(self.messages) >= n, timeout, f"{n} message(s) at the capture sink")
        return list(self.messages)


def smtp_send(
    port: int,
    sender: str,
    recipients: Iterable[str],
    body: bytes,
    *,
    source: str | None = None,
) -> tuple[int, bytes]:
    """Send with smtplib; returns the DATA reply (code, text)."""
    import smtplib

    with smtplib.SMTP(
        "127.0.0.1", port, timeout=15, source_address=(source, 0) if source else None
    ) as s:
        s.ehlo("client.test.example")
        code, msg = s.mail(sender)
        assert code == 250, (code, msg)
        for r in recipients:
            code, msg = s.rcpt(r)
            if code >= 400:
                return code, msg
        return s.data(body)
