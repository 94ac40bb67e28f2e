"""Tests of mta.systemd: sd_notify datagrams to a real unix datagram socket."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from mta import systemd


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, dict[str, str]]]:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    yield sock, {"NOTIFY_SOCKET": str(path)}
    sock.close()


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_reloading_stopping(notify_socket: tuple[socket.socket, dict[str, str]]) -> None:
    """Each call is one datagram with the sd_notify assignments."""
    sock, env = notify_socket
    assert systemd.ready("serving", environ=env)
    assert received(sock) == ["READY=1", f"MAINPID={os.getpid()}", "STATUS=serving"]
    assert systemd.reloading(environ=env)
    lines = received(sock)
    assert lines[0] == "RELOADING=1" and lines[1].startswith("MONOTONIC_USEC=")
    assert int(lines[1].split("=")[1]) > 0
    assert systemd.stopping("bye", environ=env)
    assert received(sock) == ["STOPPING=1", "STATUS=bye"]


def test_abstract_socket_address() -> None:
    """``@name`` is an abstract socket; other kinds are not ours."""
    assert systemd.notify_socket_address({"NOTIFY_SOCKET": "@sd"}) == b"\0sd"
    assert systemd.notify_socket_address({"NOTIFY_SOCKET": "vsock:2:1"}) is None


def test_abstract_socket_delivery() -> None:
    """A datagram reaches an abstract socket too."""
    name = f"mta-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2)
    try:
        assert systemd.status("hi", environ={"NOTIFY_SOCKET": "@" + name})
        assert received(sock) == ["STATUS=hi"]
    finally:
        sock.close()


def test_without_systemd_nothing_happens(tmp_path: Path) -> None:
    """No NOTIFY_SOCKET, or nobody listening: False, never an exception."""
    assert not systemd.ready(environ={})
    assert not systemd.ready(environ={"NOTIFY_SOCKET": str(tmp_path / "gone")})
