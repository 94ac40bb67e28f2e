"""Local mailbox delivery with Postfix's virtual(8) meaning.

Inputs: :class:`VirtualMailboxes` (``virtual_mailbox_domains``,
``virtual_mailbox_maps``, ``virtual_mailbox_base``,
``virtual_mailbox_limit``), the envelope, the recipients and the queue file.
Outputs: one Reply per recipient (:func:`deliver_blocking`; run it in a
thread, it fsyncs), and for the SMTP server the question "is this a known
virtual user?" (:meth:`VirtualMailboxes.lookup`).

A recipient is looked up as ``user@domain``, then ``@domain`` (a catch-all),
as virtual(8) does.  The result is a path relative to
``virtual_mailbox_base``: ending in ``/`` it is a maildir (created when
missing; the message is written to ``tmp/``, fsynced, linked into ``new/``
and the directory fsynced, so a crash loses or duplicates nothing), else an
mbox file (appended under an exclusive lock, ``From `` lines quoted).  The
delivered copy starts with ``Return-Path:`` and ``Delivered-To:`` and has
Unix line ends, as Postfix writes it; a message that already carries
``Delivered-To:`` for the recipient is a loop and bounces (5.4.6).
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mta.envelope import Envelope, Recipient
from mta.reply import Reply
from mta.tables import LookupTable
from mta.tables.matchlist import DomainList

CHUNK = 64 * 1024
_HEADER_SCAN = 64 * 1024
_counter = 0
_counter_lock = threading.Lock()


@dataclass(frozen=True)
class VirtualMailboxes:
    domains: DomainList
    maps: Sequence[LookupTable] = ()
    base: Path | None = None
    size_limit: int = 51200000  # virtual_mailbox_limit (0: none)

    def handles(self, domain: str) -> bool:
        """Whether ``domain`` is a virtual mailbox domain."""
        return self.domains.matches(domain)

    def lookup(self, address: str) -> str | None:
        """The mailbox path of ``address`` as the table says, or None for an
        unknown user."""
        _local, at, domain = address.rpartition("@")
        keys = [address, address.lower()] + ([f"@{domain.lower()}"] if at else [])
        for table in self.maps:
            for key in dict.fromkeys(keys):
                value = table.lookup(key)
                if value is not None:
                    return value.strip()
        return None


def _unique(hostname: str) -> str:
    """A maildir file name: time, microseconds, pid and a counter, host."""
    global _counter
    with _counter_lock:
        _counter += 1
        n = _counter
    now = time.time()
    host = hostname.replace("/", "\\057").replace(":", "\\072")
    return f"{int(now)}.M{int((now % 1) * 1e6)}P{os.getpid()}Q{n}.{host}"


def _header_block(message: Path) -> bytes:
    with message.open("rb") as f:
        head = f.read(_HEADER_SCAN)
    end = head.find(b"\r\n\r\n")
    return head if end < 0 else head[: end + 2]


def _already_delivered(header: bytes, address: str) -> bool:
    want = address.lower().encode("utf-8", "surrogateescape")
    for line in header.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"delivered-to" and value.strip().lower() == want:
            return True
    return False


def _copy_lf(src: Path, out: object, prefix: bytes, *, mbox: bool) -> int:
    """Write ``prefix`` and the queue file with CRLF made LF; returns size."""
    write: Callable[[bytes], int] = out.write  # type: ignore[attr-defined]
    size = write(prefix)
    pending_cr = False
    at_line_start = True
    with src.open("rb") as f:
        while chunk := f.read(CHUNK):
            if pending_cr:
                chunk = b"\r" + chunk
                pending_cr = False
            if chunk.endswith(b"\r"):
                chunk, pending_cr = chunk[:-1], True
            data = chunk.replace(b"\r\n", b"\n")
            if mbox:
                # mboxrd: a "From " line (or ">From ") gains one more ">".
                if at_line_start and data.lstrip(b">").startswith(b"From "):
                    data = b">" + data
                data = _quote_from(data)
            if data:
                at_line_start = data.endswith(b"\n")
            size += write(data)
    if pending_cr:
        size += write(b"\r")
        at_line_start = False
    if not at_line_start:
        size += write(b"\n")
    return size


def _quote_from(data: bytes) -> bytes:
    if b"\nFrom " not in data and b"\n>" not in data:
        return data
    lines = data.split(b"\n")
    out = [lines[0]] + [
        b">" + ln if ln.lstrip(b">").startswith(b"From ") else ln for ln in lines[1:]
    ]
    return b"\n".join(out)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _maildir(target: Path, message: Path, prefix: bytes, hostname: str, limit: int) -> Reply:
    for sub in ("tmp", "new", "cur"):
        (target / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    name = _unique(hostname)
    tmp = target / "tmp" / name
    try:
        with open(tmp, "xb") as out:
            size = _copy_lf(message, out, prefix, mbox=False)
            if limit and size > limit:
                raise _TooBig(size)
            out.flush()
            os.fsync(out.fileno())
        os.link(tmp, target / "new" / name)
        _fsync_dir(target / "new")
    finally:
        try:
            tmp.unlink()
        except OSError:
            pass
    return Reply(250, "0.0", "delivered to maildir")


def _mbox(target: Path, message: Path, prefix: bytes, sender: str, limit: int) -> Reply:
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(target, "ab") as out:
        fcntl.lockf(out, fcntl.LOCK_EX)
        try:
            start = out.seek(0, os.SEEK_END)
            stamp = time.strftime("%a %b %e %H:%M:%S %Y", time.localtime())
            from_line = f"From {sender or 'MAILER-DAEMON'}  {stamp}\n".encode(
                "utf-8", "surrogateescape"
            )
            try:
                size = _copy_lf(message, out, from_line + prefix, mbox=True)
                size += out.write(b"\n")
                if limit and out.tell() > limit:
                    raise _TooBig(size)
                out.flush()
                os.fsync(out.fileno())
            except BaseException:
                out.truncate(start)  # leave the mailbox as it was
                raise
        finally:
            fcntl.lockf(out, fcntl.LOCK_UN)
    return Reply(250, "0.0", "delivered to mailbox")


class _TooBig(Exception):
    def __init__(self, size: int) -> None:
        self.size = size


def deliver_blocking(
    boxes: VirtualMailboxes,
    envelope: Envelope,
    recipients: Sequence[Recipient],
    message: Path,
    hostname: str,
) -> list[Reply]:
    """Deliver to each recipient's mailbox; blocking (file I/O, fsync)."""
    replies: list[Reply] = []
    try:
        header = _header_block(message)
    except OSError as e:
        return [Reply(451, "3.0", f"error reading queue file: {e.strerror}")] * len(recipients)
    for rcpt in recipients:
        replies.append(_one(boxes, envelope, rcpt.address, message, header, hostname))
    return replies


def _one(
    boxes: VirtualMailboxes,
    envelope: Envelope,
    address: str,
    message: Path,
    header: bytes,
    hostname: str,
) -> Reply:
    path = boxes.lookup(address)
    if path is None:
        return Reply(550, "1.1", f'unknown user: "{address.lower()}"')
    if _already_delivered(header, address):
        return Reply(554, "4.6", f"mail forwarding loop for {address}")
    if boxes.base is None:
        return Reply(451, "3.5", "virtual_mailbox_base is not set")
    relative = path.lstrip("/")
    target = boxes.base / relative
    try:
        target.resolve().relative_to(boxes.base.resolve())
    except ValueError:
        return Reply(451, "3.5", f"mailbox path {path} leaves virtual_mailbox_base")
    prefix = f"Return-Path: <{envelope.sender}>\nDelivered-To: {address}\n".encode(
        "utf-8", "surrogateescape"
    )
    try:
        if path.endswith("/"):
            return _maildir(target, message, prefix, hostname, boxes.size_limit)
        return _mbox(target, message, prefix, envelope.sender, boxes.size_limit)
    except _TooBig:
        return Reply(552, "2.2", "message file too big")
    except OSError as e:
        where = "maildir" if path.endswith("/") else "mailbox"
        return Reply(
            450, "2.0", f"{where} delivery failed: {target}: {e.strerror or e.__class__.__name__}"
        )


def default_hostname() -> str:
    return socket.gethostname()
