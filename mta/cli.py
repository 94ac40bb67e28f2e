"""The ``mta`` command: check, postconf, postmap, reload, flush, mailq.

``mta [-c CONFDIR] COMMAND``; exit 0 on success, non-zero with a one-line
reason on standard error (INTERFACE.md).  Commands that talk to the running
daemon find it through ``$queue_directory/pid/master.pid`` and signal it:
SIGHUP reloads, SIGUSR1 flushes the deferred queue.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from mta.tap import default_confdir


def _fail(message: str, code: int = 1) -> int:
    print(f"mta: {message}", file=sys.stderr)
    return code


def cmd_check(confdir: Path) -> int:
    from mta.check import full_check

    cfg, problems = full_check(confdir)
    for p in problems:
        print(str(p), file=sys.stderr if p.severity == "error" else sys.stdout)
    return 0 if cfg is not None else 1


def _daemon_pid(confdir: Path) -> int:
    """The running daemon's pid; raises RuntimeError with the reason."""
    from mta import settings
    from mta.config import ConfigError, load

    try:
        cfg = load(confdir)
    except ConfigError as e:
        raise RuntimeError(str(e.problems[0]) if e.problems else "configuration error") from e
    pid_file = settings.queue_directory(cfg) / "pid" / "master.pid"
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


def cmd_mailq(confdir: Path, as_json: bool) -> int:
    from mta import settings
    from mta.config import ConfigError, load
    from mta.queue.listing import format_json, format_mailq, scan

    try:
        cfg = load(confdir)
    except ConfigError as e:
        return _fail(str(e.problems[0]) if e.problems else "configuration error")
    root = settings.queue_directory(cfg)
    entries = scan(root)  # an iterator: 100,000 envelopes are never all in memory
    sys.stdout.write(format_json(entries) if as_json else format_mailq(entries))
    return 0


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
    sub.add_parser("flush", help="retry every deferred message now")
    mq = sub.add_parser("mailq", help="list the queue")
    mq.add_argument("--json", action="store_true")
    q = sub.add_parser("queue", help="queue tools")
    q.add_argument("action", choices=["list"])
    q.add_argument("--json", action="store_true")

    raw = list(sys.argv[1:] if argv is None else argv)
    command_at = _command_index(raw)
    if command_at is not None and raw[command_at] == "postmap":
        # postmap's own options (-q, -s) must not reach the top-level parser.
        from mta.cli_postmap import run as postmap

        return postmap(raw[command_at + 1 :])
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
    if args.command == "flush":
        return cmd_flush(confdir)
    if args.command in ("mailq", "queue"):
        return cmd_mailq(confdir, args.json)
    return _fail(f"unknown command: {args.command}", 2)


if __name__ == "__main__":
    sys.exit(main())
