"""The decision points of an SMTP session: Postfix's smtpd_check_client() ... _eod().

Input: a compiled :class:`SmtpdPolicy` (the restriction lists of one smtpd
service and their settings), the session's :class:`Facts`, the I/O
:class:`Services` and the SMTP command being answered.
Output: a :class:`Decision` — the verdict (permit, reject or defer with the
reply and the rule) and the log notes of the evaluation, in order; the
message actions that access tables asked for are left in ``facts.effects``.

As in Postfix smtpd_check.c: with ``smtpd_delay_reject = yes`` the client,
HELO and sender restrictions run again at each RCPT TO (so a rejected client
still sees which recipient was refused and why); relay restrictions run
before the recipient restrictions, and each list must pass on its own (a
permit ends only its own list).  A ``defer_if_permit`` raised in an earlier
stage carries into later ones; a pending one turns the final permit of RCPT,
DATA or end of data into its 450 reply.  ``reject_unlisted_recipient`` runs
at the end of RCPT unless a list ran it already
(``smtpd_reject_unlisted_recipient``).  Unqualified ``postmaster`` is always
accepted (RFC 5321 4.5.1).
"""

from __future__ import annotations

from dataclasses import dataclass

from mta.policy.restrictions import (
    CLIENT,
    DATA,
    EOD,
    HELO,
    NO_DECISION,
    OK,
    RECIPIENT,
    REJECT,
    SENDER,
    Aborted,
    Compiler,
    Evaluation,
    Facts,
    ListContext,
    Note,
    PolicySettings,
    RestrictionList,
    Services,
    Status,
    Verdict,
    check_rcpt_maps,
    run_list,
)


@dataclass(frozen=True)
class Decision:
    """A verdict and the log notes that led to it."""

    verdict: Verdict
    notes: tuple[Note, ...] = ()


@dataclass(frozen=True)
class SmtpdPolicy:
    """The compiled restriction lists of one smtpd service."""

    client: RestrictionList
    helo: RestrictionList
    sender: RestrictionList
    relay: RestrictionList
    recipient: RestrictionList
    data: RestrictionList
    end_of_data: RestrictionList
    settings: PolicySettings
    compiler: Compiler
    delay_reject: bool = True
    reject_unlisted_recipient: bool = True  # smtpd_reject_unlisted_recipient
    reject_unlisted_sender: bool = False  # smtpd_reject_unlisted_sender

    @property
    def needs_io(self) -> bool:
        """Whether a decision may have to wait for I/O (DNS, policy, probes)."""
        lists = (
            self.client,
            self.helo,
            self.sender,
            self.relay,
            self.recipient,
            self.data,
            self.end_of_data,
        )
        return any(rlist.needs_io for rlist in lists)

    # -- helpers -----------------------------------------------------------------
    def _evaluation(self, facts: Facts, services: Services | None, where: str) -> Evaluation:
        return Evaluation(facts, services, self.settings, where, nested=self.compiler.nested)

    @staticmethod
    async def _run(ev: Evaluation, rlist: RestrictionList, ctx: ListContext) -> Status:
        if not rlist.items:
            return 0
        try:
            return await run_list(ev, rlist, ctx)
        except Aborted:
            return REJECT

    @staticmethod
    def _apply_defer_if_permit(ev: Evaluation, status: Status) -> Status:
        """Force a permit into the deferral some earlier trouble asked for."""
        if status != REJECT and ev.defer_if_permit is not None:
            deferred = ev.defer_if_permit
            ev.defer_if_permit = None
            ev.rules = [deferred.rule]
            status = ev.reject(deferred.code, deferred.dsn, deferred.text)
            ev.rules = []
        return status

    @staticmethod
    def _decision(ev: Evaluation, status: Status) -> Decision:
        if status == REJECT and ev.reply is not None:
            if ev.reply.code < 500:
                return Decision(Verdict("defer", ev.reply, ev.rule), tuple(ev.notes))
            return Decision(Verdict("reject", ev.reply, ev.rule), tuple(ev.notes))
        verdict = Verdict("permit") if status == OK else NO_DECISION
        return Decision(verdict, tuple(ev.notes))

    # -- the stages -------------------------------------------------------------------
    async def _client(self, facts: Facts, services: Services | None, where: str) -> Evaluation:
        ev = self._evaluation(facts, services, where)
        status = await self._run(ev, self.client, ListContext(facts.client, CLIENT, _acl("client")))
        facts.dip_client = ev.defer_if_permit
        ev.status = status
        return ev

    async def _helo(self, facts: Facts, services: Services | None, where: str) -> Evaluation:
        ev = self._evaluation(facts, services, where)
        ev.defer_if_permit = facts.dip_client
        status = DUNNO_STATUS
        if facts.helo:
            ctx = ListContext(facts.helo, HELO, _acl("helo"))
            status = await self._run(ev, self.helo, ctx)
        facts.dip_helo = ev.defer_if_permit
        ev.status = status
        return ev

    async def _mail(self, facts: Facts, services: Services | None, where: str) -> Evaluation:
        ev = self._evaluation(facts, services, where)
        ev.defer_if_permit = facts.dip_client or facts.dip_helo
        status = DUNNO_STATUS
        sender = facts.sender
        if sender is not None:
            ctx = ListContext(sender, SENDER, _acl("sender"))
            status = await self._run(ev, self.sender, ctx)
            facts.dip_sender = ev.defer_if_permit
            unlisted_checked = any(
                name in ("reject_unlisted_sender",) for name in self.sender.names
            )
            if (
                self.reject_unlisted_sender
                and status != REJECT
                and not unlisted_checked
                and facts.effects.discard is None
                and sender
            ):
                try:
                    status = check_rcpt_maps(ev, sender, SENDER)
                except Aborted:
                    status = REJECT
        ev.status = status
        return ev

    async def check_client(self, facts: Facts, services: Services | None) -> Decision:
        """At connect (only with smtpd_delay_reject = no)."""
        ev = await self._client(facts, services, "CONNECT")
        return self._decision(ev, ev.status)

    async def check_helo(self, facts: Facts, services: Services | None, where: str) -> Decision:
        """At HELO/EHLO (only with smtpd_delay_reject = no): client, then HELO."""
        ev = await self._client(facts, services, where)
        if ev.status == REJECT:
            return self._decision(ev, REJECT)
        ev2 = await self._helo(facts, services, where)
        ev2.notes[:0] = ev.notes
        return self._decision(ev2, ev2.status)

    async def check_mail(self, facts: Facts, services: Services | None) -> Decision:
        """At MAIL FROM (only with smtpd_delay_reject = no): client, HELO, sender."""
        notes: list[Note] = []
        for stage in (self._client, self._helo, self._mail):
            ev = await stage(facts, services, "MAIL")
            notes.extend(ev.notes)
            if ev.status == REJECT:
                ev.notes = notes
                return self._decision(ev, REJECT)
        ev.notes = notes
        return self._decision(ev, ev.status)

    async def check_rcpt(self, facts: Facts, services: Services | None) -> Decision:
        """At RCPT TO: (delayed client, HELO, sender), relay, recipient."""
        recipient = facts.recipient
        if recipient is None or recipient.lower() == "postmaster":
            return Decision(NO_DECISION)
        notes: list[Note] = []
        if self.delay_reject:
            for stage in (self._client, self._helo, self._mail):
                ev = await stage(facts, services, "RCPT")
                notes.extend(ev.notes)
                if ev.status == REJECT:
                    ev.notes = notes
                    return self._decision(ev, REJECT)
        ev = self._evaluation(facts, services, "RCPT")
        ev.defer_if_permit = facts.dip_sender or (
            None if self.delay_reject else (facts.dip_client or facts.dip_helo)
        )
        ctx = ListContext(recipient, RECIPIENT, _acl("recipient"))
        status = DUNNO_STATUS
        for rlist in (self.relay, self.recipient):
            ev.warn_if_reject = 0
            ev.defer_if_reject = None
            status = await self._run(ev, rlist, ctx)
            if status == REJECT:
                break
        status = self._apply_defer_if_permit(ev, status)
        unlisted_checked = any(
            name in ("reject_unlisted_recipient", "check_recipient_maps")
            for name in self.relay.names + self.recipient.names
        )
        if (
            self.reject_unlisted_recipient
            and status != REJECT
            and not unlisted_checked
            and facts.effects.discard is None
        ):
            try:
                status = check_rcpt_maps(ev, recipient, RECIPIENT)
            except Aborted:
                status = REJECT
        ev.notes[:0] = notes
        return self._decision(ev, status)

    async def check_data(self, facts: Facts, services: Services | None, where: str) -> Decision:
        """At DATA (or the first BDAT)."""
        return await self._last(facts, services, where, self.data, "DATA", DATA)

    async def check_eod(self, facts: Facts, services: Services | None) -> Decision:
        """After the end of the message, before it is queued."""
        return await self._last(
            facts, services, "END-OF-MESSAGE", self.end_of_data, "END-OF-MESSAGE", EOD
        )

    async def _last(
        self,
        facts: Facts,
        services: Services | None,
        where: str,
        rlist: RestrictionList,
        name: str,
        klass: str,
    ) -> Decision:
        # One recipient is named in the logs; several are not (Postfix).
        saved = facts.recipient
        if facts.rcpt_count > 1:
            facts.recipient = None
        try:
            ev = self._evaluation(facts, services, where)
            status = await self._run(ev, rlist, ListContext(name, klass, None))
            status = self._apply_defer_if_permit(ev, status)
        finally:
            facts.recipient = saved
        return self._decision(ev, status)


DUNNO_STATUS: Status = 0


def _acl(klass: str) -> str | None:
    return {
        "client": "check_client_access",
        "helo": "check_helo_access",
        "sender": "check_sender_access",
        "recipient": "check_recipient_access",
    }.get(klass)
