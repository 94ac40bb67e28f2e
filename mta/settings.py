"""Runtime settings built from a validated Config.

Input: a frozen :class:`mta.config.Config` (and, per listener, its master.cf
service).  Output: the frozen settings objects each part runs with — the
SMTP server per service, the queue manager, delivery.  Building them is
where restriction lists and lookup tables are compiled, so every error is
found at check/reload time; a reload builds a new set and swaps it whole.
"""

from __future__ import annotations

import socket
from pathlib import Path

from mta.bounce import NoticeSettings
from mta.config import Config, MasterService
from mta.delivery.route import Router
from mta.delivery.smtp import Timeouts
from mta.policy.restrictions import Domains, RestrictionError, compile_restrictions
from mta.queue.manager import ManagerSettings
from mta.queue.scheduler import RetryPolicy
from mta.smtp.server import ServerSettings
from mta.smtpd import Restrictions, SmtpdSettings
from mta.tables import LookupTable
from mta.tables.matchlist import DomainList, NetworkList


class SettingsError(ValueError):
    """A value that parsed but cannot be used (a bad restriction, table, ...)."""


def _port(value: str, default: int) -> int:
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        return socket.getservbyname(value, "tcp")
    except OSError:
        return {"smtp": 25, "lmtp": 24, "submission": 587, "smtps": 465}.get(value, default)


def domains(cfg: Config) -> Domains:
    base = cfg.main_cf.parent
    parent = "relay_domains" in cfg.list("parent_domain_matches_subdomains")
    try:
        return Domains(
            mydestination=DomainList(
                cfg.list("mydestination"),
                parent_matches_subdomains="mydestination"
                in cfg.list("parent_domain_matches_subdomains"),
                base_dir=base,
            ),
            relay_domains=DomainList(
                cfg.list("relay_domains"), parent_matches_subdomains=parent, base_dir=base
            ),
            mynetworks=NetworkList(cfg.list("mynetworks"), base_dir=base),
        )
    except Exception as e:
        raise SettingsError(str(e)) from e


def smtpd(cfg: Config, svc: MasterService | None = None) -> SmtpdSettings:
    """Settings of one smtpd listener; ``cfg`` already has the service's
    -o overrides applied."""
    hostname = cfg.str("myhostname")
    doms = domains(cfg)
    base = cfg.main_cf.parent
    tables: dict[str, LookupTable] = {}
    parent = "smtpd_access_maps" in cfg.list("parent_domain_matches_subdomains")

    def rl(name: str):  # type: ignore[no-untyped-def]
        try:
            return compile_restrictions(
                cfg.list(name),
                domains=doms,
                base_dir=base,
                tables=tables,
                parent_matches_subdomains=parent,
            )
        except RestrictionError as e:
            raise SettingsError(f"{name}: {e}") from e

    restrictions = Restrictions(
        client=rl("smtpd_client_restrictions"),
        helo=rl("smtpd_helo_restrictions"),
        sender=rl("smtpd_sender_restrictions"),
        relay=rl("smtpd_relay_restrictions"),
        recipient=rl("smtpd_recipient_restrictions"),
        data=rl("smtpd_data_restrictions"),
        delay_reject=cfg.bool("smtpd_delay_reject"),
    )
    if not restrictions.relay.names and not restrictions.recipient.names:
        # Postfix refuses this too: it would be an open relay.
        raise SettingsError(
            "smtpd_relay_restrictions and smtpd_recipient_restrictions are both empty: "
            "that would make an open relay"
        )
    maxproc = cfg.int("default_process_limit")
    if svc is not None:
        maxproc = svc.process_limit(maxproc)
    session = ServerSettings(
        hostname=hostname,
        banner=cfg.str("smtpd_banner"),
        message_size_limit=cfg.size("message_size_limit"),
        recipient_limit=cfg.int("smtpd_recipient_limit"),
        hard_error_limit=cfg.int("smtpd_hard_error_limit"),
        helo_required=cfg.bool("smtpd_helo_required"),
        vrfy_enabled=not cfg.bool("disable_vrfy_command"),
        forbid_bare_newline=cfg.bool("smtpd_forbid_bare_newline"),
    )
    return SmtpdSettings(
        service=svc.name if svc is not None else "smtp",
        session=session,
        restrictions=restrictions,
        domains=doms,
        mail_name=cfg.str("mail_name"),
        timeout=float(cfg.time("smtpd_timeout")),
        max_sessions=max(1, maxproc),
    )


def timeouts(cfg: Config) -> Timeouts:
    return Timeouts(
        connect=cfg.time("smtp_connect_timeout"),
        helo=cfg.time("smtp_helo_timeout"),
        mail=cfg.time("smtp_mail_timeout"),
        rcpt=cfg.time("smtp_rcpt_timeout"),
        data_init=cfg.time("smtp_data_init_timeout"),
        data_xfer=cfg.time("smtp_data_xfer_timeout"),
        data_done=cfg.time("smtp_data_done_timeout"),
        quit=cfg.time("smtp_quit_timeout"),
    )


def manager(cfg: Config) -> ManagerSettings:
    hostname = cfg.str("myhostname")
    return ManagerSettings(
        hostname=hostname,
        router=Router(
            relayhost=cfg.str("relayhost"), smtp_port=_port(cfg.str("smtp_tcp_port"), 25)
        ),
        retry=RetryPolicy(
            minimal_backoff=cfg.time("minimal_backoff_time"),
            maximal_backoff=cfg.time("maximal_backoff_time"),
            queue_lifetime=cfg.time("maximal_queue_lifetime"),
            bounce_lifetime=cfg.time("bounce_queue_lifetime"),
            delay_warning=cfg.time("delay_warning_time"),
        ),
        active_limit=cfg.int("qmgr_message_active_limit"),
        destination_concurrency=cfg.int("smtp_destination_concurrency_limit"),
        destination_recipients=cfg.int("smtp_destination_recipient_limit"),
        soft_bounce=cfg.bool("soft_bounce"),
        notice=NoticeSettings(hostname=hostname, mail_name=cfg.str("mail_name")),
        double_bounce_sender=cfg.str("double_bounce_sender"),
    )


def queue_directory(cfg: Config) -> Path:
    return cfg.path(cfg.str("queue_directory"))


def maillog_path(cfg: Config) -> Path | None:
    value = cfg.str("maillog_file")
    return cfg.path(value) if value else None
