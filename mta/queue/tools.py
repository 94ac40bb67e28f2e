"""``mta queue delete|hold|release|requeue``: Postfix's postsuper -d/-h/-H/-r.

Runs in its own process, beside the daemon or without it, on the queue
directory (the rules that make that safe: :mod:`mta.queue.store`).

* ``delete``  removes messages (default queues: hold, incoming, active, deferred);
* ``hold``    moves them to ``hold``, where nothing is delivered (incoming,
              active, deferred);
* ``release`` moves held messages to ``deferred``, due at once (hold);
* ``requeue`` moves messages to ``incoming`` as if they had just arrived:
              arrival time now, attempts and delay warning reset, every
              recipient not yet delivered or bounced tried again (hold,
              incoming, active, deferred).  The queue id stays.

IDs are queue ids, ``-`` (read ids from standard input, as ``mailq |
... | mta queue delete -``), or ``ALL`` optionally followed by queue names
(``ALL deferred``).

A message in ``active`` is the daemon's while it runs: the tool asks the
daemon (:mod:`mta.queue.trigger`), which does it when the current delivery
attempt ends.  Whatever a tool changed, it tells the daemon (``release ID``
for messages that are due now, ``scan`` otherwise); a daemon that does not
hear it finds out at its next rescan (``queue_run_delay``).  Held or
deleted messages need no telling: the daemon finds them gone.

Inputs: the queue directory, the action, the ids, a clock and a log
function.  Outputs: an ``Outcome`` and the summary lines Postfix prints
(``Deleted: 2 messages``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mta.envelope import Envelope, RcptState
from mta.queue import trigger
from mta.queue.ids import is_queue_id
from mta.queue.store import STATES, QueueStore, ToolResult

ACTIONS = ("delete", "hold", "release", "requeue")

DEFAULT_QUEUES = {
    "delete": ("hold", "incoming", "active", "deferred"),
    "hold": ("incoming", "active", "deferred"),
    "release": ("hold",),
    "requeue": ("hold", "incoming", "active", "deferred"),
}

#: Postfix postsuper's summary words, and its per-message log words.
SUMMARY = {
    "delete": "Deleted",
    "hold": "Placed on hold",
    "release": "Released from hold",
    "requeue": "Requeued",
}
LOGGED = {
    "delete": "removed",
    "hold": "placed on hold",
    "release": "released from hold",
    "requeue": "requeued",
}

BUSY_RETRIES = 40  # x 50 ms: a commit or a move under way finishes well within 2 s


class UsageError(ValueError):
    """Bad ids or queue names; the message says which."""


@dataclass
class Outcome:
    done: list[str] = field(default_factory=list)
    requested: list[str] = field(default_factory=list)  # active: done after the attempt
    absent: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)

    def summary(self, action: str) -> str:
        n = len(self.done) + len(self.requested)
        return f"{SUMMARY[action]}: {n} message{'' if n == 1 else 's'}"


def requeue_edit(now: float) -> Callable[[Envelope], None]:
    """The sidecar change of ``requeue``: a fresh start, except for
    recipients already delivered or bounced."""

    def edit(env: Envelope) -> None:
        env.arrival_time = now
        env.attempts = 0
        env.next_try = 0.0
        env.warned = False
        env.reason = ""
        env.extra.pop("hold", None)
        for r in env.recipients:
            if not r.state.is_final:
                r.state = RcptState.PENDING
                r.reply = None
                r.relay = ""

    return edit


def release_edit(env: Envelope) -> None:
    """The sidecar change of ``release``: due now, no longer marked held."""
    env.next_try = 0.0
    env.reason = ""
    env.extra.pop("hold", None)


def parse_targets(
    action: str, args: list[str], stdin: Iterable[str] = ()
) -> tuple[list[str] | None, tuple[str, ...]]:
    """(ids or None for ALL, queues) from the command's arguments."""
    if action not in ACTIONS:
        raise UsageError(f"unknown queue action: {action}")
    if not args:
        raise UsageError(f"queue {action}: no queue id given (ID..., -, or ALL)")
    if args[0] == "ALL":
        queues = tuple(args[1:]) or DEFAULT_QUEUES[action]
        for q in queues:
            if q not in STATES:
                raise UsageError(f"unknown queue: {q}")
        return None, queues
    ids: list[str] = []
    for arg in args:
        if arg == "-":
            ids.extend(w.strip("*! \t") for line in stdin for w in line.split()[:1])
        elif arg == "ALL":
            raise UsageError("ALL must be the first argument")
        else:
            ids.append(arg)
    for qid in ids:
        if not is_queue_id(qid):
            raise UsageError(f"invalid queue id: {qid}")
    queues = DEFAULT_QUEUES[action]
    if action == "delete":
        queues = (*queues, "corrupt")  # a named corrupt file may be deleted
    return ids, queues


def run(
    root: Path,
    action: str,
    ids: list[str] | None,
    queues: tuple[str, ...],
    *,
    now: float | None = None,
    log: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Do ``action`` to ``ids`` (None: every message in ``queues``)."""
    store = QueueStore(root)
    now = time.time() if now is None else now
    daemon = daemon_running(root)
    if ids is None:
        ids = [qid for state in queues for qid in store.queue_ids(state)]
    out = Outcome()
    requests: list[str] = []
    for qid in dict.fromkeys(ids):
        result = _one(store, action, qid, queues, daemon, now, sleep)
        if result == "requested":
            out.requested.append(qid)
            requests.append(f"{action} {qid}")
        elif result == "done":
            out.done.append(qid)
            if log is not None:
                log(f"{qid}: {LOGGED[action]}")
            if action in ("release", "requeue"):
                requests.append(f"release {qid}")
        elif result == "absent":
            out.absent.append(qid)
        elif result == "busy":
            out.busy.append(qid)
        else:
            out.errors.append((qid, result))
    if daemon and (out.done or requests):
        requests.append("scan")
        try:
            trigger.send(root, requests)
        except OSError:
            pass  # the daemon finds out at its next rescan
    return out


def daemon_running(root: Path) -> bool:
    """Is a daemon reading the queue's FIFO?"""
    try:
        return trigger.send(root, [])
    except OSError:
        return False


def _one(
    store: QueueStore,
    action: str,
    qid: str,
    queues: tuple[str, ...],
    daemon: bool,
    now: float,
    sleep: Callable[[float], None],
) -> str:
    """ "done", "requested", "absent", "busy", or an error text."""
    for _ in range(BUSY_RETRIES):
        state = store.find(qid)
        if state is None or state not in queues:
            return "absent"
        if state == "active" and daemon:
            return "requested"
        free = not daemon
        try:
            if action == "delete":
                result = store.tool_delete(qid, sources=queues, allow_active=free)
            elif action == "hold":
                result = store.tool_move(qid, "hold", sources=queues, allow_active=free)
            elif action == "release":
                result = store.tool_move(qid, "deferred", sources=queues, edit=release_edit)
            else:
                result = store.tool_move(
                    qid, "incoming", sources=queues, edit=requeue_edit(now), allow_active=free
                )
        except ValueError as e:
            return f"unreadable envelope ({e}); left in hold"
        except OSError as e:
            return str(e)
        if result in (ToolResult.MOVED, ToolResult.DELETED, ToolResult.UNCHANGED):
            return "done"
        if result is ToolResult.ABSENT:
            return "absent"
        sleep(0.05)  # BUSY: a commit or a move is under way
    return "busy"
