"""Runtime settings built from a validated Config.

Input: a frozen :class:`mta.config.Config` (and, per listener, its master.cf
service).  Output: the frozen settings objects each part runs with — the
SMTP server per service, the queue manager, delivery.  Building them is
where restriction lists and lookup tables are compiled, so every error is
found at check/reload time; a reload builds a new set and swaps it whole.
"""

from __future__ import annotations

import re
import socket
from dataclasses import replace as dataclass_replace
from pathlib import Path

from mta.bounce import NoticeSettings
from mta.config import Config, MasterService, Problem
from mta.delivery import mx
from mta.delivery.bcc import BccSettings
from mta.delivery.options import DeliverySettings
from mta.delivery.route import Router
from mta.delivery.smtp import Timeouts
from mta.delivery.tls import PolicyError, TrustStore, parse_protocols
from mta.delivery.transport import TransportMap, Transports
from mta.delivery.virtual import VirtualMailboxes
from mta.milter.config import milter_settings
from mta.policy.checks import SmtpdPolicy
from mta.policy.content import ContentChecks
from mta.policy.policyclient import PolicyDefaults
from mta.policy.restrictions import Codes, Compiler, Domains, PolicySettings, RestrictionError
from mta.policy.verify import VerifySettings, parse_map_spec, shared_map_config
from mta.queue.manager import ManagerSettings
from mta.queue.scheduler import RetryPolicy
from mta.redisclient import RedisConfig
from mta.sasl import SecurityOptions
from mta.smtp.server import ServerSettings
from mta.smtpd import Limits, SaslSettings, SmtpdSettings, TlsSettings
from mta.tables import LookupTable, TableError, open_table
from mta.tables.matchlist import DomainList, NetworkList
from mta.tls import TlsError, cipher_list, server_tls


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
            virtual_mailbox_domains=DomainList(
                cfg.list("virtual_mailbox_domains"), parent_matches_subdomains=False, base_dir=base
            ),
        )
    except Exception as e:
        raise SettingsError(str(e)) from e


def smtpd(cfg: Config, svc: MasterService | None = None) -> SmtpdSettings:
    """Settings of one smtpd listener; ``cfg`` already has the service's
    -o overrides applied."""
    doms = domains(cfg)
    restrictions = smtpd_policy(cfg, doms)
    maxproc = cfg.int("default_process_limit")
    if svc is not None:
        maxproc = svc.process_limit(maxproc)
    tls = smtpd_tls(cfg)
    sasl = smtpd_sasl(cfg)
    session = smtpd_session(cfg, tls, sasl)
    return SmtpdSettings(
        service=svc.name if svc is not None else "smtp",
        session=session,
        restrictions=restrictions,
        domains=doms,
        mail_name=cfg.str("mail_name"),
        timeout=float(cfg.time("smtpd_timeout")),
        max_sessions=max(1, maxproc),
        tls=tls,
        sasl=sasl,
        limits=smtpd_limits(cfg),
        proxy_protocol=cfg.str("smtpd_upstream_proxy_protocol"),
        proxy_timeout=float(cfg.time("smtpd_upstream_proxy_timeout")),
        bcc=bcc(cfg),
        virtual=virtual_mailboxes(cfg),
        content=content_checks(cfg),
        milters=milter_settings(cfg),
    )


# Restrictions of which Postfix wants one in the relay or recipient lists
# (smtpd_check.c rcpt_required): without one the server is an open relay.
_RELAY_REQUIRED = frozenset(
    {"reject_unauth_destination", "defer_unauth_destination", "reject", "defer", "defer_if_permit"}
)


def smtpd_policy(cfg: Config, doms: Domains) -> SmtpdPolicy:
    """The smtpd_*_restrictions of one service, compiled (tables opened
    once, shared by the lists)."""
    opened: dict[str, LookupTable] = {}

    def open_spec(spec: str) -> LookupTable:
        table = opened.get(spec)
        if table is None:
            table = opened[spec] = open_table(spec, base_dir=cfg.main_cf.parent)
        return table

    compiler = Compiler(policy_settings(cfg, doms), open_spec=open_spec)

    def rl(name: str, klass: str):  # type: ignore[no-untyped-def]
        try:
            return compiler.compile(cfg.list(name), klass)  # type: ignore[arg-type]
        except RestrictionError as e:
            raise SettingsError(f"{name}: {e}") from e

    policy = SmtpdPolicy(
        client=rl("smtpd_client_restrictions", "client"),
        helo=rl("smtpd_helo_restrictions", "helo"),
        sender=rl("smtpd_sender_restrictions", "sender"),
        relay=rl("smtpd_relay_restrictions", "recipient"),
        recipient=rl("smtpd_recipient_restrictions", "recipient"),
        data=rl("smtpd_data_restrictions", "data"),
        end_of_data=rl("smtpd_end_of_data_restrictions", "end_of_data"),
        settings=compiler.settings,
        compiler=compiler,
        delay_reject=cfg.bool("smtpd_delay_reject"),
        reject_unlisted_recipient=cfg.bool("smtpd_reject_unlisted_recipient"),
        reject_unlisted_sender=cfg.bool("smtpd_reject_unlisted_sender"),
    )
    names = {n.split(" ", 1)[0] for n in policy.relay.names + policy.recipient.names}
    if not names & _RELAY_REQUIRED:
        # Postfix refuses this too: it would be an open relay.
        raise SettingsError(
            "in parameter smtpd_relay_restrictions or smtpd_recipient_restrictions, specify "
            "at least one working instance of: reject_unauth_destination, "
            "defer_unauth_destination, reject, defer or defer_if_permit"
        )
    return policy


_RESTRICTION_LISTS = (
    ("smtpd_client_restrictions", "client"),
    ("smtpd_helo_restrictions", "helo"),
    ("smtpd_sender_restrictions", "sender"),
    ("smtpd_relay_restrictions", "recipient"),
    ("smtpd_recipient_restrictions", "recipient"),
    ("smtpd_data_restrictions", "data"),
    ("smtpd_end_of_data_restrictions", "end_of_data"),
)
_POLICY_TABLES = (
    "rbl_reply_maps",
    "relay_recipient_maps",
    "local_recipient_maps",
    "header_checks",
    "mime_header_checks",
    "nested_header_checks",
    "body_checks",
)


def policy_problems(cfg: Config) -> list[Problem]:
    """Every bad restriction list and policy table on its own, located where
    the parameter is set (mta check shows them all, not only the first)."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for name in _POLICY_TABLES:
        try:
            tables(cfg, name)
        except SettingsError as e:
            reason = str(e).removeprefix(f"{name}: ")
            if reason not in seen:  # mime_header_checks = $header_checks: once
                seen.add(reason)
                problems.append(cfg.problem(name, reason))
    try:
        doms = domains(cfg)
        compiler = Compiler(
            policy_settings(cfg, doms),
            open_spec=lambda spec: open_table(spec, base_dir=cfg.main_cf.parent),
        )
    except (SettingsError, ValueError) as e:
        return problems or [cfg.problem("smtpd_recipient_restrictions", str(e))]
    for name, klass in _RESTRICTION_LISTS:
        try:
            compiler.compile(cfg.list(name), klass)  # type: ignore[arg-type]
        except RestrictionError as e:
            problems.append(cfg.problem(name, str(e)))
    return problems


def policy_settings(cfg: Config, doms: Domains) -> PolicySettings:
    """What the restrictions read from main.cf."""

    def code(name: str) -> int:
        return cfg.int(name)

    return PolicySettings(
        domains=doms,
        codes=Codes(
            access_map_reject_code=code("access_map_reject_code"),
            access_map_defer_code=code("access_map_defer_code"),
            reject_code=code("reject_code"),
            defer_code=code("defer_code"),
            relay_domains_reject_code=code("relay_domains_reject_code"),
            invalid_hostname_reject_code=code("invalid_hostname_reject_code"),
            non_fqdn_reject_code=code("non_fqdn_reject_code"),
            unknown_address_reject_code=code("unknown_address_reject_code"),
            unknown_hostname_reject_code=code("unknown_hostname_reject_code"),
            unknown_relay_recipient_reject_code=code("unknown_relay_recipient_reject_code"),
            unknown_local_recipient_reject_code=code("unknown_local_recipient_reject_code"),
            maps_rbl_reject_code=code("maps_rbl_reject_code"),
            multi_recipient_bounce_reject_code=code("multi_recipient_bounce_reject_code"),
            plaintext_reject_code=code("plaintext_reject_code"),
            unverified_recipient_reject_code=code("unverified_recipient_reject_code"),
            unverified_recipient_defer_code=code("unverified_recipient_defer_code"),
            unverified_sender_reject_code=code("unverified_sender_reject_code"),
            unverified_sender_defer_code=code("unverified_sender_defer_code"),
        ),
        parent_matches_subdomains="smtpd_access_maps"
        in cfg.list("parent_domain_matches_subdomains"),
        recipient_delimiter=cfg.str("recipient_delimiter"),
        null_access_key=cfg.str("smtpd_null_access_lookup_key"),
        unknown_address_tempfail_action=cfg.str("unknown_address_tempfail_action"),  # type: ignore[arg-type]
        unknown_helo_hostname_tempfail_action=cfg.str(  # type: ignore[arg-type]
            "unknown_helo_hostname_tempfail_action"
        ),
        unverified_recipient_tempfail_action=cfg.str(  # type: ignore[arg-type]
            "unverified_recipient_tempfail_action"
        ),
        unverified_sender_tempfail_action=cfg.str(  # type: ignore[arg-type]
            "unverified_sender_tempfail_action"
        ),
        unverified_recipient_reject_reason=cfg.str("unverified_recipient_reject_reason"),
        unverified_sender_reject_reason=cfg.str("unverified_sender_reject_reason"),
        default_rbl_reply=cfg.str("default_rbl_reply"),
        rbl_reply_maps=tables(cfg, "rbl_reply_maps"),
        relay_recipient_maps=tables(cfg, "relay_recipient_maps"),
        local_recipient_maps=tables(cfg, "local_recipient_maps"),
        show_user_unknown_table_name=cfg.bool("show_user_unknown_table_name"),
        policy_defaults=PolicyDefaults(
            timeout=float(cfg.time("smtpd_policy_service_timeout")),
            max_idle=float(cfg.time("smtpd_policy_service_max_idle")),
            max_ttl=float(cfg.time("smtpd_policy_service_max_ttl")),
            try_limit=cfg.int("smtpd_policy_service_try_limit"),
            retry_delay=float(cfg.time("smtpd_policy_service_retry_delay")),
            request_limit=cfg.int("smtpd_policy_service_request_limit"),
            default_action=cfg.str("smtpd_policy_service_default_action"),
            policy_context=cfg.str("smtpd_policy_service_policy_context"),
            queue_directory=queue_directory(cfg),
        ),
        verify=verify_settings(cfg),
        nameservers=tuple(cfg.list("dns_nameservers")),
        soft_bounce=cfg.bool("soft_bounce"),
    )


def verify_settings(cfg: Config) -> VerifySettings:
    """address_verify_*: the cache and how probes are made."""
    try:
        path = parse_map_spec(cfg.str("address_verify_map"), cfg.path)
    except TableError as e:
        raise SettingsError(str(e)) from e
    try:
        shared = shared_map_config(cfg.str("address_verify_map"), cfg.path)
    except TableError as e:
        raise SettingsError(f"address_verify_map: {e}") from e
    sender = cfg.str("address_verify_sender").strip()
    if sender in ("", "<>"):
        sender = ""
    elif "@" not in sender:
        sender = f"{sender}@{cfg.str('myorigin')}"
    v4, v6 = mx.families(cfg.list("inet_protocols"))
    verify_router = dataclass_replace(
        router(cfg), relayhost=cfg.str("address_verify_relayhost")
    )
    return VerifySettings(
        map_spec=cfg.str("address_verify_map"),
        map_path=path,
        positive_expire=float(cfg.time("address_verify_positive_expire_time")),
        positive_refresh=float(cfg.time("address_verify_positive_refresh_time")),
        negative_expire=float(cfg.time("address_verify_negative_expire_time")),
        negative_refresh=float(cfg.time("address_verify_negative_refresh_time")),
        negative_cache=cfg.bool("address_verify_negative_cache"),
        poll_count=cfg.int("address_verify_poll_count"),
        poll_delay=float(cfg.time("address_verify_poll_delay")),
        cleanup_interval=float(cfg.time("address_verify_cache_cleanup_interval")),
        sender=sender,
        helo_name=cfg.str("smtp_helo_name"),
        router=verify_router,
        lookup=mx.LookupOptions(
            ipv4=v4, ipv6=v6, preference=cfg.str("smtp_address_preference")
        ),
        nameservers=tuple(cfg.list("dns_nameservers")),
        timeouts=timeouts(cfg),
        shared=shared,
    )


def content_checks(cfg: Config) -> ContentChecks:
    """header_checks, mime_header_checks, nested_header_checks, body_checks."""
    return ContentChecks(
        header_checks=tables(cfg, "header_checks"),
        mime_header_checks=tables(cfg, "mime_header_checks"),
        nested_header_checks=tables(cfg, "nested_header_checks"),
        body_checks=tables(cfg, "body_checks"),
        body_checks_size_limit=cfg.size("body_checks_size_limit"),
        disable_mime_input_processing=cfg.bool("disable_mime_input_processing"),
    )


def smtpd_warnings(s: SmtpdSettings) -> list[str]:
    """What a working smtpd service still does not do as configured."""
    out = []
    if s.tls.level in ("may", "encrypt") and s.tls.server is None:
        out.append(
            f"smtpd_tls_security_level = {s.tls.level} without smtpd_tls_cert_file:"
            " STARTTLS is not available"
            + (" and every MAIL FROM is refused" if s.tls.level == "encrypt" else "")
        )
    if s.session.auth and s.session.auth_tls_only and s.tls.server is None:
        out.append(
            "smtpd_sasl_auth_enable = yes but AUTH needs TLS (smtpd_tls_auth_only)"
            " and there is no certificate: AUTH is never offered"
        )
    return out


def smtpd_session(cfg: Config, tls: TlsSettings, sasl: SaslSettings) -> ServerSettings:
    """The SMTP dialogue of one service: limits, extensions (less
    smtpd_discard_ehlo_keywords, whose features are turned off), TLS, AUTH."""
    discard = {k.lower() for k in cfg.list("smtpd_discard_ehlo_keywords")}
    wrapper = tls.wrappermode
    return ServerSettings(
        hostname=cfg.str("myhostname"),
        banner=cfg.str("smtpd_banner"),
        max_line_length=max(512, cfg.int("line_length_limit")),
        message_size_limit=cfg.size("message_size_limit"),
        recipient_limit=cfg.int("smtpd_recipient_limit"),
        recipient_overshoot_limit=cfg.int("smtpd_recipient_overshoot_limit"),
        hard_error_limit=cfg.int("smtpd_hard_error_limit"),
        pipelining="pipelining" not in discard,
        eightbitmime="8bitmime" not in discard,
        enhanced_status_codes="enhancedstatuscodes" not in discard,
        dsn="dsn" not in discard,
        smtputf8=cfg.bool("smtputf8_enable") and "smtputf8" not in discard,
        chunking="chunking" not in discard,
        helo_required=cfg.bool("smtpd_helo_required"),
        vrfy_enabled=not cfg.bool("disable_vrfy_command"),
        forbid_bare_newline=cfg.bool("smtpd_forbid_bare_newline"),
        starttls=(
            tls.server is not None
            and tls.level in ("may", "encrypt")
            and not wrapper
            and "starttls" not in discard
        ),
        require_tls=tls.level == "encrypt" and not wrapper,
        auth=sasl.enabled and "auth" not in discard,
        auth_tls_only=cfg.bool("smtpd_tls_auth_only"),
        broken_auth_clients=cfg.bool("broken_sasl_auth_clients"),
        auth_failure_limit=cfg.int("smtpd_sasl_auth_failure_limit"),
    )


def smtpd_tls(cfg: Config) -> TlsSettings:
    """smtpd_tls_*: the certificate files are read now, so that a missing or
    unreadable one is an error with its path and reason (mta check, start,
    reload).  Implicit TLS and ``encrypt`` use the mandatory protocols and
    ciphers, as in Postfix."""
    level = cfg.str("smtpd_tls_security_level") or "none"
    wrapper = cfg.bool("smtpd_tls_wrappermode")
    cert = cfg.str("smtpd_tls_cert_file")
    chain = cfg.list("smtpd_tls_chain_files")
    if wrapper and not (cert or chain):
        raise SettingsError(
            "smtpd_tls_wrappermode = yes needs smtpd_tls_cert_file or smtpd_tls_chain_files"
        )
    server = None
    if (cert or chain) and (level != "none" or wrapper):
        mandatory = wrapper or level == "encrypt"
        prefix = "smtpd_tls_mandatory_" if mandatory else "smtpd_tls_"
        grade = cfg.str(prefix + "ciphers")
        try:
            server = server_tls(
                cert_file=cert,
                key_file=cfg.str("smtpd_tls_key_file"),
                chain_files=chain,
                protocols=cfg.str(prefix + "protocols"),
                protocols_parameter=prefix + "protocols",
                ciphers=cipher_list(
                    cfg.str(f"tls_{grade}_cipherlist"), cfg.list("smtpd_tls_exclude_ciphers")
                ),
                base_dir=cfg.main_cf.parent,
            )
        except TlsError as e:
            raise SettingsError(str(e)) from e
    return TlsSettings(
        level=level,
        server=server,
        wrappermode=wrapper,
        received_header=cfg.bool("smtpd_tls_received_header"),
    )


def smtpd_sasl(cfg: Config) -> SaslSettings:
    """smtpd_sasl_*; a relative smtpd_sasl_path is below queue_directory,
    as in Postfix (``private/auth``)."""
    enabled = cfg.bool("smtpd_sasl_auth_enable")
    kind = cfg.str("smtpd_sasl_type")
    path = cfg.str("smtpd_sasl_path")
    if not path.startswith("inet:") and not Path(path).is_absolute():
        path = str(queue_directory(cfg) / path)
    sasl_tables: tuple[LookupTable, ...] = ()
    if enabled and kind == "table":
        sasl_tables = tables(cfg, "smtpd_sasl_password_maps")
        if not sasl_tables:
            raise SettingsError("smtpd_sasl_type = table needs smtpd_sasl_password_maps")
    if path.startswith("inet:") and not re.fullmatch(r"inet:\[?[^\s\]]+\]?:[0-9]+", path):
        raise SettingsError(f'smtpd_sasl_path "{path}": expected inet:host:port or a path')
    return SaslSettings(
        enabled=enabled,
        type=kind,
        path=path,
        service=cfg.str("smtpd_sasl_service"),
        security=SecurityOptions(
            plain=tuple(cfg.list("smtpd_sasl_security_options")),
            tls=tuple(cfg.list("smtpd_sasl_tls_security_options")),
        ),
        tables=sasl_tables,
        authenticated_header=cfg.bool("smtpd_sasl_authenticated_header"),
    )


def smtpd_limits(cfg: Config) -> Limits:
    try:
        exceptions = NetworkList(
            cfg.list("smtpd_client_event_limit_exceptions"), base_dir=cfg.main_cf.parent
        )
    except TableError as e:
        raise SettingsError(f"smtpd_client_event_limit_exceptions: {e}") from e
    return Limits(
        connection_count=cfg.int("smtpd_client_connection_count_limit"),
        connection_rate=cfg.int("smtpd_client_connection_rate_limit"),
        message_rate=cfg.int("smtpd_client_message_rate_limit"),
        recipient_rate=cfg.int("smtpd_client_recipient_rate_limit"),
        auth_rate=cfg.int("smtpd_client_auth_rate_limit"),
        exceptions=exceptions,
        rate_time_unit=float(cfg.time("anvil_rate_time_unit")),
        soft_error_limit=cfg.int("smtpd_soft_error_limit"),
        error_sleep=float(cfg.time("smtpd_error_sleep_time")),
        per_record_deadline=cfg.bool("smtpd_per_request_deadline"),
        min_data_rate=cfg.int("smtpd_min_data_rate"),
        rate_shared=rate_map_config(cfg),
    )


def rate_map_config(cfg: Config) -> RedisConfig | None:
    """anvil_rate_map: the redis: table where the fleet counts client rates."""
    spec = cfg.str("anvil_rate_map").strip()
    if not spec:
        return None
    if not spec.startswith("redis:"):
        raise SettingsError(f'anvil_rate_map "{spec}": need redis:FILE (or empty)')
    try:
        return shared_map_config(spec, cfg.path)
    except TableError as e:
        raise SettingsError(f"anvil_rate_map: {e}") from e


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
        rset=cfg.time("smtp_rset_timeout"),
    )


def manager(cfg: Config) -> ManagerSettings:
    """The queue manager's settings.  Per-transport limits are Postfix's
    ``TRANSPORT_destination_concurrency_limit`` and
    ``TRANSPORT_destination_recipient_limit`` for every transport that has
    such a parameter; the others use the ``default_destination_*`` ones."""
    from mta.config.parameters import PARAMETERS

    hostname = cfg.str("myhostname")
    routes = router(cfg)
    concurrency: dict[str, int] = {}
    recipients: dict[str, int] = {}
    for transport in routes.transports.commands:
        for kind, table in (("concurrency", concurrency), ("recipient", recipients)):
            name = f"{transport}_destination_{kind}_limit"
            if name in PARAMETERS:
                table[transport] = cfg.int(name)
    retry = RetryPolicy(
        minimal_backoff=cfg.time("minimal_backoff_time"),
        maximal_backoff=cfg.time("maximal_backoff_time"),
        queue_lifetime=cfg.time("maximal_queue_lifetime"),
        bounce_lifetime=cfg.time("bounce_queue_lifetime"),
        delay_warning=cfg.time("delay_warning_time"),
        queue_run_delay=cfg.time("queue_run_delay"),
    )
    return ManagerSettings(
        hostname=hostname,
        myorigin=cfg.str("myorigin"),
        router=routes,
        retry=retry,
        active_limit=cfg.int("qmgr_message_active_limit"),
        destination_concurrency=cfg.int("default_destination_concurrency_limit"),
        destination_recipients=cfg.int("default_destination_recipient_limit"),
        transport_concurrency=concurrency,
        transport_recipients=recipients,
        soft_bounce=cfg.bool("soft_bounce"),
        notice=NoticeSettings(
            hostname=hostname,
            mail_name=cfg.str("mail_name"),
            bounce_size_limit=cfg.int("bounce_size_limit"),
            delay_warning_time=retry.delay_warning,
            queue_lifetime=retry.queue_lifetime,
        ),
        double_bounce_sender=cfg.str("double_bounce_sender"),
        notify_classes=frozenset(c.lower() for c in cfg.list("notify_classes")),
        bounce_notice_recipient=cfg.str("bounce_notice_recipient"),
        twobounce_notice_recipient=cfg.str("2bounce_notice_recipient"),
        delay_notice_recipient=cfg.str("delay_notice_recipient"),
        error_notice_recipient=cfg.str("error_notice_recipient"),
    )


def tables(cfg: Config, name: str) -> tuple[LookupTable, ...]:
    """The lookup tables of a table_list parameter, opened; SettingsError
    names the parameter when one cannot be used."""
    try:
        return tuple(open_table(spec, base_dir=cfg.main_cf.parent) for spec in cfg.list(name))
    except TableError as e:
        raise SettingsError(f"{name}: {e}") from e


def router(cfg: Config) -> Router:
    """Address classes, transports and transport_maps (trivial-rewrite)."""
    doms = domains(cfg)
    parents = cfg.list("parent_domain_matches_subdomains")
    assert doms.virtual_mailbox_domains is not None
    return Router(
        relayhost=cfg.str("relayhost"),
        smtp_port=_port(cfg.str("smtp_tcp_port"), 25),
        lmtp_port=_port(cfg.str("lmtp_tcp_port"), 24),
        myhostname=cfg.str("myhostname"),
        mydestination=doms.mydestination,
        virtual_mailbox_domains=doms.virtual_mailbox_domains,
        relay_domains=doms.relay_domains,
        local_transport=cfg.str("local_transport"),
        virtual_transport=cfg.str("virtual_transport"),
        relay_transport=cfg.str("relay_transport"),
        default_transport=cfg.str("default_transport"),
        transport_maps=TransportMap(
            tables(cfg, "transport_maps"), "transport_maps" in parents
        ),
        transports=Transports.from_master(cfg.services),
    )


def bcc(cfg: Config) -> BccSettings:
    """always_bcc, sender_bcc_maps, recipient_bcc_maps (added at queue time)."""
    return BccSettings(
        always_bcc=cfg.str("always_bcc"),
        sender_bcc_maps=tables(cfg, "sender_bcc_maps"),
        recipient_bcc_maps=tables(cfg, "recipient_bcc_maps"),
    )


def virtual_mailboxes(cfg: Config) -> VirtualMailboxes:
    doms = domains(cfg)
    assert doms.virtual_mailbox_domains is not None
    base = cfg.str("virtual_mailbox_base")
    return VirtualMailboxes(
        domains=doms.virtual_mailbox_domains,
        maps=tables(cfg, "virtual_mailbox_maps"),
        base=cfg.path(base) if base else None,
        size_limit=cfg.size("virtual_mailbox_limit"),
    )


def delivery(cfg: Config) -> DeliverySettings:
    """The delivery agents' settings (for one transport: ``cfg`` has its
    master.cf -o overrides applied)."""
    v4, v6 = mx.families(cfg.list("inet_protocols"))
    dns_level = cfg.str("smtp_dns_support_level")
    cafile, capath = cfg.str("smtp_tls_CAfile"), cfg.str("smtp_tls_CApath")
    trust = TrustStore(cfg.path(cafile) if cafile else None, cfg.path(capath) if capath else None)
    options = cfg.list("smtp_sasl_security_options")
    tls_options = cfg.list("smtp_sasl_tls_security_options")
    try:
        trust.check()
        parse_protocols(cfg.str("smtp_tls_protocols"))
        parse_protocols(cfg.str("smtp_tls_mandatory_protocols"))
    except PolicyError as e:
        raise SettingsError(str(e)) from e
    level = cfg.str("smtp_tls_security_level") or "none"
    if level in ("dane", "dane-only") and dns_level != "dnssec":
        # Postfix: DANE needs validated DNS; without it dane means may.
        level = "may" if level == "dane" else "encrypt"
    return DeliverySettings(
        myhostname=cfg.str("myhostname"),
        helo_name=cfg.str("smtp_helo_name"),
        timeouts=timeouts(cfg),
        lookup=mx.LookupOptions(
            ipv4=v4,
            ipv6=v6,
            preference=cfg.str("smtp_address_preference"),
            self_addresses=mx.own_addresses(
                cfg.list("inet_interfaces"), interfaces=mx.local_addresses()
            ),
        ),
        nameservers=tuple(cfg.list("dns_nameservers")),
        dnssec=dns_level == "dnssec",
        dns_disabled=dns_level == "disabled",
        tls_level=level,
        tls_policy_maps=tables(cfg, "smtp_tls_policy_maps"),
        tls_protocols=cfg.str("smtp_tls_protocols"),
        tls_mandatory_protocols=cfg.str("smtp_tls_mandatory_protocols"),
        tls_verify_match=tuple(cfg.list("smtp_tls_verify_cert_match")),
        tls_secure_match=tuple(cfg.list("smtp_tls_secure_cert_match")),
        trust=trust,
        tls_loglevel=cfg.int("smtp_tls_loglevel"),
        mta_sts=cfg.bool("smtp_mta_sts_enable"),
        sasl_enabled=cfg.bool("smtp_sasl_auth_enable"),
        sasl_password_maps=tables(cfg, "smtp_sasl_password_maps"),
        sasl_mechanisms=tuple(m.upper() for m in cfg.list("smtp_sasl_mechanism_filter")),
        sasl_plaintext_in_clear="noplaintext" not in options,
        sasl_plaintext_over_tls="noplaintext" not in tls_options,
        sasl_soft_bounce=cfg.bool("smtp_sasl_auth_soft_bounce"),
        mx_address_limit=cfg.int("smtp_mx_address_limit"),
        mx_session_limit=cfg.int("smtp_mx_session_limit"),
        skip_5xx_greeting=cfg.bool("smtp_skip_5xx_greeting"),
        cache_on_demand=cfg.bool("smtp_connection_cache_on_demand"),
        cache_time_limit=float(cfg.time("smtp_connection_cache_time_limit")),
        reuse_time_limit=float(cfg.time("smtp_connection_reuse_time_limit")),
        reuse_count_limit=cfg.int("smtp_connection_reuse_count_limit"),
        virtual=virtual_mailboxes(cfg),
    )


def delivery_by_transport(cfg: Config) -> dict[str, DeliverySettings]:
    """Settings of each master.cf delivery service that has -o overrides."""
    out: dict[str, DeliverySettings] = {}
    for name, svc in Transports.from_master(cfg.services).services.items():
        if svc.overrides:
            try:
                out[name] = delivery(cfg.for_service(svc))
            except SettingsError as e:
                raise SettingsError(f"master.cf service {name}: {e}") from e
    return out


def queue_directory(cfg: Config) -> Path:
    return cfg.path(cfg.str("queue_directory"))


def maillog_path(cfg: Config) -> Path | None:
    value = cfg.str("maillog_file")
    return cfg.path(value) if value else None
