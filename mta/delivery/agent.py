"""The SMTP delivery agent: one route, a group of recipients → a reply each.

Input: a :class:`mta.delivery.route.Route`, the message's envelope, the
recipients to try and the queue file.  Output: an ``Attempt`` (a reply per
recipient and the relay that gave them).  It looks up the next hop's hosts
(MX, or the host itself for ``[host]``), then tries them in order: a host
that cannot be reached, or that greets with 4xx, passes the mail to the next
one (RFC 5321 5.1); the first host that takes part in a transaction decides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mta import settings
from mta.config import Config
from mta.delivery import mx
from mta.delivery.route import Route
from mta.delivery.smtp import deliver
from mta.envelope import Envelope, Recipient
from mta.queue.manager import Attempt
from mta.reply import Reply


class DeliveryAgent:
    def __init__(self, reactor: Any, cfg: Config) -> None:
        self.reactor = reactor
        self.reconfigure(cfg)

    def reconfigure(self, cfg: Config) -> None:
        self.helo_name = cfg.str("smtp_helo_name")
        self.timeouts = settings.timeouts(cfg)
        self.families = cfg.list("inet_protocols")[0] if cfg.list("inet_protocols") else "all"
        self.resolver = mx.make_resolver(cfg.list("dns_nameservers"))

    async def __call__(
        self, route: Route, envelope: Envelope, recipients: list[Recipient], message_path: Path
    ) -> Attempt:
        try:
            hosts = await mx.resolve_mx(
                self.reactor, self.resolver, route.host, use_mx=route.use_mx, families=self.families
            )
        except mx.LookupFailed as e:
            return Attempt([e.reply] * len(recipients), "none")
        last: Attempt | None = None
        for host in hosts:
            for address in host.addresses:
                result = await deliver(
                    self.reactor,
                    host=address,
                    port=route.port,
                    helo_name=self.helo_name,
                    envelope=envelope,
                    recipients=recipients,
                    message_path=message_path,
                    timeouts=self.timeouts,
                    server_name=host.name,
                )
                last = Attempt(list(result.replies), result.relay)
                if not result.try_next_host:
                    return last
        if last is None:
            return Attempt(
                [Reply(451, "4.4", "no address to deliver to")] * len(recipients), "none"
            )
        return last
