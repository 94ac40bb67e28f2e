"""Helpers for the ESMTP integration tests: test certificates, a raw SMTP
client that can pipeline, BDAT and speak TLS mid-stream, PROXY headers, and a
real Dovecot auth service in a temporary directory."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.integration.harness import wait_for

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"


def make_cert(directory: Path, cn: str = "mta.test.example") -> tuple[Path, Path]:
    """A fresh self-signed certificate and key (EC P-256), made by openssl."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            f"/CN={cn}",
            "-days",
            "2",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def client_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class RawClient:
    """A line-level SMTP client over a socket: send anything, read replies."""

    def __init__(self, port: int, timeout: float = 10.0, greet: bool = True) -> None:
        self.sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.greeting = self.reply() if greet else (0, "")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; unread: {self.buf!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def reply(self) -> tuple[int, str]:
        """One (possibly multi-line) reply: code and the joined text."""
        texts = []
        while True:
            line = self.line()
            texts.append(line[4:].decode("utf-8", "replace"))
            if line[3:4] != b"-":
                return int(line[:3]), "\n".join(texts)

    def cmd(self, line: str) -> tuple[int, str]:
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def starttls(self) -> None:
        code, text = self.cmd("STARTTLS")
        assert code == 220, text
        assert not self.buf
        self.sock = client_context().wrap_socket(self.sock)

    def closed(self, timeout: float = 5.0) -> bool:
        """Whether the server closes the connection (EOF) within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except TimeoutError:
            return False
        except OSError:
            return True

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def proxy_v1(src: str, dst: str, sport: int, dport: int) -> bytes:
    family = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def proxy_v2(src: str, dst: str, sport: int, dport: int, *, local: bool = False) -> bytes:
    """A binary PROXY v2 header (PROXY or LOCAL command, TCP over IPv4)."""
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    if local:
        return sig + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    addrs = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return sig + bytes([0x21, 0x11]) + struct.pack("!H", len(addrs)) + addrs


@dataclass
class Dovecot:
    """Debian's dovecot running only its auth service, from a temporary
    directory with its own configuration and a passwd-file user database."""

    root: Path
    users: dict[str, str]
    inet_port: int = 0  # also an inet listener for the auth service
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.root / "auth-client"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        run = self.root / "run"
        run.mkdir(exist_ok=True)
        lines = []
        for user, password in self.users.items():
            hashed = subprocess.run(
                [DOVEADM, "-c", "/dev/null", "pw", "-s", "SHA512-CRYPT", "-p", password],
                capture_output=True,
                text=True,
                check=False,
                timeout=30,
            ).stdout.strip()
            if not hashed.startswith("{"):
                # doveadm wants a config; the hash is the same with this one.
                hashed = subprocess.run(
                    [DOVEADM, "pw", "-s", "SHA512-CRYPT", "-p", password],
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=30,
                ).stdout.strip()
            lines.append(f"{user}:{hashed}::::::")
        (self.root / "passwd").write_text("\n".join(lines) + "\n")
        user = os.environ.get("USER") or "root"
        inet = ""
        if self.inet_port:
            inet = f"  inet_listener {{\n    address = 127.0.0.1\n    port = {self.inet_port}\n  }}"
        conf = self.root / "dovecot.conf"
        conf.write_text(
            f"""
base_dir = {run}
state_dir = {self.root}/state
log_path = {self.root}/dovecot.log
instance_name = mta-test-{os.getpid()}
protocols =
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_internal_user = {user}
default_login_user = {user}
default_internal_group = root
passdb {{
  driver = passwd-file
  args = {self.root}/passwd
}}
userdb {{
  driver = static
  args = uid=0 gid=0 home={self.root}/home
}}
service auth {{
  unix_listener {self.socket_path} {{
    mode = 0666
  }}
{inet}
}}
service anvil {{
  chroot =
}}
"""
        )
        (self.root / "state").mkdir(exist_ok=True)
        # Its own process group: stop() ends dovecot and all its children.
        self.proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "dovecot.err", "wb"),  # noqa: SIM115
            start_new_session=True,
        )
        try:
            wait_for(
                lambda: (
                    self.socket_path.exists() or self.proc is None or self.proc.poll() is not None
                ),
                15,
                "dovecot's auth socket",
            )
        except TimeoutError:
            self.stop()
            raise
        if self.proc.poll() is not None:
            raise RuntimeError("dovecot exited: " + self.log())

    def log(self) -> str:
        out = []
        for name in ("dovecot.err", "dovecot.log"):
            p = self.root / name
            if p.exists():
                out.append(p.read_text(errors="replace"))
        return "\n".join(out)

    def stop(self) -> None:
        if self.proc is None:
            return
        group = self.proc.pid
        try:
            os.killpg(group, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None
        # The auth process may outlive the master for a moment.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
