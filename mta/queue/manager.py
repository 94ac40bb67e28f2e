"""The queue manager: moves messages through the queue and hands them to delivery.

Postfix's qmgr in one object.  Inputs: messages committed to ``incoming``
by the SMTP server or ``mta sendmail``, and the store's contents at start.
Outputs: delivery attempts (through a delivery function), state changes on
disk (active → deferred or removed), delivery status notices queued as new
messages, and mail log lines.

Scheduling decisions live in :mod:`mta.queue.scheduler` (pure); this module
holds the effects.  Limits: at most ``qmgr_message_active_limit`` messages in
``active`` at once, at most ``*_destination_concurrency_limit`` deliveries to
one destination at once, at most ``*_destination_recipient_limit``
recipients per delivery, so one slow destination cannot starve the rest.
"""

from __future__ import annotations

import collections
import logging
import time as _time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from twisted.internet import defer, threads
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from mta.bounce import NoticeSettings, build_notice
from mta.delivery.route import Route, Router
from mta.envelope import Envelope, RcptState, Recipient
from mta.maillog import MailLog
from mta.queue.scheduler import RetryPolicy, Scheduler
from mta.reply import Reply

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attempt:
    """What a delivery function returns: one reply per recipient, in order,
    and the relay that gave them (``host[ip]:port`` or ``none``)."""

    replies: list[Reply]
    relay: str


class DeliverFunction(Protocol):
    def __call__(
        self, route: Route, envelope: Envelope, recipients: list[Recipient], message_path: Path
    ) -> Awaitable[Attempt]: ...


@dataclass(frozen=True)
class ManagerSettings:
    hostname: str = "localhost"
    router: Router = field(default_factory=Router)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    active_limit: int = 20000  # qmgr_message_active_limit
    destination_concurrency: int = 20  # smtp_destination_concurrency_limit
    destination_recipients: int = 50  # smtp_destination_recipient_limit
    soft_bounce: bool = False
    notice: NoticeSettings = field(default_factory=lambda: NoticeSettings("localhost"))
    double_bounce_sender: str = "double-bounce"
    stop_grace: float = 10.0  # seconds in-flight deliveries get at stop


class QueueStoreLike(Protocol):
    def begin(self) -> Any: ...
    async def commit(self, msg: Any, envelope: Envelope) -> None: ...
    def move(self, queue_id: str, src: str, dst: str) -> None: ...
    async def update(self, state: str, envelope: Envelope) -> None: ...
    def delete(self, state: str, queue_id: str) -> None: ...
    def message_path(self, state: str, queue_id: str) -> Path: ...
    def load(self, state: str, queue_id: str) -> Envelope: ...


def _read_file(path: Path) -> bytes:
    return path.read_bytes()


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
    ) -> None:
        self.reactor = reactor
        self.store = store
        self.settings = settings
        self.deliver = deliver
        self.maillog = maillog
        self._now = clock or reactor.seconds
        self._on_event = on_event or (lambda kind, n: None)
        self.scheduler = Scheduler()
        self._envelopes: dict[str, Envelope] = {}  # deferred ones, by id
        self._backlog: collections.deque[tuple[str, Envelope, str]] = collections.deque()
        self._active: dict[str, defer.Deferred[None]] = {}
        self._dest_sems: dict[str, defer.DeferredSemaphore] = {}
        self._timer: IDelayedCall | None = None
        self._running = False

    # -- life cycle ---------------------------------------------------------
    def start(self, recovered: Sequence[tuple[str, Envelope]]) -> None:
        """Rebuild the schedule from the store: incoming and active are due
        now, deferred when their time comes, hold never."""
        self._running = True
        now = self._now()
        for state, env in recovered:
            if state in ("incoming", "active"):
                self._backlog.append((env.queue_id, env, state))
            elif state == "deferred":
                self._envelopes[env.queue_id] = env
                self.scheduler.schedule(env.queue_id, min(env.next_try, now + 1e9))
        self._kick()

    async def stop(self) -> None:
        """Stop starting deliveries; give the running ones ``stop_grace``
        seconds.  Unfinished ones stay in ``active`` and run again at start."""
        self._running = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
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
        """Reload: new limits apply to deliveries that start from now on."""
        self.settings = settings
        self._dest_sems.clear()

    # -- inputs -------------------------------------------------------------
    def submit(self, envelope: Envelope) -> None:
        """A message was committed to ``incoming``: deliver it soon."""
        self._backlog.append((envelope.queue_id, envelope, "incoming"))
        self._kick()

    def flush(self) -> int:
        """``mta flush``: every deferred message is due now."""
        n = self.scheduler.make_all_due(self._now())
        self._kick()
        return n

    @property
    def active_count(self) -> int:
        return len(self._active)

    # -- scheduling ---------------------------------------------------------
    def _kick(self) -> None:
        if not self._running:
            return
        room = self.settings.active_limit - len(self._active)
        while room > 0 and self._backlog:
            qid, env, state = self._backlog.popleft()
            if qid in self._active:
                continue
            self._activate(qid, env, state)
            room -= 1
        if room > 0:
            for qid in self.scheduler.pop_due(self._now(), room):
                due = self._envelopes.pop(qid, None)
                if due is not None and qid not in self._active:
                    self._activate(qid, due, "deferred")
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

    def _activate(self, qid: str, env: Envelope, state: str) -> None:
        try:
            if state != "active":
                self.store.move(qid, state, "active")
        except OSError as e:
            # Gone (deleted by `mta queue delete`) or moved by a tool.
            log.info("%s: not activated: %s", qid, e)
            return
        if env.attempts == 0 and state == "incoming":
            self.maillog.line(
                "qmgr",
                f"{qid}: from=<{env.sender}>, size={env.size}, "
                f"nrcpt={len(env.recipients)} (queue active)",
            )
        d = defer.Deferred.fromCoroutine(self._process(env))
        self._active[qid] = d

        def finished(result: object) -> None:
            self._active.pop(qid, None)
            if isinstance(result, Failure):
                log.error("%s: delivery failed unexpectedly: %s", qid, result.getTraceback())
                # Leave it in active; retry after the minimal backoff.
                env.next_try = self._now() + self.settings.retry.minimal_backoff
                self._defer_in_memory(env)
            self._kick()

        d.addBoth(finished)

    def _defer_in_memory(self, env: Envelope) -> None:
        try:
            self.store.move(env.queue_id, "active", "deferred")
        except OSError:
            return
        self._envelopes[env.queue_id] = env
        self.scheduler.schedule(env.queue_id, env.next_try)

    # -- one message ----------------------------------------------------------
    async def _process(self, env: Envelope) -> None:
        s = self.settings
        qid = env.queue_id
        path = self.store.message_path("active", qid)
        now = self._now()
        if s.retry.expired(env.arrival_time, now, null_sender=not env.sender) and env.attempts:
            for r in env.pending:
                last = r.reply.one_line() if r.reply else "delivery time expired"
                r.state = RcptState.BOUNCED
                r.reply = Reply(500, "4.7", f"message delivery time exceeded: {last}")
            self.maillog.line(
                "qmgr", f"{qid}: from=<{env.sender}>, status=expired, returned to sender"
            )
        else:
            groups: dict[Route, list[Recipient]] = {}
            for r in env.pending:
                groups.setdefault(s.router.route(r.address), []).append(r)
            jobs = []
            for route, rcpts in groups.items():
                step = max(1, s.destination_recipients)
                for i in range(0, len(rcpts), step):
                    jobs.append(
                        defer.Deferred.fromCoroutine(
                            self._deliver_group(route, env, rcpts[i : i + step], path)
                        )
                    )
            await defer.gatherResults(jobs, consumeErrors=True)
        await self._finish(env, path)

    async def _deliver_group(
        self, route: Route, env: Envelope, rcpts: list[Recipient], path: Path
    ) -> None:
        sem = self._dest_sems.get(route.key)
        if sem is None:
            sem = self._dest_sems[route.key] = defer.DeferredSemaphore(
                max(1, self.settings.destination_concurrency)
            )
        await sem.acquire()
        started = self._now()
        try:
            try:
                attempt = await self.deliver(route, env, rcpts, path)
            except Exception as e:  # a bug in delivery must not lose the message
                log.exception("%s: delivery to %s raised", env.queue_id, route.key)
                attempt = Attempt([Reply(451, "3.0", f"internal error: {e}")] * len(rcpts), "none")
        finally:
            sem.release()
        self._record(env, rcpts, attempt, started)

    def _record(
        self, env: Envelope, rcpts: list[Recipient], attempt: Attempt, started: float
    ) -> None:
        now = self._now()
        delay = now - env.arrival_time
        delays = f"{max(0.0, started - env.arrival_time):.2g}/0/{now - started:.2g}/0"
        for rcpt, reply in zip(rcpts, attempt.replies, strict=True):
            if reply.is_permanent and self.settings.soft_bounce:
                reply = reply.as_transient()
            rcpt.reply = reply
            rcpt.relay = attempt.relay
            if reply.is_positive:
                rcpt.state = RcptState.DELIVERED
                status = "sent"
                self._on_event("delivered", 1)
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
                "smtp",
                f"{env.queue_id}: to=<{rcpt.address}>, relay={attempt.relay}, "
                f"delay={delay:.2g}, delays={delays}, dsn={dsn}, status={status} "
                f"({_describe(reply, attempt.relay)})",
            )

    async def _finish(self, env: Envelope, path: Path) -> None:
        s = self.settings
        qid = env.queue_id
        now = self._now()
        env.attempts += 1
        env.last_try = now
        to_report = [r for r in env.recipients if r.state is RcptState.BOUNCED and not r.dsn_sent]
        if to_report:
            await self._notify(env, to_report, "failed", path)
        success = [
            r
            for r in env.recipients
            if r.state is RcptState.DELIVERED and not r.dsn_sent and "SUCCESS" in r.notify
        ]
        if success:
            await self._notify(env, success, "delivered", path)
        if env.done:
            self.store.delete("active", qid)
            self.maillog.line("qmgr", f"{qid}: removed")
            return
        if s.retry.warning_due(env.arrival_time, now, warned=env.warned):
            delayed = [r for r in env.pending if not r.notify or "DELAY" in r.notify]
            if delayed:
                await self._notify(env, delayed, "delayed", path, mark=False)
            env.warned = True
        env.next_try = now + s.retry.backoff(env.attempts)
        await self.store.update("active", env)
        self._defer_in_memory(env)

    async def _notify(
        self, env: Envelope, rcpts: list[Recipient], action: str, path: Path, mark: bool = True
    ) -> None:
        """Queue a DSN about ``rcpts`` to the sender (RFC 3461 NOTIFY rules)."""
        if mark:
            for r in rcpts:
                r.dsn_sent = True
        wanted = [
            r
            for r in rcpts
            if "NEVER" not in r.notify
            and (
                not r.notify
                or {"failed": "FAILURE", "delayed": "DELAY"}.get(action, "SUCCESS") in r.notify
            )
        ]
        if not wanted:
            return
        if not env.sender or env.sender == self.settings.double_bounce_sender:
            # A notice about a notice would loop (RFC 3461 6.2): log, don't send.
            self.maillog.line(
                "bounce", f"{env.queue_id}: undeliverable postmaster notification discarded"
            )
            return
        try:
            original = await threads.deferToThreadPool(
                self.reactor, self.reactor.getThreadPool(), _read_file, path
            )
        except OSError as e:
            log.error("%s: cannot read message for notice: %s", env.queue_id, e)
            original = b""
        body = build_notice(
            envelope=env,
            recipients=wanted,
            action=action,  # type: ignore[arg-type]
            original=original,
            settings=self.settings.notice,
            now=_time.time(),
        )
        new = await self.inject(
            sender="", recipients=[Recipient(env.sender)], message=body, protocol="local"
        )
        kind = {
            "failed": "non-delivery",
            "delayed": "delay",
            "delivered": "delivery status",
        }[action]
        self.maillog.line("bounce", f"{env.queue_id}: sender {kind} notification: {new}")

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
                arrival_time=_time.time(),
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


def _describe(reply: Reply, relay: str) -> str:
    host = relay.split(":", 1)[0] if relay and relay != "none" else ""
    if (
        host
        and not reply.is_positive
        and reply.code < 600
        and not reply.text.startswith(
            ("connect to", "lost connection", "conversation with", "Host or domain")
        )
    ):
        return f"host {host} said: {reply.one_line()}"
    return reply.one_line()
