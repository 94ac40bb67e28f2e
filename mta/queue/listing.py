"""Queue listings: what ``mta mailq`` (``mta queue list``) prints.

Inputs: ``(state, Envelope)`` pairs, usually from ``scan(root)``, which
reads only the envelope sidecars (one ``os.scandir`` per state, one small
read per message), so listing a large queue never opens a message.
Outputs: the text of Postfix's ``mailq`` (``format_mailq``) and a JSON
array (``format_json``).

The text follows Postfix's ``postqueue -p`` (showq_compat.c) column for
column: a heading, then per message ``%-11s %7d %20.20s %s`` with the id
flagged ``*`` when active and ``!`` when held, the arrival time in
``asctime`` form, the sender (``MAILER-DAEMON`` for the null sender); then
each deferral reason in parentheses, right-aligned to column 78 (longer ones
start at column 0, as Postfix does), followed by the recipients it concerns
indented to column 41; then the other recipients still to be delivered.
Messages are separated by a blank line; the trailer counts kilobytes and
requests ("1 Request." in the singular, as Postfix prints it).  Queues
are listed in Postfix's order: active, incoming, deferred, hold.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

from mta.envelope import Envelope, Recipient
from mta.queue.ids import is_queue_id
from mta.queue.store import ENVELOPE_DIR, ENVELOPE_SUFFIX, MESSAGE_DIR

LISTED_STATES = ("active", "incoming", "deferred", "hold")

HEADING = "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------"
EMPTY = "Mail queue is empty"
NULL_SENDER = "MAILER-DAEMON"

_STATUS_FLAG = {"active": "*", "hold": "!"}
_RECIPIENT_INDENT = " " * 41  # "%-11s %7s %-20s " with empty fields
_REASON_RIGHT_EDGE = 76  # reason text ends here; with the parentheses at 78
# asctime() spells names in English whatever the locale.
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def scan(root: Path, states: Iterable[str] = LISTED_STATES) -> Iterator[tuple[str, Envelope]]:
    """Every message of ``states`` with its envelope, by state, then by id
    (which is roughly arrival order).  Reads sidecars only; a sidecar that
    vanishes or cannot be parsed meanwhile is skipped (recovery deals with
    broken ones).  A sidecar without a size gets the message file's."""
    for state in states:
        directory = root / state / ENVELOPE_DIR
        try:
            with os.scandir(directory) as it:
                names = sorted(e.name for e in it if e.name.endswith(ENVELOPE_SUFFIX))
        except FileNotFoundError:
            continue
        for name, data in _read_all(directory, names):
            queue_id = name[: -len(ENVELOPE_SUFFIX)]
            if data is None or not is_queue_id(queue_id):
                continue
            try:
                envelope = Envelope.from_json(data)
                if envelope.size <= 0:
                    envelope.size = (root / state / MESSAGE_DIR / queue_id).stat().st_size
            except (OSError, ValueError):
                continue
            yield state, envelope


def _read_all(directory: Path, names: list[str]) -> Iterator[tuple[str, bytes | None]]:
    """The contents of the named files, in order (None for one that
    vanished).  Opened relative to the directory's descriptor: on a large
    queue the path lookups are a good part of the cost."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in names:
            try:
                fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
            except OSError:
                yield name, None
                continue
            try:
                chunks = []
                while chunk := os.read(fd, 65536):
                    chunks.append(chunk)
                data: bytes | None = b"".join(chunks)
            except OSError:
                data = None
            finally:
                os.close(fd)
            yield name, data
    finally:
        os.close(dir_fd)


def format_mailq(entries: Iterable[tuple[str, Envelope]], *, tz: tzinfo | None = None) -> str:
    """Postfix ``mailq`` text.  ``tz``: the zone of the arrival times
    (default: local time, as Postfix)."""
    blocks: list[str] = []
    total = 0
    for state, envelope in entries:
        total += envelope.size
        blocks.append(_message_block(state, envelope, tz))
    if not blocks:
        return EMPTY + "\n"
    requests = len(blocks)
    plural = "" if requests == 1 else "s"
    trailer = f"-- {total // 1024} Kbytes in {requests} Request{plural}.\n"
    return HEADING + "\n" + "\n".join(blocks) + "\n" + trailer


def format_json(entries: Iterable[tuple[str, Envelope]]) -> str:
    """One JSON array, one message object per line."""
    objects = [json.dumps(_message_object(s, e), ensure_ascii=False) for s, e in entries]
    if not objects:
        return "[]\n"
    return "[\n" + ",\n".join(objects) + "\n]\n"


def reason(recipient: Recipient) -> str:
    """The last reply about a recipient on one line, or ""."""
    return recipient.reply.one_line() if recipient.reply is not None else ""


def _message_block(state: str, envelope: Envelope, tz: tzinfo | None) -> str:
    flagged = envelope.queue_id + _STATUS_FLAG.get(state, " ")
    sender = _printable(envelope.sender) if envelope.sender else NULL_SENDER
    lines = [
        f"{flagged:<11} {envelope.size:7d} {_asctime(envelope.arrival_time, tz):20.20} {sender}"
    ]
    pending = [
        (r.address, _printable(reason(r))) for r in envelope.recipients if not r.state.is_final
    ]
    # As Postfix: recipients with a deferral reason first, each reason
    # printed once for the run of recipients that share it; then the rest.
    last_reason = None
    shown: set[str] = set()
    for address, why in pending:
        if not why:
            continue
        if why != last_reason:
            padding = max(0, _REASON_RIGHT_EDGE - len(why))
            lines.append(" " * padding + f"({why})")
            last_reason = why
        lines.append(_RECIPIENT_INDENT + _printable(address))
        shown.add(address)
    for address, why in pending:
        if not why and address not in shown:
            lines.append(_RECIPIENT_INDENT + _printable(address))
            shown.add(address)
    return "\n".join(lines) + "\n"


def _message_object(state: str, envelope: Envelope) -> dict[str, Any]:
    return {
        "id": envelope.queue_id,
        "queue": state,
        "size": envelope.size,
        "arrival_time": datetime.fromtimestamp(envelope.arrival_time, UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        ),
        "sender": envelope.sender or NULL_SENDER,
        "recipients": [
            {"address": r.address, "state": r.state.value, "reason": reason(r)}
            for r in envelope.recipients
        ],
    }


def _asctime(when: float, tz: tzinfo | None) -> str:
    """C ``asctime`` form, ``Www Mmm dd hh:mm:ss yyyy`` (day padded with a
    space); the listing shows its first 20 characters."""
    t = datetime.fromtimestamp(when, tz)
    return f"{_DAYS[t.weekday()]} {_MONTHS[t.month - 1]} {t.day:2d} {t:%H:%M:%S} {t.year}"


# C0 and C1 controls and DEL; str.translate keeps this cheap on big queues.
_CONTROLS = {c: "?" for c in (*range(0x20), *range(0x7F, 0xA0))}


def _printable(text: str) -> str:
    """Control characters become "?" (Postfix ``printable()``): a hostile
    address must not move the terminal's cursor."""
    return text if text.isprintable() else text.translate(_CONTROLS)
