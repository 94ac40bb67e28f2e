"""``mta sendmail``: Postfix's sendmail(1) — queue a message read on standard input.

Works whether or not the daemon runs: the message is written straight into
``incoming`` with the queue store's own commit (file and sidecar fsynced,
then renamed into place; :mod:`mta.queue.store`), then the daemon, if one
runs, is told to look (:mod:`mta.queue.trigger`); a daemon that is not
running finds the message when it starts.  Root beside a daemon that runs as
``mail_owner`` writes files the daemon can read.  Other users need write
access to the queue directory (Postfix's setgid postdrop has no equivalent
here).

As Postfix does for local submissions (cleanup(8)), the message gets a
``Received: by`` header naming the user id, and ``Date:``, ``Message-Id:``
and ``From:`` when it lacks them; ``Bcc:``, ``Resent-Bcc:`` and
``Return-Path:`` are removed; a bare address (``root``) is completed with
``@$myorigin``.  Line ends become CRLF; without ``-i``/``-oi`` a line holding
only ``.`` ends the input.

Options (Postfix's): ``-f``/``-r SENDER``, ``-F NAME``, ``-t`` (recipients
from To:, Cc:, Bcc:, or the Resent- ones when present, added to those on the
command line), ``-i``, ``-oi``, ``-N NOTIFY`` (``never`` or
``delay,failure,success``), ``-R full|hdrs``, ``-V ENVID``, ``-B 7BIT|8BITMIME``,
``-C CONFDIR``, ``-bm`` (the default), ``-bp`` (mailq), ``-q`` (flush),
``-bv`` (report how each recipient would be delivered, without delivering:
the report goes to the sender); accepted and ignored: ``-G -U -v -n -m
-odb -odi -oem -oep ... -h N -L LABEL -X FILE``.

Inputs: the arguments, standard input, the configuration.  Outputs: a
queued message (or report), mail log lines, an exit status from
sysexits.h (64 usage, 65 data, 73 cannot create, 75 try again later).
"""

from __future__ import annotations

import email.utils
import getpass
import io
import os
import pwd
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from mta.address import AddressError, parse_path
from mta.envelope import Envelope, Recipient

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_CANTCREAT = 73
EX_TEMPFAIL = 75

_HEADER_NAME = re.compile(rb"^[!-9;-~]+:")
_BOOL_FLAGS = set("GUvnmitI")  # single letters without an argument
_WITH_ARG = set("BCFLNRVXfhor")  # letters that take an argument


class SendmailError(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Options:
    sender: str | None = None
    full_name: str | None = None
    extract: bool = False  # -t
    dot_ends: bool = True  # cleared by -i / -oi
    mode: str = "deliver"  # deliver | verify | mailq | flush
    notify: tuple[str, ...] = ()
    ret: str = ""
    envid: str = ""
    body: str = ""
    confdir: Path | None = None
    recipients: list[str] = field(default_factory=list)


def parse_args(argv: list[str]) -> Options:
    """Postfix sendmail's options, getopt style: ``-fsender`` or
    ``-f sender``; options end at ``--`` or the first recipient."""
    o = Options()
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            break
        if not arg.startswith("-") or arg == "-":
            i -= 1
            break
        letters = arg[1:]
        while letters:
            letter, letters = letters[0], letters[1:]
            if letter in _BOOL_FLAGS:
                if letter == "t":
                    o.extract = True
                elif letter == "i":
                    o.dot_ends = False
                elif letter == "I":
                    raise SendmailError("-I (newaliases) is not supported: no aliases", EX_USAGE)
                continue
            if letter == "q":
                o.mode = "flush"  # -q, -q1h, -qRsite: deliver the queue now
                letters = ""
                continue
            if letter == "b":
                value, letters = letters, ""
                if not value:
                    if i >= len(argv):
                        raise SendmailError("option -b requires an argument", EX_USAGE)
                    value, i = argv[i], i + 1
                modes = {"m": "deliver", "v": "verify", "p": "mailq"}
                if value not in modes:
                    raise SendmailError(f"unsupported: -b{value}", EX_USAGE)
                o.mode = modes[value]
                continue
            if letter not in _WITH_ARG:
                raise SendmailError(f"unknown option: -{letter}", EX_USAGE)
            value, letters = letters, ""
            if not value:
                if i >= len(argv):
                    raise SendmailError(f"option -{letter} requires an argument", EX_USAGE)
                value, i = argv[i], i + 1
            _option(o, letter, value)
    o.recipients = argv[i:]
    return o


def _option(o: Options, letter: str, value: str) -> None:
    if letter in "fr":
        o.sender = value
    elif letter == "F":
        o.full_name = value
    elif letter == "C":
        path = Path(value)
        o.confdir = path.parent if path.name == "main.cf" else path
    elif letter == "o":
        if value == "i":
            o.dot_ends = False
        # -odb, -odi, -oem, -oep, -om, ...: sendmail options Postfix ignores
    elif letter == "N":
        words = tuple(w.strip().upper() for w in value.split(",") if w.strip())
        if not words or any(w not in ("NEVER", "SUCCESS", "FAILURE", "DELAY") for w in words):
            raise SendmailError(f"bad -N value: {value}", EX_USAGE)
        if "NEVER" in words and len(words) > 1:
            raise SendmailError("-N never cannot be combined with other values", EX_USAGE)
        o.notify = words
    elif letter == "R":
        if value.upper() not in ("FULL", "HDRS"):
            raise SendmailError(f"bad -R value: {value} (full or hdrs)", EX_USAGE)
        o.ret = value.upper()
    elif letter == "V":
        o.envid = value
    elif letter == "B":
        if value.upper() not in ("7BIT", "8BITMIME"):
            raise SendmailError(f"bad -B value: {value} (7BIT or 8BITMIME)", EX_USAGE)
        o.body = value.upper()
    # -h hops, -L label, -X logfile: accepted, ignored


# -- the message ------------------------------------------------------------------------
@dataclass
class Prepared:
    message: bytes
    sender: str
    recipients: list[str]
    message_id: str
    eight_bit: bool


@dataclass(frozen=True)
class Local:
    """Who submits, and the names of this system."""

    login: str
    uid: int
    full_name: str
    myorigin: str
    myhostname: str
    mail_name: str = "mta"


def qualify(address: str, myorigin: str) -> str:
    """Postfix append_at_myorigin: a bare local part gets ``@$myorigin``."""
    if not address or "@" in address:
        return address
    return f"{address}@{myorigin}"


def _check_address(text: str, *, sender: bool) -> str:
    """One address, as written on the command line or in a header."""
    value = text.strip()
    try:
        address, rest = parse_path(value, allow_null=sender, smtputf8=True)
    except AddressError as e:
        raise SendmailError(f"bad address syntax: {text!r}: {e}", EX_DATAERR) from e
    if rest:
        raise SendmailError(f"bad address syntax: {text!r}", EX_DATAERR)
    return address


def read_input(stream: BinaryIO, *, dot_ends: bool, limit: int) -> list[bytes]:
    """The message as lines without line ends; stops at a lone ``.`` unless
    ``dot_ends`` is off.  Raises for more than ``limit`` octets (0: none)."""
    lines: list[bytes] = []
    size = 0
    for raw in stream:
        line = raw.rstrip(b"\n")
        if line.endswith(b"\r"):
            line = line[:-1]
        if dot_ends and line == b".":
            break
        size += len(line) + 2
        if limit and size > limit:
            raise SendmailError("message file too big", EX_DATAERR)
        lines.append(line)
    return lines


def split_headers(lines: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """(header lines, body lines).  Headers end at the first empty line or
    at the first line that is neither a header nor a continuation; a
    leading mbox ``From `` line is dropped."""
    if lines and lines[0].startswith(b"From ") and not _HEADER_NAME.match(lines[0]):
        lines = lines[1:]
    headers: list[bytes] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line == b"":
            i += 1
            break
        if _HEADER_NAME.match(line) or (headers and line[:1] in (b" ", b"\t")):
            headers.append(line)
            i += 1
            continue
        break
    return headers, lines[i:]


def _fields(headers: list[bytes]) -> list[tuple[str, list[bytes]]]:
    """Header fields as (lower-case name, its lines)."""
    out: list[tuple[str, list[bytes]]] = []
    for line in headers:
        if line[:1] in (b" ", b"\t") and out:
            out[-1][1].append(line)
        else:
            name = line.split(b":", 1)[0].decode("ascii", "replace").strip().lower()
            out.append((name, [line]))
    return out


def _value(lines: list[bytes]) -> str:
    text = b" ".join(line.strip() for line in lines)
    return text.split(b":", 1)[1].decode("utf-8", "replace").strip()


def prepare(
    lines: list[bytes],
    opts: Options,
    local: Local,
    *,
    queue_id: str,
    now: float,
) -> Prepared:
    """Envelope and final message text from the input (pure)."""
    headers, body = split_headers(lines)
    fields = _fields(headers)
    names = {name for name, _ in fields}

    if opts.sender is None:
        sender = qualify(local.login, local.myorigin)
    else:
        sender = qualify(_check_address(opts.sender, sender=True), local.myorigin)

    recipients: list[str] = []
    for arg in opts.recipients:
        for _, addr in email.utils.getaddresses([arg]):
            if addr:
                recipients.append(qualify(_check_address(addr, sender=False), local.myorigin))
        if not any(a for _, a in email.utils.getaddresses([arg])):
            raise SendmailError(f"bad address syntax: {arg!r}", EX_DATAERR)
    if opts.extract:
        resent = {"resent-to", "resent-cc", "resent-bcc"} & names
        wanted = resent or {"to", "cc", "bcc"}
        values = [_value(v) for name, v in fields if name in wanted]
        for _, addr in email.utils.getaddresses(values):
            if addr:
                recipients.append(qualify(_check_address(addr, sender=False), local.myorigin))
        if not recipients:
            raise SendmailError("No recipient addresses found in message header", EX_DATAERR)
    elif not recipients:
        raise SendmailError(
            "Recipient addresses must be specified on the command line or via the -t option",
            EX_USAGE,
        )
    recipients = list(dict.fromkeys(recipients))

    kept = [
        line for name, v in fields if name not in ("bcc", "resent-bcc", "return-path") for line in v
    ]
    date = email.utils.formatdate(now, localtime=True)
    added = [
        f"Received: by {local.myhostname} ({local.mail_name}, from userid {local.uid})",
        f"\tid {queue_id}; {date}",
    ]
    if "date" not in names:
        kept.append(f"Date: {date}".encode())
    message_id = ""
    for name, v in fields:
        if name == "message-id":
            message_id = _value(v)
            break
    if not message_id:
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
        message_id = f"<{stamp}.{queue_id}@{local.myhostname}>"
        kept.append(f"Message-Id: {message_id}".encode())
    if "from" not in names:
        who = sender or f"MAILER-DAEMON@{local.myhostname}"
        name = opts.full_name if opts.full_name is not None else local.full_name
        kept.append((f"From: {_display(name)} <{who}>" if name else f"From: {who}").encode("utf-8"))
    out = [a.encode("utf-8") for a in added] + kept + [b""] + body
    message = b"\r\n".join(out) + b"\r\n"
    eight_bit = any(b > 0x7F for b in message)
    return Prepared(message, sender, recipients, message_id, eight_bit)


def _display(name: str) -> str:
    """A display name, quoted when it holds specials (RFC 5322 3.2.3)."""
    if re.fullmatch(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ .-]*", name) and "." not in name:
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def envelope_for(
    prepared: Prepared, opts: Options, queue_id: str, now: float, uid: int
) -> Envelope:
    return Envelope(
        queue_id=queue_id,
        sender=prepared.sender,
        recipients=[Recipient(r, notify=opts.notify) for r in prepared.recipients],
        arrival_time=now,
        ret=opts.ret,
        envid=opts.envid,
        body=opts.body or ("8BITMIME" if prepared.eight_bit else ""),
        smtputf8=not all(a.isascii() for a in [prepared.sender, *prepared.recipients]),
        protocol="local",
        client_name="localhost",
        extra={"uid": uid},
    )


# -- effects ------------------------------------------------------------------------------
def local_identity(cfg_myorigin: str, myhostname: str, mail_name: str) -> Local:
    uid = os.getuid()
    try:
        pw = pwd.getpwuid(uid)
        login, gecos = pw.pw_name, pw.pw_gecos.split(",", 1)[0]
    except KeyError:
        login, gecos = getpass.getuser(), ""
    return Local(login, uid, gecos, cfg_myorigin, myhostname, mail_name)


def submit(
    confdir: Path,
    opts: Options,
    stdin: BinaryIO,
    *,
    now: Callable[[], float] = time.time,
) -> str:
    """Queue the message; returns its queue id.  Raises SendmailError."""
    from mta.config import ConfigError, load
    from mta.maillog import MailLog
    from mta.queue import trigger
    from mta.queue.diskspace import measure, room_for_mail
    from mta.queue.store import QueueStore

    try:
        cfg = load(confdir)
    except ConfigError as e:
        raise SendmailError(
            str(e.problems[0]) if e.problems else "configuration error", EX_USAGE
        ) from e
    root = cfg.path(cfg.str("queue_directory"))  # as mta.settings, without its imports
    limit = cfg.size("message_size_limit")
    local = local_identity(cfg.str("myorigin"), cfg.str("myhostname"), cfg.str("mail_name"))
    lines = read_input(stdin, dot_ends=opts.dot_ends, limit=limit)
    store = QueueStore(root)
    try:
        if not root.is_dir() or not (root / "incoming" / "tmp").is_dir():
            store.create_layout()
        free = measure(root).free
    except OSError as e:
        raise SendmailError(f"cannot use the queue directory {root}: {e}", EX_CANTCREAT) from e
    if not room_for_mail(free, queue_minfree=cfg.size("queue_minfree"), message_size_limit=limit):
        raise SendmailError("Insufficient system storage in the mail queue", EX_TEMPFAIL)
    try:
        msg = store.begin()
    except OSError as e:
        raise SendmailError(f"cannot create a queue file in {root}: {e}", EX_CANTCREAT) from e
    try:
        when = now()
        prepared = prepare(lines, opts, local, queue_id=msg.queue_id, now=when)
        env = envelope_for(prepared, opts, msg.queue_id, when, local.uid)
        msg.write(prepared.message)
        store.commit_blocking(msg, env)
    except SendmailError:
        msg.abort()
        raise
    except OSError as e:
        msg.abort()
        raise SendmailError(f"queue file write error: {e}", EX_TEMPFAIL) from e
    log_file = cfg.str("maillog_file")
    if log_file:
        try:
            maillog = MailLog(cfg.path(log_file), local.myhostname)
            maillog.line("pickup", f"{msg.queue_id}: uid={local.uid} from=<{prepared.sender}>")
            maillog.line("cleanup", f"{msg.queue_id}: message-id={prepared.message_id}")
            maillog.close()
        except OSError:
            pass  # the message is queued; a log line is not worth failing for
    try:
        trigger.send(root, ["scan"])
    except OSError:
        pass  # not running, or busy: it picks the message up at start or rescan
    return msg.queue_id


def verify_report(confdir: Path, opts: Options, *, now: Callable[[], float] = time.time) -> str:
    """``-bv``: queue a report to the sender on how each recipient would be
    routed (transport and next hop), without delivering anything.  The next
    hop itself is not asked."""
    from mta import settings
    from mta.bounce import build_report
    from mta.config import ConfigError, load

    try:
        cfg = load(confdir)
    except ConfigError as e:
        raise SendmailError(
            str(e.problems[0]) if e.problems else "configuration error", EX_USAGE
        ) from e
    local = local_identity(cfg.str("myorigin"), cfg.str("myhostname"), cfg.str("mail_name"))
    sender = qualify(
        _check_address(opts.sender, sender=True) if opts.sender is not None else local.login,
        local.myorigin,
    )
    if not sender:
        raise SendmailError("-bv needs a sender to send the report to", EX_USAGE)
    if not opts.recipients:
        raise SendmailError("-bv: no recipient addresses given", EX_USAGE)
    router = settings.router(cfg)
    lines = []
    for arg in opts.recipients:
        for _, addr in email.utils.getaddresses([arg]):
            address = qualify(_check_address(addr, sender=False), local.myorigin)
            route = router.route(address)
            if route.command in ("smtp", "lmtp"):
                hop = route.nexthop or route.host
                how = f"delivery via {route.transport} to {hop}"
            elif route.command == "error":
                how = f"undeliverable: {route.nexthop or 'mail transport error'}"
            elif route.command:
                how = f"delivery via {route.transport}"
            else:
                how = f"undeliverable: unknown mail transport {route.transport}"
            lines.append(f"<{address}>: {how}")
    text = (
        "Enclosed is the mail delivery report that you requested.\n\n"
        "This report says how each address would be delivered; the next hop\n"
        "was not asked and no mail was sent.\n\n" + "\n".join(lines)
    )
    report = build_report(
        hostname=local.myhostname,
        to=sender,
        subject="Mail Delivery Status Report",
        text=text,
        now=now(),
    )
    report_opts = Options(sender="<>", recipients=[sender], dot_ends=False)
    return submit(confdir, report_opts, io.BytesIO(report), now=now)


def main(argv: list[str], confdir: Path) -> int:
    """``mta [-c CONFDIR] sendmail ARGS``; ``-C`` overrides the directory."""
    try:
        opts = parse_args(argv)
        confdir = opts.confdir or confdir
        if not (confdir / "main.cf").is_file():
            raise SendmailError(f"{confdir / 'main.cf'}: no such file", EX_USAGE)
        if opts.mode == "mailq":
            from mta.cli import cmd_mailq

            return cmd_mailq(confdir, False)
        if opts.mode == "flush":
            from mta.cli import cmd_flush

            return cmd_flush(confdir)
        if opts.mode == "verify":
            verify_report(confdir, opts)
            return EX_OK
        submit(confdir, opts, sys.stdin.buffer)
    except SendmailError as e:
        print(f"mta: fatal: {e}", file=sys.stderr)
        return e.status
    return EX_OK
