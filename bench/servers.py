"""The two servers under test, started the same way from equivalent configurations.

Job: run a throwaway Postfix (Debian's package: its own ``config_directory``,
``queue_directory`` and ``data_directory`` in a temporary directory, started
with ``postfix -c DIR start-fg``, no system service, listening on 127.0.0.1
only) and mta (``twistd -n mta -c DIR`` from a source tree), both from the
same Postfix parameters, and give the harness one interface to both: start,
stop, restart with new parameters, the process tree to measure, the queue
counts, and the ``mailq`` and flush commands.

Inputs: a work directory, the listening port and the shared parameters
(:func:`shared_parameters`).  Outputs: :class:`Postfix`, :class:`Mta`, both
:class:`Server`.

Equivalence: both get ``mydestination =`` (nothing is local, everything is
relayed to ``relayhost``), ``mynetworks = 127.0.0.0/8`` and the same
``default_process_limit``; everything else keeps each server's defaults,
except what only keeps Postfix inside its directory (``data_directory``,
``maillog_file_prefixes``, no chroot in master.cf) and
``smtpd_peername_lookup = no`` (mta does not look up client names, so Postfix
is spared that work too).  Both log every message to a ``maillog_file``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.procs import kill_tree, port_open, wait_for

REPO = Path(__file__).resolve().parents[1]
POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
POSTQUEUE = shutil.which("postqueue") or "/usr/sbin/postqueue"
# twistd of this interpreter (the script on PATH may belong to another one).
TWISTD = "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()"
QUEUE_STATES = ("incoming", "active", "deferred", "hold")

#: Postfix's internal services, as in Debian's master.cf but never chrooted
#: (a chroot would need copies of /etc files; mta runs unchrooted too).
POSTFIX_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class ServerError(RuntimeError):
    """A server did not start, or did not do what the scenario needs."""


def shared_parameters(nexthop_port: int, process_limit: int) -> dict[str, str]:
    """The main.cf parameters both servers get, by their Postfix names."""
    return {
        "mydestination": "",
        "mynetworks": "127.0.0.0/8",
        "relayhost": f"[127.0.0.1]:{nexthop_port}",
        "default_process_limit": str(process_limit),
    }


def write_main_cf(path: Path, params: dict[str, str]) -> None:
    path.write_text("".join(f"{k} = {v}\n" for k, v in params.items()))


class Server:
    """What the harness needs of a server; see :class:`Postfix` and :class:`Mta`."""

    name = "server"

    def __init__(self, base: Path, port: int, params: dict[str, str]) -> None:
        self.base = base
        self.port = port
        self.params = dict(params)
        self.proc: subprocess.Popen[bytes] | None = None
        base.mkdir(parents=True, exist_ok=True)
        self.out_path = base / "server.out"

    # -- to be provided -------------------------------------------------------
    def configure(self) -> None:
        raise NotImplementedError

    def command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def roots(self) -> list[int]:
        """The processes whose trees are the server (for CPU and memory)."""
        raise NotImplementedError

    def request_stop(self) -> None:
        raise NotImplementedError

    def mailq_command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def flush_command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def queue_count(self, state: str) -> int:
        raise NotImplementedError

    @property
    def maillog(self) -> Path:
        return self.base / "maillog"

    # -- shared ---------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> float:
        """Start and wait until the listener answers; returns the seconds it took."""
        self.configure()
        argv, env = self.command()
        began = time.monotonic()
        with open(self.out_path, "ab") as out:
            self.proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.base,
                start_new_session=True,
            )
        try:
            wait_for(
                lambda: self.proc is None or self.proc.poll() is not None or self._ready(),
                timeout,
                f"{self.name} to listen on port {self.port}",
            )
        except TimeoutError as e:
            raise ServerError(f"{e}\n{self.tail()}") from None
        if self.proc.poll() is not None:
            raise ServerError(f"{self.name} exited {self.proc.returncode}:\n{self.tail()}")
        return time.monotonic() - began

    def _ready(self) -> bool:
        return port_open(self.port)

    def log_size(self) -> int:
        try:
            return self.maillog.stat().st_size
        except OSError:
            return 0

    def wait_started(self, since: int, timeout: float) -> float:
        """Wait until the mail log says ``daemon started`` after byte ``since``
        (both servers log it: Postfix's master at its start, mta once its queue
        is loaded and its signal handlers are in place); returns the seconds waited."""

        def started() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                raise ServerError(f"{self.name} exited {self.returncode()} while starting")
            try:
                with open(self.maillog, "rb") as f:
                    f.seek(since)
                    return b"daemon started" in f.read()
            except OSError:
                return False

        return wait_for(started, timeout, f"{self.name} to log 'daemon started'", interval=0.02)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def returncode(self) -> str:
        """How the server's process ended, in words."""
        if self.proc is None or self.proc.returncode is None:
            return "(still running)"
        rc = self.proc.returncode
        if rc < 0:
            return f"on signal {signal.Signals(-rc).name}"
        return f"with status {rc}"

    def stop(self, timeout: float = 30.0) -> None:
        """Stop gracefully; whatever is left after ``timeout`` is killed."""
        if self.proc is None:
            return
        roots = self.roots()
        with contextlib.suppress(Exception):
            self.request_stop()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.1)
        kill_tree([self.proc.pid, *roots])
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        """Kill everything at once (clean-up after an error or Ctrl-C)."""
        if self.proc is None:
            return
        with contextlib.suppress(Exception):
            kill_tree([self.proc.pid, *self.roots()])
        with contextlib.suppress(Exception):
            self.proc.wait(5)
        self.proc = None

    def tail(self, lines: int = 20) -> str:
        texts = []
        for p in (self.out_path, self.maillog):
            if p.exists():
                texts.append("\n".join(p.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(texts)

    def queue_total(self) -> int:
        return sum(self.queue_count(s) for s in QUEUE_STATES)

    def run_tool(self, which: str, timeout: float = 300.0) -> tuple[float, str, int]:
        """Run ``mailq`` or ``flush``; (seconds, stdout, exit code)."""
        argv, env = self.mailq_command() if which == "mailq" else self.flush_command()
        began = time.monotonic()
        done = subprocess.run(argv, capture_output=True, env=env, timeout=timeout, cwd=self.base)
        return time.monotonic() - began, done.stdout.decode(errors="replace"), done.returncode


class Postfix(Server):
    """A throwaway Postfix instance (must run as root: master runs as root and
    the daemons as ``mail_owner`` postfix, as in a real installation)."""

    name = "postfix"

    @property
    def confdir(self) -> Path:
        return self.base / "conf"

    def configure(self) -> None:
        # The daemons run as postfix: they must be able to reach the directory.
        os.chmod(self.base, 0o755)
        for parent in self.base.resolve().parents:
            if not parent.stat().st_mode & 0o001:
                raise ServerError(
                    f"{parent} is not searchable by others: postfix cannot reach {self.base}"
                )
        self.confdir.mkdir(exist_ok=True)
        (self.base / "queue").mkdir(exist_ok=True)
        data = self.base / "data"
        data.mkdir(exist_ok=True)
        pw = pwd.getpwnam("postfix")
        os.chown(data, pw.pw_uid, pw.pw_gid)
        params = {
            "compatibility_level": "3.6",
            "config_directory": str(self.confdir),
            "queue_directory": str(self.base / "queue"),
            "data_directory": str(data),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "postfix.bench.example",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.base),
            "smtpd_peername_lookup": "no",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
        }
        params.update(self.params)
        write_main_cf(self.confdir / "main.cf", params)
        (self.confdir / "master.cf").write_text(
            f"127.0.0.1:{self.port} inet n - n - - smtpd\n" + POSTFIX_SERVICES
        )

    def command(self) -> tuple[list[str], dict[str, str]]:
        return [POSTFIX, "-c", str(self.confdir), "start-fg"], dict(os.environ)

    def master_pid(self) -> int | None:
        try:
            return int((self.base / "queue" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _ready(self) -> bool:
        return self.master_pid() is not None and port_open(self.port)

    def roots(self) -> list[int]:
        # master calls setsid(): it is its own session leader below postfix-script.
        pid = self.master_pid()
        return [pid] if pid is not None else []

    def request_stop(self) -> None:
        subprocess.run([POSTFIX, "-c", str(self.confdir), "stop"], capture_output=True, timeout=30)

    def mailq_command(self) -> tuple[list[str], dict[str, str]]:
        return [POSTQUEUE, "-c", str(self.confdir), "-p"], dict(os.environ)

    def flush_command(self) -> tuple[list[str], dict[str, str]]:
        return [POSTQUEUE, "-c", str(self.confdir), "-f"], dict(os.environ)

    def queue_count(self, state: str) -> int:
        # Postfix hashes deferred (and, if configured, other) queues into subdirectories.
        return sum(len(files) for _, _, files in os.walk(self.base / "queue" / state))


class Mta(Server):
    """mta from the source tree ``src`` under ``twistd -n``."""

    name = "mta"

    def __init__(self, base: Path, port: int, params: dict[str, str], src: Path = REPO) -> None:
        super().__init__(base, port, params)
        self.src = src

    @property
    def confdir(self) -> Path:
        return self.base / "conf"

    def configure(self) -> None:
        self.confdir.mkdir(exist_ok=True)
        params = {
            "myhostname": "mta.bench.example",
            "queue_directory": str(self.base / "queue"),
            "maillog_file": str(self.maillog),
            "dns_nameservers": "127.0.0.1:9",  # never the outside world
        }
        params.update(self.params)
        write_main_cf(self.confdir / "main.cf", params)
        (self.confdir / "master.cf").write_text(f"127.0.0.1:{self.port} inet n - n - - smtpd\n")
        # The source tree's plugin, whether or not the package is installed.
        plugins = self.base / "plugins" / "twisted" / "plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.src / "twisted_plugins" / "mta_plugin.py", plugins / "mta_plugin.py")

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(self.src), str(self.base / "plugins"), env.get("PYTHONPATH")) if p
        )
        return env

    def command(self) -> tuple[list[str], dict[str, str]]:
        argv = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "mta", "-c", str(self.confdir)]
        return argv, self.env()

    def roots(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None else []

    def request_stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def _cli(self, *args: str) -> tuple[list[str], dict[str, str]]:
        return [sys.executable, "-m", "mta.cli", "-c", str(self.confdir), *args], self.env()

    def mailq_command(self) -> tuple[list[str], dict[str, str]]:
        return self._cli("mailq")

    def flush_command(self) -> tuple[list[str], dict[str, str]]:
        return self._cli("flush")

    def queue_count(self, state: str) -> int:
        try:
            return len(os.listdir(self.base / "queue" / state / "cur"))
        except OSError:
            return 0


SERVERS: dict[str, type[Server]] = {"postfix": Postfix, "mta": Mta}
