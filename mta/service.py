"""The daemon: builds the service tree, reloads, stops gracefully.

Input: a validated Config.  Output: running listeners (one per master.cf
smtpd service), the queue store and manager, the mail log, the pid file.
SIGHUP re-reads everything (:meth:`MTAService.reload`): a configuration that
fails the start-up check is refused with a logged reason and the old one
keeps serving; otherwise new settings are swapped in whole — sessions already
open finish under the settings they started with, listeners whose address
changed are re-bound.  SIGTERM (the reactor's stop) lets open transactions
finish for up to 10 seconds (INTERFACE.md), never losing accepted mail.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.python.failure import Failure

from mta import settings, systemd
from mta.check import full_check
from mta.config import Config, MasterService
from mta.config.properties import apply_timezone, read_properties
from mta.delivery.agent import DeliveryAgent
from mta.envelope import Envelope
from mta.maillog import LogFormat, MailLog
from mta.policy.runtime import PolicyRuntime
from mta.queue import trigger
from mta.queue.diskspace import DiskSpace
from mta.queue.manager import QueueManager
from mta.queue.store import QueueStore
from mta.queue.sync import GroupSyncer
from mta.smtpd import SmtpdFactory, SmtpdListenerFactory, SMTPServerProtocol
from mta.stats.counters import Counters
from mta.stats.options import exposure_warnings, stats_options
from mta.stats.recent import RecentDeliveries
from mta.stats.snapshot import Sources, StatsView
from mta.stats.web import StatsListener

log = logging.getLogger(__name__)

DRAINING_FILE = "draining"  # in $queue_directory/pid while a stop finishes
STOP_GRACE = 10.0  # seconds open transactions get at stop (INTERFACE.md)


@dataclass
class Listener:
    service: str
    addresses: tuple[tuple[str, int], ...]
    factory: SmtpdFactory
    ports: list[IListeningPort]


def bind_addresses(cfg: Config, svc: MasterService) -> tuple[tuple[str, int], ...]:
    """Where a listener binds: its own host, else ``inet_interfaces``."""
    host, port = svc.listen_address()
    if host:
        return ((host, port),)
    hosts: list[str] = []
    protocols = cfg.list("inet_protocols")
    v4 = "all" in protocols or "ipv4" in protocols
    v6 = "all" in protocols or "ipv6" in protocols
    for item in cfg.list("inet_interfaces"):
        item = item.lower()
        if item == "all":
            hosts.extend((["::"] if v6 else []) + ([] if v6 else ["0.0.0.0"]))
        elif item in ("loopback-only", "localhost"):
            hosts.extend((["127.0.0.1"] if v4 else []) + (["::1"] if v6 else []))
        else:
            hosts.append(item.strip("[]"))
    return tuple((h, port) for h in dict.fromkeys(hosts))


class MTAService(service.MultiService):
    def __init__(self, confdir: Path, cfg: Config, reactor: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.confdir = confdir
        self.cfg = cfg
        self.reactor = reactor
        self.counters = Counters()
        # DNS, policy servers, address verification: kept across reloads.
        self.policy = PolicyRuntime(reactor)
        self.sessions: set[SMTPServerProtocol] = set()
        self.listeners: dict[str, Listener] = {}
        self.maillog: MailLog | None = None
        self.store: QueueStore | None = None
        self.manager: QueueManager | None = None
        self.syncer: GroupSyncer | None = None
        self.pid_file: Path | None = None
        # The statistics service reads what the daemon owns (mta.stats).
        self.recent = RecentDeliveries()
        self.stats_sources = Sources(self.counters, recent=self.recent, version=_version())
        self.stats = StatsListener(reactor, StatsView(self.stats_sources))
        # Free space of the queue file system: queue_minfree and the warnings.
        self.disk: DiskSpace | None = None
        self.trigger: trigger.TriggerReader | None = None  # the tools' wake-up FIFO

    # -- start ------------------------------------------------------------------
    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        cfg = self.cfg
        qdir = settings.queue_directory(cfg)
        qdir.mkdir(parents=True, exist_ok=True)
        apply_timezone(read_properties(self.confdir)[0])  # before the first log line
        self.maillog = self._new_maillog(cfg)
        self.syncer = GroupSyncer(self.reactor)
        self.syncer.start()
        self.store = QueueStore(qdir, self.syncer)
        self.store.create_layout()
        fifo = trigger.ensure_fifo(qdir)  # before privileges are dropped: chowned with the queue
        # The pid file tells tools where to signal; until the handlers below
        # are installed, a reload or flush signal must not kill the daemon.
        for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
            try:
                signal.signal(sig, signal.SIG_IGN)
            except ValueError:
                pass  # not the main thread
        self._write_pid(qdir)
        recovered = self.store.recover()
        self.agent = DeliveryAgent(self.reactor, cfg, log=self._delivery_log)
        self.manager = QueueManager(
            self.reactor,
            self.store,
            settings.manager(cfg),
            self.agent,
            self.maillog,
            on_event=self.counters.count,
        )
        maillog = self.maillog
        self.disk = DiskSpace(
            self.reactor,
            qdir,
            queue_minfree=cfg.size("queue_minfree"),
            log_line=lambda text: maillog.line("master", text),
        )
        self.disk.start()
        self.trigger = trigger.TriggerReader(self.reactor, fifo, self.manager.request)
        self.policy.log = lambda text: self._delivery_log("verify", text)
        try:
            for svc in cfg.listeners():
                self._open_listener(cfg, svc)
        except CannotListenError as e:
            self._fatal(f"bind {e.interface or '*'} port {e.port}: {_reason(e.socketError)}")
        try:
            self._start_stats(cfg, qdir)
        except CannotListenError as e:
            self._fatal(
                f"Error: failed to initialize the UI backend: statistics service: bind "
                f"{e.interface or '*'} port {e.port}: {_reason(e.socketError)}"
            )
        self._drop_privileges(cfg, qdir)
        self.manager.start(recovered)
        self.trigger.start()
        self.maillog.line(
            "master",
            f"daemon started -- version {_version()}, configuration {self.confdir}",
        )
        try:
            signal.signal(signal.SIGHUP, self._on_sighup)
            signal.signal(signal.SIGUSR1, self._on_sigusr1)
            signal.signal(signal.SIGUSR2, self._on_sigusr2)
        except ValueError:
            pass  # not the main thread (tests drive reload() directly)
        systemd.ready(self._status())

    def _new_maillog(self, cfg: Config) -> MailLog:
        fmt: LogFormat = "json" if cfg.str("maillog_format") == "json" else "postfix"
        return MailLog(
            settings.maillog_path(cfg),
            cfg.str("myhostname"),
            log_format=fmt,
            observers=[self.recent.observe],
        )

    def _start_stats(self, cfg: Config, qdir: Path) -> None:
        """The statistics service: bound here, before privileges are dropped."""
        assert self.maillog is not None
        src = self.stats_sources
        src.store, src.manager, src.hostname = self.store, self.manager, cfg.str("myhostname")
        src.node = cfg.str("stats_node_name")
        if self.disk is not None:
            src.disk = self.disk.snapshot
        options = stats_options(cfg)
        for warning in exposure_warnings(options) if options is not None else []:
            self.maillog.line("master", f"warning: {warning}")
        self.stats.start(options)

    def _fatal(self, message: str) -> None:
        """A start-up failure: one line on standard error and in the log, exit 1."""
        print(f"mta: fatal: {message}", file=sys.stderr, flush=True)
        if self.maillog is not None:
            self.maillog.line("master", f"fatal: {message}")
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)
        raise SystemExit(1)

    def _status(self) -> str:
        """One line for `systemctl status`."""
        ports = ", ".join(
            f"{host}:{port}" for lst in self.listeners.values() for host, port in lst.addresses
        )
        stats = self.stats.options.address if self.stats.options is not None else "off"
        return f"SMTP on {ports or 'nothing'}; statistics on {stats}"

    def _delivery_log(self, service: str, text: str) -> None:
        """Delivery agents' own log lines (TLS outcomes), to the current log."""
        if self.maillog is not None:
            self.maillog.line(service, text)

    def _submit(self, env: Envelope) -> None:
        assert self.manager is not None
        self.manager.submit(env)

    def _open_listener(self, cfg: Config, svc: MasterService) -> None:
        assert self.store is not None and self.maillog is not None
        scfg = cfg.for_service(svc)
        factory = SmtpdFactory(
            self.reactor,
            settings.smtpd(scfg, svc),
            store=self.store,
            submit=self._submit,
            maillog=self.maillog,
            counters=self.counters,
            sessions=self.sessions,
            policy=self.policy,
        )
        factory.diskspace = self.disk  # queue_minfree at MAIL FROM
        addresses = bind_addresses(scfg, svc)
        ports = [self._listen(host, port, factory) for host, port in addresses]
        self.listeners[svc.name] = Listener(svc.name, addresses, factory, ports)

    def _listen(self, host: str, port: int, factory: SmtpdFactory) -> IListeningPort:
        # Implicit TLS and the PROXY header wrap the SMTP factory per connection.
        front = SmtpdListenerFactory(factory)
        try:
            p: IListeningPort = self.reactor.listenTCP(port, front, interface=host)
        except Exception:
            if host != "::":
                raise
            # A machine without IPv6: "all" falls back to every IPv4 address.
            p = self.reactor.listenTCP(port, front, interface="0.0.0.0")
        return p

    def _write_pid(self, qdir: Path) -> None:
        piddir = qdir / "pid"
        piddir.mkdir(parents=True, exist_ok=True)
        self.pid_file = piddir / "master.pid"
        tmp = piddir / f".master.pid.{os.getpid()}"
        tmp.write_text(f"{os.getpid()}\n")
        os.replace(tmp, self.pid_file)
        (piddir / DRAINING_FILE).unlink(missing_ok=True)  # a crash's leftover

    def _drop_privileges(self, cfg: Config, qdir: Path) -> None:
        if os.getuid() != 0:
            return
        owner = cfg.str("mail_owner")
        try:
            pw = pwd.getpwnam(owner)
        except KeyError:
            assert self.maillog is not None
            self.maillog.line(
                "master", f"warning: mail_owner {owner} does not exist: running as root"
            )
            return
        for root, _dirs, files in os.walk(qdir):
            os.chown(root, pw.pw_uid, pw.pw_gid)
            for name in files:
                os.chown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)
        log_path = settings.maillog_path(cfg)
        if log_path is not None and log_path.exists():
            os.chown(log_path, pw.pw_uid, pw.pw_gid)
        os.setgroups([g.gr_gid for g in grp.getgrall() if owner in g.gr_mem])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)

    # -- signals ------------------------------------------------------------------
    def _on_sighup(self, signum: int, frame: object) -> None:
        self.reactor.callFromThread(self.reload)

    def _on_sigusr1(self, signum: int, frame: object) -> None:
        # `mta flush`: every deferred message is due now.
        if self.manager is not None:
            self.reactor.callFromThread(self.manager.flush)

    def _on_sigusr2(self, signum: int, frame: object) -> None:
        # `mta reopen-log`, logrotate's postrotate: reopen the mail log file.
        self.reactor.callFromThread(self.reopen_log)

    def reopen_log(self) -> None:
        if self.maillog is None:
            return
        try:
            if self.maillog.reopen():
                self.maillog.line("master", "reopened the mail log file")
        except OSError as e:
            self.maillog.line(
                "master", f"warning: cannot reopen {self.maillog.path}: {_reason(e)}"
            )

    # -- reload -------------------------------------------------------------------
    def reload(self) -> list[str]:
        """Re-read the configuration; returns the errors that refused it."""
        assert self.maillog is not None and self.manager is not None
        systemd.reloading("reloading the configuration")
        try:
            return self._reload()
        finally:
            systemd.ready(self._status())

    def _reload(self) -> list[str]:
        assert self.maillog is not None and self.manager is not None
        cfg, problems = full_check(self.confdir)
        errors = [str(p) for p in problems if p.severity == "error"]
        if cfg is None or errors:
            for e in errors:
                self.maillog.line("master", f"reload refused: {e}")
                log.error("reload refused: %s", e)
            return errors
        try:
            self._apply(cfg)
        except Exception as e:  # e.g. a new port that cannot be bound
            self.maillog.line("master", f"reload refused: {e}")
            log.exception("reload failed")
            return [str(e)]
        self.maillog.line("master", f"reload -- version {_version()}, configuration {self.confdir}")
        return []

    def _apply(self, cfg: Config) -> None:
        assert self.maillog is not None and self.manager is not None
        wanted = {svc.name: svc for svc in cfg.listeners()}
        # Build every new settings object first: nothing changes if one fails.
        new_settings = {
            name: settings.smtpd(cfg.for_service(svc), svc) for name, svc in wanted.items()
        }
        if os.geteuid() != 0:
            # Privileges were dropped at start: a port under 1024 cannot be bound
            # now. Refuse before anything changes rather than lose the listener.
            for name, wanted_svc in wanted.items():
                addresses = bind_addresses(cfg.for_service(wanted_svc), wanted_svc)
                old_listener = self.listeners.get(name)
                if old_listener is not None and old_listener.addresses == addresses:
                    continue
                low = [f"{h}:{p}" for h, p in addresses if p < 1024]
                if low:
                    raise ValueError(
                        f"master.cf service {name}: cannot bind {', '.join(low)} after "
                        f"dropping privileges (uid {os.geteuid()}): restart mta instead"
                    )
        for name in list(self.listeners):
            old = self.listeners[name]
            svc = wanted.get(name)
            if svc is None or bind_addresses(cfg.for_service(svc), svc) != old.addresses:
                for p in old.ports:
                    p.stopListening()
                del self.listeners[name]
        for name, svc in wanted.items():
            if name in self.listeners:
                self.listeners[name].factory.settings = new_settings[name]
            else:
                self._open_listener(cfg, svc)
        new_log = settings.maillog_path(cfg)
        fmt = cfg.str("maillog_format")
        if new_log != self.maillog.path or fmt != self.maillog.log_format:
            old_log = self.maillog
            self.maillog = self._new_maillog(cfg)
            for listener in self.listeners.values():
                listener.factory.maillog = self.maillog
            self.manager.maillog = self.maillog
            old_log.close()
        self.manager.reconfigure(settings.manager(cfg))
        if self.disk is not None:
            self.disk.queue_minfree = cfg.size("queue_minfree")
        self.agent.reconfigure(cfg)
        self.cfg = cfg
        apply_timezone(read_properties(self.confdir)[0])
        self._reload_stats(cfg)

    def _reload_stats(self, cfg: Config) -> None:
        assert self.maillog is not None
        self.stats_sources.hostname = cfg.str("myhostname")
        self.stats_sources.node = cfg.str("stats_node_name")
        options = stats_options(cfg)
        for warning in exposure_warnings(options) if options is not None else []:
            self.maillog.line("master", f"warning: {warning}")
        maillog = self.maillog

        def failed(failure: Failure) -> None:
            where = options.address if options is not None else "(off)"
            maillog.line(
                "master",
                f"warning: statistics service on {where}: {failure.getErrorMessage()}; "
                "keeping the previous address",
            )

        defer.Deferred.fromCoroutine(self.stats.reconfigure(options)).addErrback(failed)

    # -- stop ---------------------------------------------------------------------
    async def _stop(self) -> None:
        systemd.stopping("stopping: finishing open SMTP transactions")
        self._mark_draining()
        if self.trigger is not None:
            self.trigger.stop()
        await self.stats.stop()
        if self.disk is not None:
            self.disk.stop()
        for listener in self.listeners.values():
            for p in listener.ports:
                await defer.maybeDeferred(p.stopListening)
        busy = [s for s in self.sessions if s.in_transaction]
        for s in list(self.sessions):
            if not s.in_transaction:
                s.shutdown()
        if busy:
            waits = defer.DeferredList([s.wait_transaction() for s in busy], consumeErrors=True)
            timer = self.reactor.callLater(STOP_GRACE, waits.cancel)
            try:
                await waits
            except defer.CancelledError:
                pass
            if timer.active():
                timer.cancel()
        # Let the last replies (a 250, then the 421) reach the clients.
        closing = defer.DeferredList([s.shutdown() for s in list(self.sessions)])
        timer = self.reactor.callLater(2.0, closing.cancel)
        try:
            await closing
        except defer.CancelledError:
            pass
        if timer.active():
            timer.cancel()
        if self.manager is not None:
            await self.manager.stop()
        await self.policy.close()
        if self.syncer is not None:
            await self.syncer.stop()
        if self.maillog is not None:
            self.maillog.line("master", "terminating on signal 15")
            self.maillog.close()
        if self.pid_file is not None:
            try:
                self.pid_file.unlink()
                (self.pid_file.parent / DRAINING_FILE).unlink(missing_ok=True)
            except OSError:
                pass

    def _mark_draining(self) -> None:
        """``$queue_directory/pid/draining``: `mta status` tells a node that
        has stopped accepting and is finishing its transactions."""
        if self.pid_file is None:
            return
        try:
            (self.pid_file.parent / DRAINING_FILE).write_text(f"{int(self.reactor.seconds())}\n")
        except OSError:
            pass
        if self.maillog is not None:
            self.maillog.line("master", "draining: no new connections, finishing transactions")

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        return defer.Deferred.fromCoroutine(self._stop())


def _reason(error: object) -> str:
    return getattr(error, "strerror", None) or str(error)


def _version() -> str:
    from mta import __version__

    return __version__
