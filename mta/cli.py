"""The ``mta`` command: check, postconf, postmap, reload, status, flush, mailq, queue, sendmail.

``mta [-c CONFDIR] COMMAND``; exit 0 on success, non-zero with a one-line
reason on standard error (INTERFACE.md).  Commands that talk to the running
daemon find it through ``$queue_directory/pid/master.pid`` and signal it:
SIGHUP reloads, SIGUSR1 flushes the deferred queue.  ``queue`` and
``sendmail`` work on the queue directory themselves, with or without a
running daemon (:mod:`mta.queue.tools`, :mod:`mta.sendmail`), and wake the
daemon through its FIFO (:mod:`mta.queue.trigger`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mta.tap import default_confdir

if TYPE_CHECKING:
    from mta.config import Config


def _fail(message: str, code: int = 1) -> int:
    print(f"mta: {message}", file=sys.stderr)
    return code


def cmd_check(confdir: Path) -> int:
    from mta.check import full_check

    cfg, problems = full_check(confdir)
    for p in problems:
        print(str(p), file=sys.stderr if p.severity == "error" else sys.stdout)
    return 0 if cfg is not None else 1


def _queue_directory(cfg: Config) -> Path:
    # mta.settings.queue_directory without importing mta.settings, which
    # pulls in every delivery and policy module: the tools start faster.
    return cfg.path(cfg.str("queue_directory"))


def _daemon_pid(confdir: Path) -> int:
    """The running daemon's pid; raises RuntimeError with the reason."""
    from mta.config import ConfigError, load

    try:
        cfg = load(confdir)
    except ConfigError as e:
        raise RuntimeError(str(e.problems[0]) if e.problems else "configuration error") from e
    pid_file = _queue_directory(cfg) / "pid" / "master.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError) as e:
        raise RuntimeError(f"the mail system is not running ({pid_file}: {e})") from e
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise RuntimeError(f"the mail system is not running (stale {pid_file})") from None
    except PermissionError:
        pass
    return pid


def _signal_daemon(confdir: Path, sig: signal.Signals) -> int:
    try:
        pid = _daemon_pid(confdir)
        os.kill(pid, sig)
    except (RuntimeError, OSError) as e:
        return _fail(str(e))
    return 0


def cmd_status(confdir: Path) -> int:
    """Postfix's ``postfix status``, plus draining: exit 0 running, 1 not
    running, 2 draining (stopping: no new connections, finishing
    transactions; a load balancer sends new sessions elsewhere)."""
    from mta.config import ConfigError, load

    try:
        pid = _daemon_pid(confdir)
        cfg = load(confdir)
    except (RuntimeError, ConfigError) as e:
        return _fail(str(e))
    draining = _queue_directory(cfg) / "pid" / "draining"
    try:
        since = int(draining.read_text().strip() or "0")
    except (OSError, ValueError):
        print(f"mta: the mail system is running: PID: {pid}")
        return 0
    import time

    print(
        f"mta: the mail system is draining: PID: {pid}: no new connections for"
        f" {max(0, int(time.time()) - since)}s, finishing open transactions"
    )
    return 2


def cmd_reload(confdir: Path) -> int:
    """Check first, as the daemon will: a refused reload exits 1 with why."""
    from mta.check import full_check

    cfg, problems = full_check(confdir)
    errors = [p for p in problems if p.severity == "error"]
    if cfg is None or errors:
        for p in errors:
            print(f"mta: reload refused: {p}", file=sys.stderr)
        return 1
    rc = _signal_daemon(confdir, signal.SIGHUP)
    if rc == 0:
        print("mta: refreshing the mail system")
    return rc


def cmd_flush(confdir: Path) -> int:
    return _signal_daemon(confdir, signal.SIGUSR1)


def cmd_reopen_log(confdir: Path) -> int:
    """logrotate's postrotate: the daemon reopens maillog_file (SIGUSR2)."""
    return _signal_daemon(confdir, signal.SIGUSR2)


def cmd_mailq(confdir: Path, as_json: bool) -> int:
    from mta.config import ConfigError, load
    from mta.queue.listing import format_json, format_mailq, scan

    try:
        cfg = load(confdir)
    except ConfigError as e:
        return _fail(str(e.problems[0]) if e.problems else "configuration error")
    root = _queue_directory(cfg)
    entries = scan(root)  # an iterator: 100,000 envelopes are never all in memory
    sys.stdout.write(format_json(entries) if as_json else format_mailq(entries))
    return 0


def cmd_queue(confdir: Path, action: str, args: list[str]) -> int:
    """``mta queue delete|hold|release|requeue ID...|-|ALL [QUEUE...]``
    (Postfix postsuper -d/-h/-H/-r); prints Postfix's summary line."""
    from mta.config import ConfigError, load
    from mta.maillog import MailLog
    from mta.queue import tools

    try:
        cfg = load(confdir)
    except ConfigError as e:
        return _fail(str(e.problems[0]) if e.problems else "configuration error")
    root = _queue_directory(cfg)
    try:
        ids, queues = tools.parse_targets(action, args, sys.stdin if "-" in args else ())
    except tools.UsageError as e:
        return _fail(str(e), 2)
    if not (root / "incoming").is_dir():
        return _fail(f"{root}: no mail queue here (the daemon creates it at start)")
    maillog: MailLog | None = None
    log_file = cfg.str("maillog_file")
    if log_file:
        try:
            maillog = MailLog(cfg.path(log_file), cfg.str("myhostname"))
        except OSError:
            maillog = None
    writer = maillog

    def log(text: str) -> None:
        if writer is not None:
            writer.line("postsuper", text)

    try:
        out = tools.run(root, action, ids, queues, log=log)
    except OSError as e:
        return _fail(f"queue {action}: {e}")
    finally:
        if maillog is not None:
            maillog.close()
    for qid in out.requested:
        print(f"mta: {qid}: being delivered: {tools.LOGGED[action]} when the attempt ends")
    print(f"mta: {out.summary(action)}")
    problems = [f"{qid}: {why}" for qid, why in out.errors]
    problems += [f"{qid}: busy (being queued or moved); try again" for qid in out.busy]
    if ids is not None:
        where = ", ".join(queues)
        problems += [f"{qid}: no such message in the {where} queues" for qid in out.absent]
    for text in problems[1:]:
        print(f"mta: warning: {text}", file=sys.stderr)
    return _fail(problems[0]) if problems else 0


def _command_index(argv: list[str]) -> int | None:
    """The index of the command word, after the global options."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word in ("-c", "--config-dir"):
            i += 2
        elif word.startswith("--config-dir=") or (word.startswith("-c") and len(word) > 2):
            i += 1
        elif word.startswith("-"):
            return None
        else:
            return i
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mta", description="mta mail transfer agent")
    parser.add_argument("-c", "--config-dir", type=Path, default=None)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="validate the configuration as the daemon would")
    pc = sub.add_parser("postconf", help="show or edit main.cf parameters", add_help=False)
    pc.add_argument("args", nargs=argparse.REMAINDER)
    pm = sub.add_parser("postmap", help="query or check lookup tables", add_help=False)
    pm.add_argument("args", nargs=argparse.REMAINDER)
    sub.add_parser("reload", help="re-read the configuration (SIGHUP)")
    sub.add_parser("status", help="is the daemon running, draining, or stopped")
    sub.add_parser("flush", help="retry every deferred message now")
    sub.add_parser("reopen-log", help="reopen the mail log file after logrotate (SIGUSR2)")
    mq = sub.add_parser("mailq", help="list the queue")
    mq.add_argument("--json", action="store_true")
    q = sub.add_parser("queue", help="queue tools: list, delete, hold, release, requeue")
    q.add_argument("action", choices=["list", "delete", "hold", "release", "requeue"])
    q.add_argument("ids", nargs="*", help="queue ids, - (read them from stdin), or ALL [QUEUE...]")
    q.add_argument("--json", action="store_true")
    sm = sub.add_parser("sendmail", help="queue a message read on stdin", add_help=False)
    sm.add_argument("args", nargs=argparse.REMAINDER)

    if argv is None and Path(sys.argv[0]).name in ("sendmail", "mailq"):
        # Installed as /usr/sbin/sendmail or mailq (a link to mta), as
        # Postfix's are: MAIL_CONFIG names the configuration directory.
        env_dir = os.environ.get("MAIL_CONFIG")
        conf = Path(env_dir) if env_dir else default_confdir()
        if Path(sys.argv[0]).name == "mailq":
            return cmd_mailq(conf, "--json" in sys.argv[1:])
        from mta.sendmail import main as sendmail

        return sendmail(sys.argv[1:], conf)
    raw = list(sys.argv[1:] if argv is None else argv)
    command_at = _command_index(raw)
    if command_at is not None and raw[command_at] == "sendmail":
        # sendmail's own options (-f, -t, -oi, -bv) must not reach argparse.
        from mta.sendmail import main as sendmail

        head = parser.parse_args(raw[: command_at + 1])
        return sendmail(raw[command_at + 1 :], head.config_dir or default_confdir())
    if command_at is not None and raw[command_at] == "postmap":
        # postmap's own options (-q, -s) must not reach the top-level parser.
        from mta.cli_postmap import run as postmap

        return postmap(raw[command_at + 1 :])
    if command_at is not None and raw[command_at] == "postconf":
        # Likewise postconf's -n, -d, -h, -e.
        from mta.cli_postconf import run

        head = parser.parse_args(raw[: command_at + 1])
        return run(head.config_dir or default_confdir(), raw[command_at + 1 :])
    args = parser.parse_args(argv)
    confdir: Path = args.config_dir or default_confdir()
    if args.command == "postconf":
        from mta.cli_postconf import run

        return run(confdir, list(args.args))
    if not (confdir / "main.cf").is_file():
        return _fail(f"{confdir / 'main.cf'}: no such file")
    if args.command == "check":
        return cmd_check(confdir)
    if args.command == "reload":
        return cmd_reload(confdir)
    if args.command == "status":
        return cmd_status(confdir)
    if args.command == "flush":
        return cmd_flush(confdir)
    if args.command == "reopen-log":
        return cmd_reopen_log(confdir)
    if args.command == "queue" and args.action != "list":
        return cmd_queue(confdir, args.action, list(args.ids))
    if args.command in ("mailq", "queue"):
        return cmd_mailq(confdir, args.json)
    return _fail(f"unknown command: {args.command}", 2)


if __name__ == "__main__":
    sys.exit(main())
