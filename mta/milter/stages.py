"""The milter stages of one smtpd session: facts in, SMTP replies out.

Job: keep a ``MilterSession`` for an SMTP session, fill the Postfix macros
(``j``, ``_``, ``{daemon_name}``, ``{client_addr}``, ``i``, ``{auth_authen}``,
``{tls_version}``, ``{mail_addr}``, ``{rcpt_addr}`` ...) from the session's
facts, and turn the filters' verdicts into the reply smtpd gives and the
``milter-reject`` log line.  Inputs: ``MilterSettings``, the reactor, the
facts at each stage.  Outputs: ``Reply`` or None; end-of-message outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mta.milter.config import MilterSettings
from mta.milter.session import EnvelopeEdits, MilterSession, MilterVerdict
from mta.reply import Reply


@dataclass
class MessageOutcome:
    """End of message: a reply instead of queueing, or what to queue."""

    reply: Reply | None = None  # reject/tempfail/abort
    discard: bool = False
    hold: str | None = None
    edits: EnvelopeEdits = field(default_factory=EnvelopeEdits)


class SmtpdMilters:
    """The milters of one SMTP session."""

    def __init__(
        self,
        reactor: Any,
        settings: MilterSettings,
        *,
        hostname: str,
        log: Callable[[str], None],
    ) -> None:
        self.session = MilterSession(reactor, settings.specs, macro_lists=settings.macros, log=log)
        self.log = log
        m = self.session.macros
        m["j"] = hostname
        m["{daemon_name}"] = settings.daemon_name
        m["v"] = settings.v
        self.discard = False  # a filter said DISCARD before end of data
        self.hold: str | None = None  # a filter failed with quarantine
        self._connect_done = False
        self._connect_refusal: Reply | None = None

    # -- facts → macros -----------------------------------------------------------
    def set_client(self, name: str, addr: str, port: int, local: tuple[str, int]) -> None:
        m = self.session.macros
        m["{client_name}"] = name
        m["{client_addr}"] = addr
        m["{client_port}"] = str(port)
        m["{client_ptr}"] = name
        m["_"] = f"{name} [{addr}]"
        m["{daemon_addr}"] = local[0]
        m["{daemon_port}"] = str(local[1])
        m["{if_addr}"] = local[0]

    def set(self, **values: str) -> None:
        """Macros by name: ``auth_authen="u"`` sets ``{auth_authen}``;
        ``i="ID"`` sets ``i``."""
        for key, value in values.items():
            name = key if len(key) == 1 else f"{{{key}}}"
            self.session.macros[name] = value

    # -- stages -------------------------------------------------------------------
    async def connect(self) -> Reply | None:
        """SMFIC_CONNECT, once, before the first other stage.  A refusal at
        connect refuses every later command of the session (Postfix)."""
        if self._connect_done:
            return self._connect_refusal
        self._connect_done = True
        m = self.session.macros
        port = int(m.get("{client_port}", "0") or 0)
        verdict = await self.session.connect(
            m.get("{client_name}", "unknown"), m.get("{client_addr}", ""), port
        )
        self._connect_refusal = self._reply(verdict)
        return self._connect_refusal

    async def helo(self, name: str) -> Reply | None:
        return await self.connect() or self._reply(await self.session.helo(name))

    async def mail(self, sender: str, args: list[str]) -> Reply | None:
        self.discard = False
        local, _, domain = sender.rpartition("@")
        self.set(mail_addr=sender, mail_host=domain if local else "", mail_mailer="smtp")
        return await self.connect() or self._reply(await self.session.mail(sender, args))

    async def rcpt(self, recipient: str, args: list[str]) -> Reply | None:
        _, _, domain = recipient.rpartition("@")
        self.set(rcpt_addr=recipient, rcpt_host=domain, rcpt_mailer="smtp")
        return await self.connect() or self._reply(await self.session.rcpt(recipient, args))

    async def data(self, queue_id: str) -> Reply | None:
        self.set(i=queue_id)
        return await self.connect() or self._reply(await self.session.data())

    async def message(self, path: Path, rewrite: Callable[[Path], None]) -> MessageOutcome:
        """Headers, body and end of message to each filter; the edits."""
        verdict, edits = await self.session.message(path, rewrite)
        out = MessageOutcome(edits=edits, discard=self.discard, hold=self.hold or self.session.hold)
        if edits.quarantine is not None:
            out.hold = edits.quarantine
        if verdict is not None:
            if verdict.action == "discard":
                out.discard = True
            else:
                out.reply = self._reply(verdict)
        return out

    def abort(self) -> None:
        self.discard = False
        self.session.abort()

    def close(self) -> None:
        self.session.close()

    def _reply(self, verdict: MilterVerdict | None) -> Reply | None:
        if verdict is None:
            return None
        if verdict.action == "discard":
            self.discard = True  # the message is accepted and dropped
            return None
        if verdict.action == "quarantine":
            self.hold = verdict.reason
            return None
        return verdict.reply
