"""Golden dialogs for the access policy, as data (test_policy_dialogs.yaml):
each scenario configures a real daemon, each dialog is a connection whose
replies must match, line by line; then the mail log must name the rules."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.harness import CaptureSink, Daemon, free_port

pytestmark = pytest.mark.timeout(120)

DATA = Path(__file__).with_suffix(".yaml")
SCENARIOS: list[dict[str, Any]] = yaml.safe_load(DATA.read_text())["scenarios"]


class Client:
    """A raw SMTP client that sends exactly the given lines."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.buf = b""

    def reply(self) -> str:
        """The last line of the next (possibly multi-line) reply."""
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(4096)
                if not chunk:
                    raise ConnectionError(f"connection closed; got {self.buf!r}")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            text = line.decode()
            if len(text) < 4 or text[3] != "-":
                return text

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\r\n")

    def close(self) -> None:
        self.sock.close()


def check(got: str, expect: int | str, context: str) -> None:
    if isinstance(expect, int):
        assert got[:3] == str(expect), f"{context}: expected {expect}, got {got!r}"
    else:
        assert got.startswith(expect), f"{context}: expected {expect!r}, got {got!r}"


def run_dialog(port: int, steps: list[Any], name: str) -> None:
    client = Client(port)
    try:
        first = steps[0]
        if isinstance(first, list) and first[0] == "greeting":
            check(client.reply(), first[1], f"{name}: greeting")
            return
        check(client.reply(), 220, f"{name}: greeting")
        for step in steps:
            if isinstance(step, dict):
                body = step["data"].replace("\r\n", "\n").replace("\n", "\r\n")
                client.sock.sendall(body.encode() + b".\r\n")
                check(client.reply(), step["expect"], f"{name}: end of data")
                continue
            line, expect = step
            client.send(line)
            check(client.reply(), expect, f"{name}: {line}")
    finally:
        client.close()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["name"] for s in SCENARIOS])
def test_dialogs(
    scenario: dict[str, Any], make_daemon: Callable[..., Daemon], capture: CaptureSink
) -> None:
    """Every reply of every dialog is the one the data file names."""
    port2 = free_port()

    def fill(text: str) -> str:
        return text.replace("{sink}", str(capture.port)).replace("{port2}", str(port2))

    params = {k: fill(str(v)) for k, v in scenario["main_cf"].items()}
    daemon = make_daemon(params)
    if "master_cf" in scenario:
        daemon.master_cf = fill(scenario["master_cf"]).replace("{port}", str(daemon.port))
    for name, text in scenario.get("files", {}).items():
        (daemon.confdir / name).write_text(text)
    daemon.write_config()
    check_run = daemon.mta("check")
    assert check_run.returncode == 0, check_run.stdout + check_run.stderr
    daemon.start()
    for n, dialog in enumerate(scenario["dialogs"]):
        port = daemon.port
        steps = dialog
        if isinstance(dialog, dict):
            port = port2 if dialog.get("port") == 2 else daemon.port
            steps = dialog["steps"]
        run_dialog(port, steps, f"{scenario['name']} #{n}")
    log = daemon.log_text()
    for expected in scenario.get("log", []):
        assert expected in log, f"{expected!r} not in the mail log:\n{log}"
