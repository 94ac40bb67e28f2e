"""The queue manager: moves messages through the queue and hands them to delivery.

Postfix's qmgr in one object.  Inputs: messages committed to ``incoming``
by the SMTP server or ``mta sendmail``, the store's contents at start, and
requests of the ``mta`` tools (:mod:`mta.queue.trigger`).  Outputs:
delivery attempts (through a delivery function), state changes on disk
(active → deferred, hold, incoming, or removed), delivery status notices
queued as new messages (:mod:`mta.bounce`), and mail log lines.

Scheduling decisions live in :mod:`mta.queue.scheduler` (pure); this module
holds the effects.  Limits, as Postfix's:

* at most ``qmgr_message_active_limit`` messages in ``active`` at once;
* at most ``*_destination_concurrency_limit`` deliveries to one destination
  at once, and at most ``*_destination_recipient_limit`` recipients per
  delivery (with a limit of 1 a "destination" is one recipient);
* a message whose destination already has a full round of deliveries
  waiting is not activated but *parked* (left where it is on disk) until
  that destination has room, so one slow destination can never fill the
  active set and starve the others.

After an attempt each recipient keeps its own state in the sidecar; only
the ones still pending are tried again, after a backoff that grows with the
message's age; once the message is older than its lifetime the pending
ones are returned to the sender.  The sidecar is also saved after each
delivery of a message that has more deliveries under way, so a crash
repeats as little as possible.

The manager keeps in memory: the envelopes of deferred messages (for the
statistics service, and to route them without reading the disk), the due
times, the active set and the ids waiting for it.  The disk stays the
truth: every activation re-reads the sidecar, and every
``queue_run_delay`` (or when a tool asks, :mod:`mta.queue.trigger`) the
queue directories are listed again, so messages that ``mta sendmail``
queued or ``mta queue`` moved are picked up, and ones it held or deleted
are forgotten.  A held or deleted message is never delivered: activation
is a rename out of ``incoming``/``deferred``, which fails once a tool has
renamed the file away.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from twisted.internet import defer, task, threads
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from mta.bounce import NoticeSettings, build_notice, build_report, describe
from mta.delivery.route import Route, Router
from mta.envelope import Envelope, RcptState, Recipient
from mta.maillog import MailLog, format_delay
from mta.queue.scheduler import RetryPolicy, Scheduler
from mta.reply import Reply

log = logging.getLogger(__name__)

NOTIFY_CLASSES = frozenset(
    {"bounce", "2bounce", "data", "delay", "policy", "protocol", "resource", "software"}
)
_UNLIMITED = 1 << 30


@dataclass(frozen=True)
class Attempt:
    """What a delivery function returns: one reply per recipient, in order,
    and the relay that gave them (``host[ip]:port`` or ``none``).

    ``service`` is the transport that logs the result; ``remote`` says per
    reply whether the next hop said it (None: guessed from the text).
    ``dsn_passed``: the next hop announced DSN and took NOTIFY/ORCPT, so
    success notices are its job, not ours (RFC 3461 5.2.2); when False a
    recipient that asked NOTIFY=SUCCESS gets a "relayed" notice."""

    replies: list[Reply]
    relay: str
    service: str = "smtp"
    remote: list[bool] | None = None
    dsn_passed: bool = False


class DeliverFunction(Protocol):
    def __call__(
        self, route: Route, envelope: Envelope, recipients: list[Recipient], message_path: Path
    ) -> Awaitable[Attempt]: ...


@dataclass(frozen=True)
class ManagerSettings:
    hostname: str = "localhost"  # myhostname
    myorigin: str = "localhost"  # qualifies the postmaster addresses below
    router: Router = field(default_factory=Router)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    active_limit: int = 20000  # qmgr_message_active_limit
    destination_concurrency: int = 20  # default_destination_concurrency_limit
    destination_recipients: int = 50  # default_destination_recipient_limit
    # Per transport: TRANSPORT_destination_concurrency_limit / _recipient_limit.
    transport_concurrency: Mapping[str, int] = field(default_factory=dict)
    transport_recipients: Mapping[str, int] = field(default_factory=dict)
    soft_bounce: bool = False
    notice: NoticeSettings = field(default_factory=lambda: NoticeSettings("localhost"))
    double_bounce_sender: str = "double-bounce"
    notify_classes: frozenset[str] = frozenset({"resource", "software"})
    bounce_notice_recipient: str = "postmaster"
    twobounce_notice_recipient: str = "postmaster"  # 2bounce_notice_recipient
    delay_notice_recipient: str = "postmaster"
    error_notice_recipient: str = "postmaster"
    stop_grace: float = 10.0  # seconds in-flight deliveries get at stop

    def concurrency(self, transport: str) -> int:
        limit = self.transport_concurrency.get(transport, self.destination_concurrency)
        return limit if limit > 0 else _UNLIMITED

    def recipients(self, transport: str) -> int:
        limit = self.transport_recipients.get(transport, self.destination_recipients)
        return limit if limit > 0 else _UNLIMITED

    def qualify(self, address: str) -> str:
        """Postfix append_at_myorigin: ``postmaster`` → ``postmaster@$myorigin``."""
        return address if "@" in address or not address else f"{address}@{self.myorigin}"

    @property
    def double_bounce_address(self) -> str:
        return (
            self.double_bounce_sender
            if "@" in self.double_bounce_sender
            else f"{self.double_bounce_sender}@{self.hostname}"
        )


class QueueStoreLike(Protocol):
    def begin(self) -> Any: ...
    async def commit(self, msg: Any, envelope: Envelope) -> None: ...
    def move(self, queue_id: str, src: str, dst: str) -> None: ...
    async def update(self, state: str, envelope: Envelope) -> None: ...
    def delete(self, state: str, queue_id: str) -> None: ...
    def message_path(self, state: str, queue_id: str) -> Path: ...
    def load(self, state: str, queue_id: str) -> Envelope: ...
    def exists(self, state: str, queue_id: str) -> bool: ...
    def read_message(self, state: str, queue_id: str, limit: int = -1) -> bytes: ...
    def quarantine(self, state: str, queue_id: str, reason: str) -> str: ...
    def listing(self) -> Any: ...
    def apply_listing(self, listing: Any) -> None: ...
    def tool_move(
        self,
        queue_id: str,
        dst_state: str,
        *,
        sources: tuple[str, ...] = ...,
        edit: Callable[[Envelope], None] | None = None,
        allow_active: bool = False,
    ) -> Any: ...
    def tool_delete(
        self, queue_id: str, *, sources: tuple[str, ...] = ..., allow_active: bool = False
    ) -> Any: ...


RunInThread = Callable[..., Awaitable[Any]]


def _thread_runner(reactor: Any) -> RunInThread:
    def run(f: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        d: defer.Deferred[Any] = threads.deferToThreadPool(
            reactor, reactor.getThreadPool(), f, *args
        )
        return d

    return run


class _Destination:
    """One destination's delivery slots (a semaphore that can count its
    waiters) and the messages parked until it has room."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy = 0
        self.waiting: collections.deque[defer.Deferred[None]] = collections.deque()
        self.parked: collections.deque[str] = collections.deque()

    @property
    def congested(self) -> bool:
        """A full round of deliveries already waits: take no more messages."""
        return len(self.waiting) >= self.limit

    def acquire(self) -> defer.Deferred[None]:
        if self.busy < self.limit:
            self.busy += 1
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred(lambda d: self._forget(d))
        self.waiting.append(d)
        return d

    def release(self) -> None:
        self.busy -= 1
        self.pump()

    def pump(self) -> None:
        """Wake waiters while there are free slots (also after a reload
        raised the limit)."""
        while self.waiting and self.busy < self.limit:
            self.busy += 1
            self.waiting.popleft().callback(None)

    def _forget(self, d: defer.Deferred[None]) -> None:
        try:
            self.waiting.remove(d)
        except ValueError:
            pass

    @property
    def idle(self) -> bool:
        return not self.busy and not self.waiting and not self.parked


@dataclass
class _Run:
    """One attempt of one message: what the deliveries share."""

    env: Envelope
    path: Path
    jobs_left: int = 0
    lock: defer.DeferredLock = field(default_factory=defer.DeferredLock)
    success: dict[str, str] = field(default_factory=dict)  # address -> relayed/delivered
    software_error: str = ""


class QueueManager:
    def __init__(
        self,
        reactor: Any,
        store: QueueStoreLike,
        settings: ManagerSettings,
        deliver: DeliverFunction,
        maillog: MailLog,
        *,
        clock: Callable[[], float] | None = None,
        on_event: Callable[[str, int], None] | None = None,
        run_in_thread: RunInThread | None = None,
    ) -> None:
        self.reactor = reactor
        self.store = store
        self.settings = settings
        self.deliver = deliver
        self.maillog = maillog
        self._now = clock or reactor.seconds
        self._on_event = on_event or (lambda kind, n: None)
        self._in_thread = run_in_thread or _thread_runner(reactor)
        self.scheduler = Scheduler()
        self._envelopes: dict[str, Envelope] = {}  # deferred ones (scheduled or parked)
        self._backlog: collections.deque[tuple[str, str, Envelope | None]] = collections.deque()
        self._queued: set[str] = set()  # ids in the backlog
        self._parked: dict[str, tuple[str, Envelope | None]] = {}
        self._active: dict[str, defer.Deferred[None]] = {}
        self._requests: dict[str, str] = {}  # tool requests for active messages
        self._dirty: dict[str, Envelope] = {}  # newer than their sidecar (a save failed)
        self._dests: dict[str, _Destination] = {}
        self._due_now: set[str] = set()  # released by a tool: due as soon as seen
        self._timer: IDelayedCall | None = None
        self._scan_loop: task.LoopingCall | None = None
        self._scanning = False
        self._scan_again = False
        self._flush_after_scan = False
        self._running = False

    # -- life cycle ---------------------------------------------------------
    def start(self, recovered: Sequence[tuple[str, Envelope]]) -> None:
        """Rebuild the schedule from the store: incoming is due now, active
        goes back to incoming first (Postfix qmgr does the same: the attempt
        it was in died with the last process), deferred when its time comes,
        hold never."""
        self._running = True
        now = self._now()
        for state, env in recovered:
            qid = env.queue_id
            if state == "active":
                try:
                    self.store.move(qid, "active", "incoming")
                except OSError as e:
                    log.error("%s: cannot move back to incoming: %s", qid, e)
                    continue
                state = "incoming"
            if state == "incoming" and env.extra.get("hold"):
                # HOLD by an access table or header_checks: the daemon stopped
                # between the commit and the move to hold (mta.smtpd).
                try:
                    self.store.move(qid, "incoming", "hold")
                except OSError as e:
                    log.error("%s: cannot move to hold: %s", qid, e)
                continue
            if state == "incoming":
                self._enqueue(qid, "incoming", env)
            elif state == "deferred":
                self._envelopes[qid] = env
                self.scheduler.schedule(qid, env.next_try or now)
        self._start_scan_loop()
        self._kick()

    async def stop(self) -> None:
        """Stop starting deliveries; give the running ones ``stop_grace``
        seconds.  Unfinished ones stay in ``active``; the next start puts
        them back in ``incoming``."""
        self._running = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._scan_loop is not None and self._scan_loop.running:
            self._scan_loop.stop()
        self._scan_loop = None
        pending = list(self._active.values())
        if not pending:
            return
        done = defer.DeferredList(pending, consumeErrors=True)
        timeout = self.reactor.callLater(self.settings.stop_grace, done.cancel)
        try:
            await done
        except defer.CancelledError:
            log.warning("stop: %d deliveries still running; they will be retried", len(pending))
        finally:
            if timeout.active():
                timeout.cancel()

    def reconfigure(self, settings: ManagerSettings) -> None:
        """Reload: new limits apply from now on."""
        old = self.settings
        self.settings = settings
        for key, dest in self._dests.items():
            dest.limit = settings.concurrency(key.split(":", 1)[0])
            dest.pump()
        if old.retry.queue_run_delay != settings.retry.queue_run_delay and self._running:
            if self._scan_loop is not None and self._scan_loop.running:
                self._scan_loop.stop()
            self._scan_loop = None
            self._start_scan_loop()
        self._kick()

    def _start_scan_loop(self) -> None:
        if self._scan_loop is not None:
            return
        loop = task.LoopingCall(self.scan)
        loop.clock = self.reactor
        self._scan_loop = loop
        loop.start(max(1.0, self.settings.retry.queue_run_delay), now=False).addErrback(
            lambda f: log.error("queue rescan stopped: %s", f.getTraceback())
        )

    # -- inputs -------------------------------------------------------------
    def submit(self, envelope: Envelope) -> None:
        """A message was committed to ``incoming``: deliver it soon."""
        self._enqueue(envelope.queue_id, "incoming", envelope)
        self._kick()

    def flush(self) -> int:
        """``mta flush``: every deferred message is due now (and any that a
        tool put in ``deferred`` since the last scan, once it is seen)."""
        n = self.scheduler.make_all_due(self._now())
        self._flush_after_scan = True
        self.scan()
        self._kick()
        return n

    def request(self, word: str, queue_id: str = "") -> None:
        """A request from the tools (:mod:`mta.queue.trigger`)."""
        if word == "scan":
            self.scan()
        elif word == "flush":
            self.flush()
        elif word == "release":
            self._due_now.add(queue_id)
            if queue_id in self.scheduler:
                self.scheduler.schedule(queue_id, self._now())
            self.scan()
        elif word in ("hold", "delete", "requeue"):
            if queue_id in self._active:
                self._requests[queue_id] = word
                log.info("%s: %s after the current delivery attempt", queue_id, word)
            else:
                defer.Deferred.fromCoroutine(self._apply_request(word, queue_id))

    async def _apply_request(self, word: str, queue_id: str) -> None:
        """A tool saw the message in ``active`` and asked us; the attempt is
        over by now, so do what it asked where the message is."""
        from mta.queue.tools import requeue_edit  # tools import this module

        live = ("incoming", "deferred", "hold")
        try:
            if word == "hold":
                await self._in_thread(self.store.tool_move, queue_id, "hold", sources=live)
            elif word == "delete":
                await self._in_thread(self.store.tool_delete, queue_id, sources=live)
            else:
                await self._in_thread(
                    lambda: self.store.tool_move(
                        queue_id, "incoming", sources=live, edit=requeue_edit(self._now())
                    )
                )
        except (OSError, ValueError) as e:
            log.error("%s: cannot %s: %s", queue_id, word, e)
        self.scan()

    @property
    def active_count(self) -> int:
        return len(self._active)

    def deferred_envelopes(self) -> list[Envelope]:
        """The deferred messages held in memory, for the statistics service:
        read-only (copies of the list, not of the envelopes — do not change them)."""
        return list(self._envelopes.values())

    # -- rescanning the queue directories -----------------------------------
    def scan(self) -> defer.Deferred[None]:
        """List the queue directories (in a thread) and reconcile: new
        messages in ``incoming`` and ``deferred`` are taken up, deferred
        ones that left are forgotten.  Overlapping calls coalesce."""
        if self._scanning:
            self._scan_again = True
            return defer.succeed(None)
        d = defer.Deferred.fromCoroutine(self._scan())
        d.addErrback(lambda f: log.error("queue scan failed: %s", f.getTraceback()))
        return d

    async def _scan(self) -> None:
        self._scanning = True
        try:
            while True:
                self._scan_again = False
                await self._scan_once()
                if not self._scan_again or not self._running:
                    break
        finally:
            self._scanning = False
        if self._flush_after_scan:
            self._flush_after_scan = False
            self.scheduler.make_all_due(self._now())
        self._kick()

    async def _scan_once(self) -> None:
        try:
            listing = await self._in_thread(self.store.listing)
        except OSError as e:
            log.error("cannot list the queue: %s", e)
            return
        if not self._running:
            return
        self.store.apply_listing(listing)
        incoming: set[str] = listing.complete.get("incoming", set())
        deferred: set[str] = listing.complete.get("deferred", set())
        now = self._now()
        for qid in sorted(incoming):
            if qid in self._active or qid in self._queued or qid in self._parked:
                continue
            if qid in self._envelopes:  # requeued by a tool: no longer deferred
                self._forget_deferred(qid)
            self._enqueue(qid, "incoming", None)
        unknown = sorted(
            q
            for q in deferred
            if q not in self._active and q not in self._envelopes and q not in self._parked
        )
        if unknown:
            loaded = await self._in_thread(_load_many, self.store, "deferred", unknown)
            for qid, env in loaded:
                if qid in self._active or qid in self._envelopes or qid in self._parked:
                    continue  # came and went while we read
                if isinstance(env, ValueError):
                    self._quarantine("deferred", qid, f"unreadable envelope: {env}")
                    continue
                if isinstance(env, OSError):
                    continue  # moved on meanwhile
                self._envelopes[qid] = env
                due = now if qid in self._due_now else (env.next_try or now)
                self.scheduler.schedule(qid, due)
        for qid in self._due_now & set(self._envelopes):
            if qid in self.scheduler:
                self.scheduler.schedule(qid, now)
        self._due_now.clear()
        # Deferred messages a tool took away (hold, delete, requeue).
        for qid in [q for q in self._envelopes if q not in deferred]:
            if qid in self._parked or qid in self._active:
                continue
            if not self.store.exists("deferred", qid):
                self._forget_deferred(qid)

    def _forget_deferred(self, qid: str) -> None:
        self._envelopes.pop(qid, None)
        self.scheduler.remove(qid)

    # -- scheduling ---------------------------------------------------------
    def _enqueue(self, qid: str, state: str, env: Envelope | None) -> None:
        if qid in self._queued or qid in self._active:
            return
        # Keep the envelope only while the backlog is short: a flood waits
        # on disk, not in memory.
        keep = env if len(self._backlog) < self.settings.active_limit else None
        self._backlog.append((qid, state, keep))
        self._queued.add(qid)

    def _kick(self) -> None:
        if not self._running:
            return
        room = self.settings.active_limit - len(self._active)
        while room > 0 and self._backlog:
            qid, state, env = self._backlog.popleft()
            self._queued.discard(qid)
            if qid in self._active:
                continue
            if self._activate(qid, state, env):
                room -= 1
        while room > 0:
            due = self.scheduler.pop_due(self._now(), room)
            if not due:
                break
            for qid in due:
                if qid in self._active:
                    continue
                if self._activate(qid, "deferred", self._envelopes.get(qid)):
                    room -= 1
        self._arm_timer()

    def _arm_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        due = self.scheduler.next_due()
        if due is None or not self._running:
            return
        delay = max(0.0, due - self._now())
        self._timer = self.reactor.callLater(delay, self._kick)

    def _destination_key(self, route: Route, address: str) -> str:
        """What the concurrency limit counts against: the route's next hop;
        with a recipient limit of 1, each recipient (Postfix)."""
        if self.settings.recipients(route.transport) == 1:
            return f"{route.key}:{address.lower()}"
        return route.key

    def _activate(self, qid: str, state: str, env: Envelope | None) -> bool:
        """Move one message into ``active`` and start its attempt; False
        when it is gone, damaged, or parked behind a busy destination."""
        if env is None:
            try:
                env = self.store.load(state, qid)
            except ValueError as e:
                self._quarantine(state, qid, f"unreadable envelope: {e}")
                return False
            except OSError:
                return False  # gone: a tool moved or deleted it
        if state == "incoming" and env.extra.get("hold"):
            return False  # smtpd is moving it to hold (HOLD action)
        router = self.settings.router
        via = env.extra.get("filter")  # FILTER: all recipients to the content filter
        for rcpt in env.pending:
            route = router.via(via) if via else router.route(rcpt.address)
            key = self._destination_key(route, rcpt.address)
            dest = self._dests.get(key)
            if dest is not None and dest.congested:
                self._parked[qid] = (state, env if state == "deferred" else None)
                dest.parked.append(qid)
                return False
        try:
            self.store.move(qid, state, "active")
        except OSError as e:
            # Gone (deleted by `mta queue delete`) or moved by a tool.
            log.info("%s: not activated: %s", qid, e)
            if state == "deferred":
                self._forget_deferred(qid)
            return False
        if state == "deferred":
            self._envelopes.pop(qid, None)
        fresh = self._dirty.pop(qid, None)
        if fresh is None:
            try:
                fresh = self.store.load("active", qid)
            except (OSError, ValueError) as e:
                self._quarantine("active", qid, f"unreadable envelope: {e}")
                return False
        self._start(fresh)
        return True

    def _start(self, env: Envelope) -> None:
        qid = env.queue_id
        self.maillog.line(
            "qmgr",
            f"{qid}: from=<{env.sender}>, size={env.size}, "
            f"nrcpt={len(env.recipients)} (queue active)",
        )
        run = _Run(env, self.store.message_path("active", qid))
        d = defer.Deferred.fromCoroutine(self._process(run))
        self._active[qid] = d

        def finished(result: object) -> None:
            self._active.pop(qid, None)
            if isinstance(result, Failure):
                if isinstance(result.value, defer.CancelledError) or not self._running:
                    return  # stopping: it stays in active for the next start
                log.error("%s: queue manager error: %s", qid, result.getTraceback())
                self._recover_from_error(env, result.getErrorMessage())
            self._kick()

        d.addBoth(finished)

    def _recover_from_error(self, env: Envelope, why: str) -> None:
        """An attempt failed inside mta: keep what it learned in memory, try
        again after the minimal backoff."""
        qid = env.queue_id
        env.next_try = self._now() + self.settings.retry.minimal_backoff
        self._dirty[qid] = env
        try:
            self.store.move(qid, "active", "deferred")
        except OSError as e:
            log.error("%s: cannot defer after an error: %s", qid, e)
            return
        self._envelopes[qid] = env
        self.scheduler.schedule(qid, env.next_try)
        self._report("software", f"queue manager error for {qid}", f"{qid}: {why}", env)

    # -- one message ----------------------------------------------------------
    async def _process(self, run: _Run) -> None:
        env = run.env
        router = self.settings.router
        groups: dict[str, tuple[Route, list[Recipient]]] = {}
        via = env.extra.get("filter")  # FILTER: all recipients to the content filter
        for rcpt in env.pending:
            route = router.via(via) if via else router.route(rcpt.address)
            key = self._destination_key(route, rcpt.address)
            groups.setdefault(key, (route, []))[1].append(rcpt)
        jobs: list[defer.Deferred[None]] = []
        chunks = []
        for key, (route, rcpts) in groups.items():
            step = self.settings.recipients(route.transport)
            for i in range(0, len(rcpts), step):
                chunks.append((key, route, rcpts[i : i + step]))
        run.jobs_left = len(chunks)
        for key, route, part in chunks:
            jobs.append(defer.Deferred.fromCoroutine(self._deliver_group(run, key, route, part)))
        results = await defer.DeferredList(jobs, consumeErrors=True)
        for ok, value in results:
            if not ok:
                assert isinstance(value, Failure)
                value.raiseException()  # CancelledError at stop; a bug otherwise
        await self._finish(run)

    async def _deliver_group(
        self, run: _Run, key: str, route: Route, rcpts: list[Recipient]
    ) -> None:
        env = run.env
        dest = self._dests.get(key)
        if dest is None:
            dest = self._dests[key] = _Destination(self.settings.concurrency(route.transport))
        await dest.acquire()
        started = self._now()
        try:
            try:
                attempt = await self.deliver(route, env, rcpts, run.path)
            except defer.CancelledError:
                raise
            except Exception as e:  # a bug in delivery must not lose the message
                log.exception("%s: delivery to %s raised", env.queue_id, route.key)
                run.software_error = f"delivery to {route.key} failed: {e!r}"
                reply = Reply(451, "3.0", f"internal error: {e}")
                attempt = Attempt([reply] * len(rcpts), "none", route.transport)
        finally:
            dest.release()
            self._unpark(dest)
            if dest.idle:
                self._dests.pop(key, None)
        self._record(run, route, rcpts, attempt, started)
        run.jobs_left -= 1
        if run.jobs_left > 0 and any(r.state.is_final for r in rcpts):
            # Other deliveries of this message are still under way: save
            # what is final now, so a crash does not deliver it twice.
            await self._save(run, "active")

    def _unpark(self, dest: _Destination) -> None:
        moved = False
        while dest.parked and not dest.congested:
            qid = dest.parked.popleft()
            entry = self._parked.pop(qid, None)
            if entry is None:
                continue
            state, env = entry
            self._backlog.appendleft((qid, state, env))
            self._queued.add(qid)
            moved = True
            break  # one at a time: its deliveries may congest the destination again
        if moved:
            self.reactor.callLater(0, self._kick)

    def _record(
        self, run: _Run, route: Route, rcpts: list[Recipient], attempt: Attempt, started: float
    ) -> None:
        env = run.env
        now = self._now()
        delay = now - env.arrival_time
        delays = f"{format_delay(started - env.arrival_time)}/0/{format_delay(now - started)}/0"
        remote: list[bool | None] = (
            list(attempt.remote) if attempt.remote is not None else [None] * len(attempt.replies)
        )
        for rcpt, reply, said in zip(rcpts, attempt.replies, remote, strict=True):
            if reply.is_permanent and self.settings.soft_bounce:
                reply = reply.as_transient()
            rcpt.reply = reply
            rcpt.relay = attempt.relay
            if reply.is_positive:
                rcpt.state = RcptState.DELIVERED
                status = "sent"
                self._on_event("delivered", 1)
                if "SUCCESS" in rcpt.notify:
                    if attempt.dsn_passed:
                        rcpt.dsn_sent = True  # the next hop reports success itself
                    else:
                        final = route.command in ("virtual", "local", "discard")
                        run.success[rcpt.address] = "delivered" if final else "relayed"
            elif reply.is_transient:
                rcpt.state = RcptState.DEFERRED
                status = "deferred"
                self._on_event("deferred", 1)
            else:
                rcpt.state = RcptState.BOUNCED
                status = "bounced"
                self._on_event("bounced", 1)
            dsn = reply.status or f"{reply.code // 100}.0.0"
            self.maillog.line(
                attempt.service,
                f"{env.queue_id}: to=<{rcpt.address}>, relay={attempt.relay}, "
                f"delay={format_delay(delay)}, delays={delays}, dsn={dsn}, status={status} "
                f"({describe(reply, attempt.relay, said)})",
            )

    async def _save(self, run: _Run, state: str) -> bool:
        """Write the sidecar (one writer at a time per message); on failure
        the in-memory envelope stays the newer one."""
        await run.lock.acquire()
        try:
            await self.store.update(state, run.env)
        except OSError as e:
            qid = run.env.queue_id
            log.error("%s: cannot save the envelope: %s", qid, e)
            self.maillog.line("qmgr", f"warning: {qid}: cannot update queue file: {e}")
            self._report(
                "resource",
                f"queue file write error for {qid}",
                f"{qid}: the envelope could not be saved: {e}",
                run.env,
            )
            return False
        finally:
            run.lock.release()
        return True

    async def _finish(self, run: _Run) -> None:
        s = self.settings
        env = run.env
        qid = env.queue_id
        now = self._now()
        env.attempts += 1
        env.last_try = now
        if run.software_error:
            self._report(
                "software", f"delivery error for {qid}", f"{qid}: {run.software_error}", env
            )
        if env.pending and s.retry.expired(env.arrival_time, now, null_sender=not env.sender):
            for r in env.pending:
                r.state = RcptState.BOUNCED
                if r.reply is None:
                    r.reply = Reply(450, "4.7", "delivery time expired")
            self.maillog.line(
                "qmgr", f"{qid}: from=<{env.sender}>, status=expired, returned to sender"
            )
        notices_sent = await self._notices(run, now)
        request = self._requests.pop(qid, None)
        if request == "delete" or (env.done and notices_sent):
            try:
                self.store.delete("active", qid)
            except OSError as e:
                log.error("%s: cannot remove: %s", qid, e)
                return
            self._dirty.pop(qid, None)
            self.maillog.line("qmgr", f"{qid}: removed")
            return
        if env.pending:
            env.next_try = s.retry.next_try(env.arrival_time, now)
        else:  # only notices are owed: try them again soon
            env.next_try = now + s.retry.minimal_backoff
        dst = "deferred"
        if request == "requeue":
            from mta.queue.tools import requeue_edit

            requeue_edit(now)(env)
            dst = "incoming"
        elif request == "hold":
            dst = "hold"
        if not await self._save(run, "active"):
            self._dirty[qid] = env
        try:
            self.store.move(qid, "active", dst)
        except OSError as e:
            log.error("%s: cannot move to %s: %s", qid, dst, e)
            return
        if dst == "deferred":
            self._envelopes[qid] = env
            self.scheduler.schedule(qid, env.next_try)
        elif dst == "incoming":
            self._enqueue(qid, "incoming", env)
        else:
            self.maillog.line("qmgr", f"{qid}: placed on hold")

    # -- notices ----------------------------------------------------------------
    async def _notices(self, run: _Run, now: float) -> bool:
        """Queue what the sender and the postmaster are owed; False when a
        notice to the sender could not be queued (it is tried again)."""
        env = run.env
        ok = True
        failed = [r for r in env.recipients if r.state is RcptState.BOUNCED and not r.dsn_sent]
        if failed:
            ok = await self._bounce(run, failed, now) and ok
        success = [
            r
            for r in env.recipients
            if r.state is RcptState.DELIVERED and not r.dsn_sent and "SUCCESS" in r.notify
        ]
        if success:
            for r in success:
                r.dsn_sent = True
            if env.sender:
                by_action: dict[str, list[Recipient]] = {}
                for r in success:
                    # An earlier attempt's notice that could not be queued: relayed.
                    action = run.success.get(r.address, "relayed")
                    by_action.setdefault(action, []).append(r)
                for action, rcpts in by_action.items():
                    new = await self._send(
                        run, sender="", to=env.sender, action=action, rcpts=rcpts, now=now
                    )
                    if new is None:
                        ok = False
                        for r in rcpts:
                            r.dsn_sent = False
                    else:
                        self._log_notice(env, "sender delivery status notification", new)
        retry = self.settings.retry
        if env.pending and retry.warning_due(env.arrival_time, now, warned=env.warned):
            await self._delay_warning(run, now)
        return ok

    async def _bounce(self, run: _Run, failed: list[Recipient], now: float) -> bool:
        s = self.settings
        env = run.env
        sender = env.sender
        if sender and (
            sender.lower() == s.double_bounce_address.lower()
            or sender.lower() == s.double_bounce_sender.lower()
        ):
            # A postmaster notice that failed: never a notice about it
            # (Postfix bounce(8): "undeliverable postmaster notification discarded").
            self.maillog.line(
                "bounce",
                f"warning: {env.queue_id}: undeliverable postmaster notification discarded",
            )
        elif not sender:
            # A notice to a sender that failed: a "double bounce", to the
            # postmaster if notify_classes asks for bounce or 2bounce.
            if s.notify_classes & {"bounce", "2bounce"}:
                new = await self._send(
                    run,
                    sender=s.double_bounce_address,
                    to=s.qualify(s.twobounce_notice_recipient),
                    action="failed",
                    rcpts=failed,
                    now=now,
                    postmaster=True,
                    returned="full",
                )
                if new is None:
                    return False
                self._log_notice(env, "postmaster non-delivery notification", new)
            else:
                self.maillog.line(
                    "bounce", f"{env.queue_id}: undeliverable bounce discarded (notify_classes)"
                )
        else:
            wanted = [r for r in failed if _wants(r, "FAILURE")]
            if wanted:
                new = await self._send(
                    run, sender="", to=sender, action="failed", rcpts=wanted, now=now
                )
                if new is None:
                    return False
                self._log_notice(env, "sender non-delivery notification", new)
            if "bounce" in s.notify_classes:
                new = await self._send(
                    run,
                    sender=s.double_bounce_address,
                    to=s.qualify(s.bounce_notice_recipient),
                    action="failed",
                    rcpts=failed,
                    now=now,
                    postmaster=True,
                )
                if new is not None:
                    self._log_notice(env, "postmaster non-delivery notification", new)
        for r in failed:
            r.dsn_sent = True
        return True

    async def _delay_warning(self, run: _Run, now: float) -> None:
        s = self.settings
        env = run.env
        until = s.retry.retry_until(env.arrival_time, null_sender=not env.sender)
        wanted = [r for r in env.pending if _wants(r, "DELAY")]
        sent = True
        if env.sender and env.sender.lower() != s.double_bounce_address.lower() and wanted:
            new = await self._send(
                run,
                sender="",
                to=env.sender,
                action="delayed",
                rcpts=wanted,
                now=now,
                retry_until=until,
            )
            if new is None:
                sent = False
            else:
                self._log_notice(env, "sender delay notification", new)
        if "delay" in s.notify_classes and env.sender:
            new = await self._send(
                run,
                sender=s.double_bounce_address,
                to=s.qualify(s.delay_notice_recipient),
                action="delayed",
                rcpts=env.pending,
                now=now,
                postmaster=True,
                retry_until=until,
            )
            if new is not None:
                self._log_notice(env, "postmaster delay notification", new)
        if sent:
            env.warned = True

    def _log_notice(self, env: Envelope, kind: str, new: str) -> None:
        self.maillog.line("bounce", f"{env.queue_id}: {kind}: {new}")

    async def _send(
        self,
        run: _Run,
        *,
        sender: str,
        to: str,
        action: str,
        rcpts: list[Recipient],
        now: float,
        postmaster: bool = False,
        returned: Literal["full", "headers", "auto"] = "auto",
        retry_until: float | None = None,
    ) -> str | None:
        """Build and queue one notice; its queue id, or None when it could
        not be queued (logged)."""
        env = run.env
        limit = max(self.settings.notice.bounce_size_limit, 1 << 18) + 1
        try:
            original: bytes = await self._in_thread(
                self.store.read_message, "active", env.queue_id, limit
            )
        except OSError as e:
            log.error("%s: cannot read message for notice: %s", env.queue_id, e)
            original = b""
        body = build_notice(
            envelope=env,
            recipients=rcpts,
            action=action,  # type: ignore[arg-type]
            original=original,
            settings=self.settings.notice,
            now=now,
            to=to,
            postmaster=postmaster,
            returned=returned,
            retry_until=retry_until,
        )
        try:
            return await self.inject(
                sender=sender, recipients=[Recipient(to)], message=body, protocol="local"
            )
        except (OSError, RuntimeError) as e:
            log.error("%s: cannot queue a notice: %s", env.queue_id, e)
            self.maillog.line("bounce", f"warning: {env.queue_id}: cannot queue notice: {e}")
            return None

    def _report(self, kind: str, subject: str, text: str, env: Envelope | None) -> None:
        """A postmaster notice of class ``kind`` (resource, software), if
        notify_classes asks for it; never about a postmaster notice."""
        s = self.settings
        if kind not in s.notify_classes or not self._running:
            return
        if env is not None and env.sender.lower() == s.double_bounce_address.lower():
            return
        to = s.qualify(s.error_notice_recipient)

        async def send() -> None:
            headers = b""
            if env is not None:
                for state in ("active", "deferred"):
                    try:
                        headers = await self._in_thread(
                            self.store.read_message, state, env.queue_id, 1 << 16
                        )
                        break
                    except OSError:
                        continue
            body = build_report(
                hostname=s.hostname,
                to=to,
                subject=f"Postmaster Warning: {subject}",
                text=text,
                now=self._now(),
                headers=headers,
            )
            try:
                await self.inject(
                    sender=s.double_bounce_address,
                    recipients=[Recipient(to)],
                    message=body,
                    protocol="local",
                )
            except (OSError, RuntimeError) as e:
                log.error("cannot queue a postmaster notice: %s", e)

        defer.Deferred.fromCoroutine(send())

    def _quarantine(self, state: str, qid: str, reason: str) -> None:
        try:
            name = self.store.quarantine(state, qid, reason)
        except OSError as e:
            log.error("%s: cannot quarantine: %s", qid, e)
            return
        self._forget_deferred(qid)
        self.maillog.line(
            "qmgr", f"warning: {qid}: queue file quarantined as corrupt/{name}: {reason}"
        )
        self._report("software", f"corrupt queue file {qid}", f"{qid}: {reason}", None)

    async def inject(
        self, *, sender: str, recipients: list[Recipient], message: bytes, protocol: str
    ) -> str:
        """Queue a locally made message (a notice) and schedule it."""
        msg = self.store.begin()
        try:
            msg.write(message)
            env = Envelope(
                queue_id=msg.queue_id,
                sender=sender,
                recipients=recipients,
                arrival_time=self._now(),
                size=len(message),
                protocol=protocol,
                body="8BITMIME",
            )
            await self.store.commit(msg, env)
        except BaseException:
            msg.abort()
            raise
        self.maillog.line(
            "cleanup",
            f"{env.queue_id}: message-id=<notice-{env.queue_id}@{self.settings.hostname}>",
        )
        self.submit(replace(env))
        return env.queue_id


def _wants(rcpt: Recipient, what: str) -> bool:
    """RFC 3461 4.1: NOTIFY=NEVER never; no NOTIFY means FAILURE,DELAY."""
    if "NEVER" in rcpt.notify:
        return False
    return not rcpt.notify or what in rcpt.notify


def _load_many(
    store: QueueStoreLike, state: str, ids: Iterable[str]
) -> list[tuple[str, Envelope | OSError | ValueError]]:
    """Read many sidecars (in a thread); errors are returned, not raised."""
    out: list[tuple[str, Envelope | OSError | ValueError]] = []
    for qid in ids:
        try:
            out.append((qid, store.load(state, qid)))
        except (OSError, ValueError) as e:
            out.append((qid, e))
    return out
