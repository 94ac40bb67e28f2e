"""A scripted milter server for tests: negotiates, then answers each
command from a script, or misbehaves (hangs, closes, sends garbage)."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable

from tests.integration.harness import free_port

Script = Callable[[bytes, bytes], list[bytes] | str | None]


def pkt(cmd: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data) + 1) + cmd + data


def continue_all(cmd: bytes, data: bytes) -> list[bytes] | str | None:
    """Answer every command that wants a reply with SMFIR_CONTINUE."""
    if cmd in (b"D", b"A", b"Q"):
        return None
    return [pkt(b"c")]


class FakeMilter:
    """Listens on 127.0.0.1; each connection is served by ``script``: a
    list of raw packets to send, "hang" (never answer), "close" (drop the
    connection), or None (no reply)."""

    def __init__(
        self,
        script: Script = continue_all,
        actions: int = 0x1FF,
        steps: int = 0,
        unix_path: str = "",
    ) -> None:
        self.script = script
        self.actions = actions
        self.steps = steps
        self.unix_path = unix_path
        self.port = 0 if unix_path else free_port()
        self.seen: list[tuple[bytes, bytes]] = []
        if unix_path:
            self._sock = socket.socket(socket.AF_UNIX)
            self._sock.bind(unix_path)
        else:
            self._sock = socket.socket()
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind(("127.0.0.1", self.port))
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def address(self) -> str:
        if self.unix_path:
            return f"unix:{self.unix_path}"
        return f"inet:127.0.0.1:{self.port}"

    def start(self) -> FakeMilter:
        self._sock.listen(8)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._sock.close()
        for c in self._conns:
            try:
                c.close()
            except OSError:
                pass

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def _session(self, conn: socket.socket) -> None:
        try:
            while True:
                (length,) = struct.unpack(">I", self._read(conn, 4))
                body = self._read(conn, length)
                cmd, data = body[:1], body[1:]
                self.seen.append((cmd, data))
                if cmd == b"O":
                    conn.sendall(pkt(b"O", struct.pack(">III", 6, self.actions, self.steps)))
                    continue
                if cmd == b"Q":
                    break
                answer = self.script(cmd, data)
                if answer == "slow":  # progress, then the answer after a while
                    conn.sendall(pkt(b"p"))
                    self._stop.wait(0.6)
                    conn.sendall(pkt(b"p"))
                    self._stop.wait(0.6)
                    conn.sendall(pkt(b"c"))
                    continue
                if answer == "hang":
                    self._stop.wait(30)
                    break
                if answer == "close":
                    break
                if isinstance(answer, list):
                    conn.sendall(b"".join(answer))
        except (EOFError, OSError):
            pass
        finally:
            conn.close()

    def commands(self) -> list[bytes]:
        return [c for c, _ in self.seen]
