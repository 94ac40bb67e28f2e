"""One SMTP session's conversation with its milters, in order.

Job: drive every filter of ``smtpd_milters`` (or ``non_smtpd_milters``)
through the stages of a session (connect, HELO, MAIL, RCPT, DATA, the
message at end of data, abort, quit) with the macros each stage sends,
combine their answers the way Postfix does (first decisive filter wins;
a filter that accepts is skipped for the rest of the message or session),
apply ``milter_default_action`` to a filter that fails, and apply the
filters' modifications: header edits and body replacement rewrite the
queue file, envelope edits come back as ``EnvelopeEdits``.
Inputs: ``MilterSpec`` list, the reactor, macro values, the queue file.
Outputs: ``MilterVerdict`` (or None: go on), ``EnvelopeEdits``, log lines.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from mta.milter import protocol as p
from mta.milter.client import MilterClient, MilterSpec
from mta.milter.protocol import MilterError, Response
from mta.reply import Reply

HEADER_LIMIT = 1024 * 1024  # headers read into memory at most; the rest is body

# Postfix milter8.c replies.
REJECT_REPLY = Reply(550, "7.1", "Command rejected")
TEMPFAIL_REPLY = Reply(451, "7.1", "Service unavailable - try again later")


@dataclass(frozen=True)
class MacroLists:
    """milter_*_macros: the macro names sent at each stage."""

    connect: tuple[str, ...] = ("j", "{daemon_name}", "{daemon_addr}", "v", "_")
    helo: tuple[str, ...] = (
        "{tls_version}",
        "{cipher}",
        "{cipher_bits}",
        "{cert_subject}",
        "{cert_issuer}",
    )
    mail: tuple[str, ...] = (
        "i",
        "{auth_type}",
        "{auth_authen}",
        "{auth_author}",
        "{mail_addr}",
        "{mail_host}",
        "{mail_mailer}",
    )
    rcpt: tuple[str, ...] = ("i", "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}")
    data: tuple[str, ...] = ("i",)
    end_of_header: tuple[str, ...] = ("i",)
    end_of_data: tuple[str, ...] = ("i",)

    def for_command(self, command: bytes) -> tuple[str, ...]:
        return {
            p.CONNECT: self.connect,
            p.HELO: self.helo,
            p.MAIL: self.mail,
            p.RCPT: self.rcpt,
            p.DATA: self.data,
            p.EOH: self.end_of_header,
            p.BODYEOB: self.end_of_data,
        }.get(command, ())


@dataclass(frozen=True)
class MilterVerdict:
    """A decisive answer: ``action`` is reject, tempfail (``reply`` is what
    the client gets), discard, quarantine (``reason``: hold the message) or
    abort (421 and end the session)."""

    action: str
    reply: Reply | None = None
    reason: str = ""
    milter: str = ""


@dataclass
class EnvelopeEdits:
    """What the filters changed in the envelope at end of message."""

    sender: str | None = None
    sender_args: str = ""
    add_recipients: list[str] = field(default_factory=list)
    delete_recipients: list[str] = field(default_factory=list)
    quarantine: str | None = None


@dataclass
class _Filter:
    spec: MilterSpec
    client: MilterClient | None = None
    failed: str = ""  # the fault; the default action applies from then on
    skip_session: bool = False
    skip_message: bool = False


def parse_reply(text: str) -> Reply:
    """A filter's SMFIR_REPLYCODE text ("550 5.7.1 go away")."""
    code = int(text[:3])
    rest = text[3:].lstrip(" -")
    try:
        return Reply.parse_text(code, rest.replace("\r\n", " ").replace("\n", " "))
    except ValueError:
        return Reply(code, "", rest)


class MilterSession:
    """The filters of one SMTP session.  Call the stages in SMTP order;
    ``macros`` is updated by the caller as facts become known."""

    def __init__(
        self,
        reactor: Any,
        specs: Sequence[MilterSpec],
        *,
        macro_lists: MacroLists | None = None,
        log: Callable[[str], None] = lambda text: None,
    ) -> None:
        self.reactor = reactor
        self.filters = [_Filter(spec) for spec in specs]
        self.lists = macro_lists or MacroLists()
        self.macros: dict[str, str] = {}
        self.log = log
        self.hold: str | None = None  # a failed filter's default action is quarantine
        self._connected = False

    @property
    def active(self) -> bool:
        return bool(self.filters)

    # -- stages -----------------------------------------------------------------
    async def connect(self, hostname: str, address: str, port: int) -> MilterVerdict | None:
        """SMFIC_CONNECT to every filter (each is opened first)."""
        if self._connected:
            return None
        self._connected = True
        family = "6" if ":" in address else "4" if address else "U"
        data = p.connect_data(hostname, family, port, address)
        return await self._stage(p.CONNECT, data, session_level=True)

    async def helo(self, name: str) -> MilterVerdict | None:
        return await self._stage(p.HELO, p.strings_data(name), session_level=True)

    async def mail(self, sender: str, args: Sequence[str] = ()) -> MilterVerdict | None:
        for f in self.filters:
            f.skip_message = False
        return await self._stage(p.MAIL, p.strings_data(f"<{sender}>", *args))

    async def rcpt(self, recipient: str, args: Sequence[str] = ()) -> MilterVerdict | None:
        return await self._stage(p.RCPT, p.strings_data(f"<{recipient}>", *args))

    async def data(self) -> MilterVerdict | None:
        return await self._stage(p.DATA)

    async def message(
        self, path: Path, rewrite: Callable[[Path], None]
    ) -> tuple[MilterVerdict | None, EnvelopeEdits]:
        """The message in ``path``, filter by filter (each sees the previous
        filters' edits, as in Postfix): headers, end of headers, body, end of
        message.  ``rewrite(new_path)`` installs an edited copy as the queue
        file."""
        edits = EnvelopeEdits()
        for f in self.filters:
            if f.failed or f.skip_session or f.skip_message or f.client is None:
                verdict = self._default(f) if f.failed else None
                if verdict is not None and verdict.action == "quarantine":
                    edits.quarantine = verdict.reason
                    continue
                if verdict is not None:
                    return verdict, edits
                continue
            try:
                verdict, responses = await self._message_to(f, path)
            except MilterError as e:
                self._fail(f, e)
                verdict = self._default(f)
                if verdict is not None and verdict.action == "quarantine":
                    edits.quarantine = verdict.reason
                    continue
                if verdict is not None:
                    return verdict, edits
                continue
            self._apply(f, responses, path, rewrite, edits)
            if verdict is not None:
                return verdict, edits
        return None, edits

    def abort(self) -> None:
        """SMFIC_ABORT: the transaction ended without a message (RSET, a
        rejected DATA, a lost connection)."""
        for f in self.filters:
            f.skip_message = False
            if f.client is not None and not f.failed:
                try:
                    f.client.send_only(p.ABORT)
                except MilterError as e:
                    self._fail(f, e)

    def close(self) -> None:
        """SMFIC_QUIT and close every connection."""
        for f in self.filters:
            if f.client is not None:
                try:
                    if not f.failed:
                        f.client.send_only(p.QUIT)
                except MilterError:
                    pass
                f.client.close()
                f.client = None

    # -- machinery --------------------------------------------------------------
    async def _stage(
        self, command: bytes, data: bytes = b"", *, session_level: bool = False
    ) -> MilterVerdict | None:
        if not self._connected and command != p.CONNECT:
            verdict = await self.connect("unknown", "", 0)
            if verdict is not None:
                return verdict
        for f in self.filters:
            if f.failed:
                verdict = self._default(f)
                if verdict is not None and verdict.action == "quarantine":
                    self.hold = verdict.reason
                elif verdict is not None:
                    return verdict
                continue
            if f.skip_session or (f.skip_message and not session_level):
                continue
            try:
                if f.client is None:
                    await self._open(f)
                client = f.client
                assert client is not None
                if not client.conn.wants(command):
                    continue
                self._send_macros(client, command)
                responses = await client.command(command, data)
            except MilterError as e:
                self._fail(f, e)
                verdict = self._default(f)
                if verdict is not None and verdict.action == "quarantine":
                    self.hold = verdict.reason
                elif verdict is not None:
                    return verdict
                continue
            verdict = self._decision(f, responses, session_level=session_level)
            if verdict is not None:
                return verdict
        return None

    async def _open(self, f: _Filter) -> None:
        client = MilterClient(self.reactor, f.spec)
        f.client = client
        await client.open()

    def _send_macros(self, client: MilterClient, command: bytes) -> None:
        names = client.conn.macros_for(command, self.lists.for_command(command))
        values = [(n, self.macros[n]) for n in names if self.macros.get(n)]
        client.conn.send_macros(command, values)

    def _decision(
        self, f: _Filter, responses: list[Response], *, session_level: bool
    ) -> MilterVerdict | None:
        if not responses:
            return None  # the filter asked not to reply to this step
        last = responses[-1]
        name = f.spec.address
        if last.kind == "accept":
            if session_level:
                f.skip_session = True
            else:
                f.skip_message = True
            return None
        if last.kind in ("continue", "skip"):
            return None
        if last.kind == "reject":
            return MilterVerdict("reject", REJECT_REPLY, milter=name)
        if last.kind == "tempfail":
            return MilterVerdict("tempfail", TEMPFAIL_REPLY, milter=name)
        if last.kind == "replycode":
            reply = parse_reply(last.args[0])
            action = "tempfail" if reply.code < 500 else "reject"
            return MilterVerdict(action, reply, milter=name)
        if last.kind == "discard":
            return MilterVerdict("discard", milter=name)
        return None

    def _fail(self, f: _Filter, error: MilterError) -> None:
        f.failed = str(error)
        self.log(f"warning: milter {f.spec.address}: {error}")
        if f.client is not None:
            f.client.close()

    def _default(self, f: _Filter) -> MilterVerdict | None:
        """milter_default_action for a filter that failed."""
        action = f.spec.default_action
        name = f.spec.address
        if action == "tempfail":
            return MilterVerdict("tempfail", TEMPFAIL_REPLY, milter=name)
        if action == "reject":
            return MilterVerdict("reject", REJECT_REPLY, milter=name)
        if action == "quarantine":
            return MilterVerdict("quarantine", reason="milter triggers HOLD action", milter=name)
        if action == "abort":
            return MilterVerdict(
                "abort", Reply(421, "7.0", "Error: milter unavailable"), milter=name
            )
        return None  # accept: carry on without it; the next session tries again

    async def _message_to(
        self, f: _Filter, path: Path
    ) -> tuple[MilterVerdict | None, list[Response]]:
        client = f.client
        assert client is not None
        conn = client.conn
        neg = conn.negotiated
        leadspc = neg is not None and bool(neg.steps & p.SMFIP_HDR_LEADSPC)
        with open(path, "rb") as fh:
            headers, _ = read_headers(fh)
            if conn.wants(p.HEADER):
                for raw in headers:
                    name, value = split_header(raw, leadspace=leadspc)
                    got = await client.command(p.HEADER, p.strings_data(name, value), content=True)
                    verdict = self._decision(f, got, session_level=False)
                    if verdict is not None or f.skip_message:
                        return verdict, []
            if conn.wants(p.EOH):
                self._send_macros(client, p.EOH)
                got = await client.command(p.EOH, content=True)
                verdict = self._decision(f, got, session_level=False)
                if verdict is not None or f.skip_message:
                    return verdict, []
            if conn.wants(p.BODY):
                for chunk in iter(lambda: fh.read(p.CHUNK), b""):
                    got = await client.command(p.BODY, chunk, content=True)
                    if got and got[-1].kind == "skip":
                        break
                    verdict = self._decision(f, got, session_level=False)
                    if verdict is not None or f.skip_message:
                        return verdict, []
        self._send_macros(client, p.BODYEOB)
        got = await client.command(p.BODYEOB, content=True)
        verdict = self._decision(f, got, session_level=False)
        mods = [r for r in got if not r.final and r.kind != "progress"]
        return verdict, mods

    def _apply(
        self,
        f: _Filter,
        mods: list[Response],
        path: Path,
        rewrite: Callable[[Path], None],
        edits: EnvelopeEdits,
    ) -> None:
        """A filter's end-of-message modifications."""
        neg = f.client.conn.negotiated if f.client is not None else None
        leadspc = neg is not None and bool(neg.steps & p.SMFIP_HDR_LEADSPC)
        header_mods = [m for m in mods if m.kind in ("addheader", "insheader", "chgheader")]
        bodies = [m.data for m in mods if m.kind == "replbody"]
        for m in mods:
            if m.kind == "chgfrom":
                edits.sender = m.args[0].strip("<>")
                edits.sender_args = m.args[1] if len(m.args) > 1 else ""
            elif m.kind in ("addrcpt", "addrcpt_par"):
                edits.add_recipients.append(m.args[0].strip("<>"))
            elif m.kind == "delrcpt":
                edits.delete_recipients.append(m.args[0].strip("<>"))
            elif m.kind == "quarantine":
                edits.quarantine = m.args[0] or "milter triggers HOLD action"
        if not header_mods and not bodies:
            return
        new = path.with_name(path.name + ".milter")
        with open(path, "rb") as src, open(new, "wb") as out:
            headers, _ = read_headers(src)
            headers = edit_headers(headers, header_mods, leadspace=leadspc)
            out.write(b"".join(headers))
            out.write(b"\r\n")
            if bodies:
                for chunk in bodies:
                    out.write(chunk)
            else:
                for chunk in iter(lambda: src.read(p.CHUNK), b""):
                    out.write(chunk)
        try:
            rewrite(new)
        finally:
            if new.exists():
                os.unlink(new)


# -- the message's headers -------------------------------------------------------
def read_headers(fh: BinaryIO) -> tuple[list[bytes], int]:
    """The header lines of the file at ``fh`` (each with its continuation
    lines and CRLFs), leaving ``fh`` at the first body octet.  At most
    HEADER_LIMIT octets are read as headers."""
    headers: list[bytes] = []
    consumed = 0
    while consumed < HEADER_LIMIT:
        pos = fh.tell()
        line = fh.readline(HEADER_LIMIT)
        if not line:
            break
        if line in (b"\r\n", b"\n"):
            return headers, consumed + len(line)
        if line[:1] in (b" ", b"\t") and headers:
            headers[-1] += line
        elif b":" in line.split(b"\r\n")[0]:
            headers.append(line)
        else:
            fh.seek(pos)  # not a header: the body starts here
            break
        consumed += len(line)
    return headers, consumed


def split_header(raw: bytes, *, leadspace: bool) -> tuple[str, str]:
    """Name and value as the milter protocol carries them: folding as LF,
    the one space after the colon removed unless SMFIP_HDR_LEADSPC."""
    text = raw.decode("utf-8", "surrogateescape").rstrip("\r\n").replace("\r\n", "\n")
    name, _, value = text.partition(":")
    if not leadspace and value.startswith(" "):
        value = value[1:]
    return name.strip(), value


def header_line(name: str, value: str, *, leadspace: bool) -> bytes:
    value = value.replace("\r\n", "\n").replace("\n", "\r\n")
    # With SMFIP_HDR_LEADSPC the value carries its own leading space; a
    # filter that sends none still gets the customary one.
    sep = ":" if leadspace and value[:1] in (" ", "\t") else ": "
    return f"{name}{sep}{value}\r\n".encode("utf-8", "surrogateescape")


def edit_headers(headers: list[bytes], mods: Sequence[Response], *, leadspace: bool) -> list[bytes]:
    """Apply SMFIR_ADDHEADER, SMFIR_INSHEADER and SMFIR_CHGHEADER in order.
    CHGHEADER's index counts the headers of that name from 1; an empty value
    deletes; an index past the last adds the header (libmilter semantics)."""
    out = list(headers)
    for m in mods:
        name, value = m.args
        if m.kind == "addheader":
            out.append(header_line(name, value, leadspace=leadspace))
        elif m.kind == "insheader":
            out.insert(min(m.index, len(out)), header_line(name, value, leadspace=leadspace))
        elif m.kind == "chgheader":
            seen = 0
            for i, raw in enumerate(out):
                if _header_name(raw) == name.lower():
                    seen += 1
                    if seen == max(m.index, 1):
                        if value:
                            out[i] = header_line(name, value, leadspace=leadspace)
                        else:
                            del out[i]
                        break
            else:
                if value:
                    out.append(header_line(name, value, leadspace=leadspace))
    return out


def _header_name(raw: bytes) -> str:
    return raw.split(b":", 1)[0].strip().decode("utf-8", "replace").lower()


def macro_values(values: Mapping[str, str]) -> dict[str, str]:
    """Drop empty values: Postfix sends only the macros it knows."""
    return {k: v for k, v in values.items() if v}
