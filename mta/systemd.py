"""sd_notify: tell systemd (``Type=notify``) how the daemon is doing.

Job: send the service manager's notification datagrams — ``READY=1`` once the
listeners are bound, ``RELOADING=1`` (with ``MONOTONIC_USEC``) when a reload
starts and ``READY=1`` when it is done, ``STOPPING=1`` at stop, ``STATUS=...``
for ``systemctl status`` — as sd_notify(3) describes, without libsystemd.

Input: the ``NOTIFY_SOCKET`` environment variable (a path, or ``@name`` for an
abstract socket).  Output: one ``AF_UNIX``/``SOCK_DGRAM`` datagram per call;
nothing at all when the variable is unset (not started by systemd).  Sending
never blocks and never raises: a lost notification must not stop mail.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping


def notify_socket_address(environ: Mapping[str, str] | None = None) -> str | bytes | None:
    """The address of the notification socket, None when there is none: a path,
    or bytes for an abstract socket (``@name`` becomes ``\\0name``)."""
    env = os.environ if environ is None else environ
    value = env.get("NOTIFY_SOCKET", "")
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock and other kinds are not for us


def notify(*assignments: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``NAME=value`` lines as one datagram; True when it was sent."""
    address = notify_socket_address(environ)
    if address is None or not assignments:
        return False
    message = "\n".join(assignments).encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.sendto(message, address)
    except OSError:
        return False
    return True


def ready(status: str = "", environ: Mapping[str, str] | None = None) -> bool:
    """Start-up (or a reload) is complete."""
    lines = ["READY=1", f"MAINPID={os.getpid()}"]
    if status:
        lines.append(f"STATUS={status}")
    return notify(*lines, environ=environ)


def reloading(status: str = "", environ: Mapping[str, str] | None = None) -> bool:
    """A reload starts; ``READY=1`` must follow when it is done."""
    # systemd 253+ wants the monotonic time with RELOADING=1 (sd_notify(3)).
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = ["RELOADING=1", f"MONOTONIC_USEC={usec}"]
    if status:
        lines.append(f"STATUS={status}")
    return notify(*lines, environ=environ)


def stopping(status: str = "", environ: Mapping[str, str] | None = None) -> bool:
    """The daemon is shutting down."""
    lines = ["STOPPING=1"]
    if status:
        lines.append(f"STATUS={status}")
    return notify(*lines, environ=environ)


def status(text: str, environ: Mapping[str, str] | None = None) -> bool:
    """A one-line status for ``systemctl status``."""
    return notify(f"STATUS={text}", environ=environ)
