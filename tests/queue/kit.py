"""A queue manager on a test bench: a real QueueStore in a temporary
directory whose fsyncs complete at once, a ``task.Clock`` for time, a fake
delivery function whose replies the test decides (or holds back), and the
mail log captured in memory.  Everything runs synchronously on the test's
thread: no reactor, no sleeps."""

from __future__ import annotations

import email
import email.message
import io
import os
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from twisted.internet import defer, task
from twisted.python.failure import Failure

from mta.bounce import NoticeSettings
from mta.delivery.route import Route
from mta.envelope import Envelope, Recipient
from mta.maillog import MailLog
from mta.queue.manager import Attempt, ManagerSettings, QueueManager
from mta.queue.scheduler import RetryPolicy
from mta.queue.store import QueueStore
from mta.reply import Reply

T0 = 1_700_000_000.0  # a plausible "now" for arrival times
BODY = b"Subject: test\r\nMessage-Id: <t@example.org>\r\n\r\nhello\r\n"


class InstantSyncer:
    """GroupSyncer's interface, fsyncing nothing: the bench tests the
    manager's decisions, not durability (tests/queue/test_store.py does)."""

    running = True

    def __init__(self) -> None:
        self.fail_updates = 0  # the next N sidecar updates raise ENOSPC

    @staticmethod
    def fsync(fd: int) -> None:
        return None

    async def sync_fds(self, fds: Iterable[int]) -> None:
        fds = list(fds)
        for fd in fds:
            os.close(fd)
        if self.fail_updates and len(fds) == 1:  # an update (a commit syncs two)
            self.fail_updates -= 1
            raise OSError(28, "No space left on device")

    async def sync_dir(self, path: object) -> None:
        return None

    async def sync_dirs(self, paths: Iterable[object]) -> None:
        return None


def run_now(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never really waits, and return its result."""
    out: list[object] = []
    defer.Deferred.fromCoroutine(coro).addBoth(out.append)
    assert out, "the coroutine waited for something"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def in_thread_now(f: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
    return defer.maybeDeferred(f, *args)


@dataclass
class Call:
    """One delivery the manager asked for."""

    time: float
    route: Route
    sender: str
    recipients: list[str]
    message: bytes
    result: defer.Deferred[Attempt] | None = None  # set when held back

    def answer(self, *codes: int | Reply, relay: str = "mx.example[192.0.2.1]:25") -> None:
        assert self.result is not None and not self.result.called
        self.result.callback(attempt(codes, len(self.recipients), relay))


def reply_for(code: int | Reply) -> Reply:
    if isinstance(code, Reply):
        return code
    texts = {
        250: ("2.0.0", "Ok: queued"),
        450: ("4.2.0", "mailbox busy, try later"),
        451: ("4.3.0", "temporary failure"),
        550: ("5.1.1", "no such user"),
        552: ("5.2.2", "mailbox full"),
    }
    status, text = texts.get(code, ("", "reply"))
    return Reply.make(code, status or None, text)


def attempt(codes: Iterable[int | Reply], n: int, relay: str) -> Attempt:
    replies = [reply_for(c) for c in codes]
    if len(replies) == 1 and n > 1:
        replies = replies * n
    return Attempt(replies, relay, "smtp", [True] * n)


Policy = Callable[[str], "int | Reply | None"]  # recipient -> code (None: hold back)


@dataclass
class Bench:
    root: Path
    settings: ManagerSettings
    policy: Policy = field(default=lambda rcpt: 250)
    clock: task.Clock = field(default_factory=task.Clock)
    calls: list[Call] = field(default_factory=list)
    log_stream: io.StringIO = field(default_factory=io.StringIO)

    def __post_init__(self) -> None:
        self.clock.advance(T0)
        self.syncer = InstantSyncer()
        self.store = QueueStore(self.root, self.syncer)  # type: ignore[arg-type]
        self.store.create_layout()
        self.maillog = MailLog(None, "mx.test.example", stream=self.log_stream, clock=self.now)
        self.manager = QueueManager(
            self.clock,
            self.store,
            self.settings,
            self.deliver,
            self.maillog,
            clock=self.clock.seconds,
            run_in_thread=in_thread_now,
        )

    def now(self) -> float:
        return self.clock.seconds()

    # -- the fake delivery agent ------------------------------------------------
    def deliver(
        self, route: Route, env: Envelope, rcpts: list[Recipient], path: Path
    ) -> defer.Deferred[Attempt]:
        call = Call(self.now(), route, env.sender, [r.address for r in rcpts], path.read_bytes())
        self.calls.append(call)
        codes = [self.policy(r.address) for r in rcpts]
        if any(c is None for c in codes):
            call.result = defer.Deferred()
            return call.result
        return defer.succeed(
            attempt([c for c in codes if c is not None], len(rcpts), "mx.example[192.0.2.1]:25")
        )

    # -- driving ----------------------------------------------------------------
    def start(self) -> None:
        self.manager.start(self.store.recover())

    def queue(
        self,
        sender: str = "alice@example.org",
        rcpts: Iterable[str | Recipient] = ("bob@example.net",),
        body: bytes = BODY,
        *,
        submit: bool = True,
        **fields: Any,
    ) -> str:
        """Commit a message to incoming as smtpd does, and hand it over."""
        msg = self.store.begin()
        msg.write(body)
        recipients = [r if isinstance(r, Recipient) else Recipient(r) for r in rcpts]
        env = Envelope(msg.queue_id, sender, recipients, self.now(), **fields)
        run_now(self.store.commit(msg, env))
        if submit:
            self.manager.submit(replace(env, recipients=[replace(r) for r in recipients]))
        return msg.queue_id

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def run_until(self, when: float, step: float = 1.0) -> None:
        while self.now() < when:
            self.advance(min(step, when - self.now()))

    # -- looking ----------------------------------------------------------------
    def state(self, qid: str) -> str | None:
        return self.store.find(qid)

    def log(self) -> str:
        return self.log_stream.getvalue()

    def notices(self) -> list[Call]:
        """Deliveries of notices the manager made (they are Auto-Submitted)."""
        return [c for c in self.calls if b"\r\nAuto-Submitted: auto-" in c.message]

    def user_calls(self) -> list[Call]:
        return [c for c in self.calls if c not in self.notices()]


def make_settings(**kw: Any) -> ManagerSettings:
    retry = kw.pop("retry", None) or RetryPolicy(
        minimal_backoff=kw.pop("minimal_backoff", 300.0),
        maximal_backoff=kw.pop("maximal_backoff", 4000.0),
        queue_lifetime=kw.pop("queue_lifetime", 5 * 86400.0),
        bounce_lifetime=kw.pop("bounce_lifetime", 5 * 86400.0),
        delay_warning=kw.pop("delay_warning", 0.0),
        queue_run_delay=kw.pop("queue_run_delay", 300.0),
    )
    notice = NoticeSettings(
        "mx.test.example",
        delay_warning_time=retry.delay_warning,
        queue_lifetime=retry.queue_lifetime,
    )
    base: dict[str, Any] = dict(
        hostname="mx.test.example", myorigin="test.example", retry=retry, notice=notice
    )
    base.update(kw)
    return ManagerSettings(**base)


def parse(message: bytes) -> email.message.Message:
    return email.message_from_bytes(message)


def report_fields(message: bytes) -> list[dict[str, str]]:
    """The delivery-status part as a list of field groups (per message first)."""
    msg = parse(message)
    for part in msg.walk():
        if part.get_content_type() in ("message/delivery-status", "message/global-delivery-status"):
            groups = []
            for sub in part.get_payload():  # type: ignore[union-attr]
                groups.append({k.lower(): str(v) for k, v in sub.items()})
            return groups
    raise AssertionError("no delivery-status part")
