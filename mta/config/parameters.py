"""The parameter table: every main.cf parameter that mta implements, declared once.

Job: say, for each supported parameter, its kind, its default (written as Postfix
writes it, unexpanded), its bounds or choices and one line of documentation, and turn
an expanded value into a typed one or a reason why it is bad. Adding a parameter is
adding one ``Parameter(...)`` to a group below.

Inputs: an expanded value (``str``). Outputs: ``PARAMETERS`` (name -> Parameter),
``GROUPS`` (for the generated reference), ``Parameter.parse`` -> ``Value``.

Meanings and defaults follow Postfix 3.x postconf(5) unless a doc line says otherwise.
Parameters that mta accepts but does not act on are deliberately absent: main.cf
readers warn about them as unsupported instead of pretending to honour them.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from mta.config.syntax import WHITESPACE, resolve_port, split_list

Kind = Literal["str", "int", "bool", "time", "size", "list", "choice", "table_list", "port"]

#: A typed value: ``str`` (str, choice), ``int`` (int, time in seconds, size in bytes,
#: port), ``bool``, or a tuple of elements (list, table_list).
Value = str | int | bool | tuple[str, ...]

#: Seconds per Postfix time unit (postconf(5), "time" values).
TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

_TIME_RE = re.compile(r"([0-9]+)([smhdw]?)")
_DIGITS_RE = re.compile(r"[0-9]+")
#: ``type:name`` of a lookup table (Postfix dict_open(3)); the name may hold colons
#: (``proxy:unix:passwd.byname``) or braces (``inline:{ a=b }``).
_TABLE_RE = re.compile(r"[A-Za-z0-9_-]+:\S.*", re.DOTALL)
_BOOLEANS = {"yes": True, "true": True, "no": False, "false": False}


@dataclass(frozen=True)
class DefaultContext:
    """What a computed default may use: the configuration directory and the expanded
    value of another parameter."""

    confdir: Path
    value: Callable[[str], str]


@dataclass(frozen=True)
class Computed:
    """A default computed when a configuration is loaded (never at import)."""

    describe: str
    compute: Callable[[DefaultContext], str]


@dataclass(frozen=True, kw_only=True)
class Parameter:
    """One main.cf parameter. ``unit`` is the default unit letter of a time value;
    ``file_elements`` lets list elements name files (Postfix match lists);
    ``file_value`` makes an absolute path value stand for the first line of that file
    (Debian's ``myorigin = /etc/mailname``); ``extension`` marks a parameter that
    Postfix does not have."""

    name: str
    kind: Kind
    default: str | Computed
    doc: str
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    unit: str = ""
    file_elements: bool = False
    file_value: bool = False
    extension: bool = False

    def __post_init__(self) -> None:
        # Declaration mistakes are programming errors: fail at table build.
        if self.kind == "time" and self.unit not in TIME_UNITS:
            raise ValueError(f"{self.name}: a time parameter needs a unit in s/m/h/d/w")
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"{self.name}: a choice parameter needs choices")
        if self.file_elements and self.kind != "list":
            raise ValueError(f"{self.name}: only list parameters take file elements")
        if self.file_value and self.kind != "str":
            raise ValueError(f"{self.name}: only str parameters take a file value")
        if not self.doc.strip():
            raise ValueError(f"{self.name}: missing doc")

    def parse(self, value: str, files: Callable[[list[str]], list[str]] | None = None) -> Value:
        """The typed form of an expanded ``value``; ValueError with the reason when
        it is bad. ``files`` replaces file elements of a list (see syntax.py)."""
        if self.kind == "str":
            return value
        if self.kind == "choice":
            if value not in self.choices:
                raise ValueError(f"expected one of: {_show_choices(self.choices)}")
            return value
        if self.kind == "bool":
            try:
                return _BOOLEANS[value.lower()]
            except KeyError:
                raise ValueError('expected "yes" or "no"')
        if self.kind == "port":
            return resolve_port(value)
        if self.kind in ("int", "size"):
            if not _DIGITS_RE.fullmatch(value):
                what = "a number of bytes" if self.kind == "size" else "a whole number"
                raise ValueError(f"expected {what}")
            return self._bounded(int(value), "")
        if self.kind == "time":
            match = _TIME_RE.fullmatch(value)
            if match is None:
                raise ValueError("expected a number with an optional unit s, m, h, d or w")
            seconds = int(match.group(1)) * TIME_UNITS[match.group(2) or self.unit]
            return self._bounded(seconds, "s")
        elements = split_list(value)
        if self.file_elements and files is not None:
            elements = files(elements)
        if self.kind == "table_list":
            for element in elements:
                if not _TABLE_RE.fullmatch(element):
                    raise ValueError(f'"{element}" is not a lookup table (type:name)')
        elif self.choices:
            for element in elements:
                if element not in self.choices:
                    raise ValueError(f'"{element}" is not one of: {_show_choices(self.choices)}')
        return tuple(elements)

    def _bounded(self, number: int, suffix: str) -> int:
        if self.minimum is not None and number < self.minimum:
            raise ValueError(f"must be at least {self.minimum}{suffix}")
        if self.maximum is not None and number > self.maximum:
            raise ValueError(f"must be at most {self.maximum}{suffix}")
        return number


def _show_choices(choices: tuple[str, ...]) -> str:
    return ", ".join(f'"{choice}"' if choice else '"" (empty)' for choice in choices)


# -- computed defaults ---------------------------------------------------------------------


def _fqdn(context: DefaultContext) -> str:
    # Postfix appends a domain to an unqualified host name (mail_params.c).
    name = socket.getfqdn().strip(WHITESPACE)
    return name if "." in name else f"{name or 'localhost'}.localdomain"


def _parent_domain(context: DefaultContext) -> str:
    # As Postfix's check_mydomainname(): myhostname minus its first label, unless that
    # leaves a top-level domain or nothing.
    _, dot, parent = context.value("myhostname").partition(".")
    return parent if dot and "." in parent else "localdomain"


def _confdir(context: DefaultContext) -> str:
    return str(context.confdir)


# -- the table -------------------------------------------------------------------------------

_P = Parameter
_RESTRICTION = "restrictions applied "

GROUPS: tuple[tuple[str, tuple[Parameter, ...]], ...] = (
    (
        "Host identity",
        (
            _P(
                name="myhostname",
                kind="str",
                default=Computed("the machine's FQDN (socket.getfqdn())", _fqdn),
                doc="The Internet host name of this mail system.",
            ),
            _P(
                name="mydomain",
                kind="str",
                default=Computed(
                    "$myhostname minus its first label, or localdomain", _parent_domain
                ),
                doc="The Internet domain name of this mail system.",
            ),
            _P(
                name="myorigin",
                kind="str",
                default="$myhostname",
                doc="The domain that locally posted mail appears to come from.",
                file_value=True,
            ),
            _P(
                name="mydestination",
                kind="list",
                default="$myhostname, localhost.$mydomain, localhost",
                doc="The domains that this machine considers itself the final destination for.",
                file_elements=True,
            ),
            _P(
                name="mail_name",
                kind="str",
                default="mta",
                doc="The mail system name shown in the SMTP greeting and in Received: headers.",
            ),
            _P(
                name="smtpd_banner",
                kind="str",
                default="$myhostname ESMTP $mail_name",
                doc="The text after the 220 code of the SMTP greeting (RFC 5321 section 4.3.1).",
            ),
        ),
    ),
    (
        "Network and relay control",
        (
            _P(
                name="inet_interfaces",
                kind="list",
                default="all",
                doc='The addresses to listen on: "all", "loopback-only" or addresses.',
            ),
            _P(
                name="inet_protocols",
                kind="list",
                default="all",
                doc="The IP protocols to use: all, ipv4, ipv6 or both.",
                choices=("all", "ipv4", "ipv6"),
            ),
            _P(
                name="mynetworks",
                kind="list",
                default="127.0.0.0/8 [::1]/128",
                doc="The trusted SMTP clients (differs from Postfix: loopback only by default).",
                file_elements=True,
            ),
            _P(
                name="mynetworks_style",
                kind="choice",
                default="host",
                doc="How to derive mynetworks when it is not set: host, subnet or class.",
                choices=("host", "subnet", "class"),
            ),
            _P(
                name="relay_domains",
                kind="list",
                default="",
                doc="The remote domains that this system relays mail to.",
                file_elements=True,
            ),
            _P(
                name="parent_domain_matches_subdomains",
                kind="list",
                default=(
                    "debug_peer_list,fast_flush_domains,mynetworks,permit_mx_backup_networks,"
                    "qmqpd_authorized_clients,relay_domains,smtpd_access_maps"
                ),
                doc="The parameters whose domain patterns also match subdomains.",
            ),
        ),
    ),
    (
        "SMTP server",
        (
            _P(
                name="smtpd_timeout",
                kind="time",
                default="300s",
                unit="s",
                minimum=1,
                doc="How long the server waits for a client command or data.",
            ),
            _P(
                name="smtpd_recipient_limit",
                kind="int",
                default="1000",
                minimum=1,
                doc="The maximal number of recipients per message.",
            ),
            _P(
                name="line_length_limit",
                kind="int",
                default="2048",
                minimum=1,
                doc="Longer lines of a message are split into pieces of this length.",
            ),
            _P(
                name="message_size_limit",
                kind="size",
                default="10240000",
                doc="The maximal message size in bytes (0: no limit); RFC 1870 SIZE.",
            ),
            _P(
                name="smtpd_hard_error_limit",
                kind="int",
                default="20",
                minimum=1,
                doc="The number of client errors after which the server disconnects.",
            ),
            _P(
                name="smtpd_soft_error_limit",
                kind="int",
                default="10",
                minimum=0,
                doc="The number of client errors after which each reply is delayed.",
            ),
            _P(
                name="smtpd_error_sleep_time",
                kind="time",
                default="1s",
                unit="s",
                doc="The delay before an error reply once the soft error limit is reached.",
            ),
            _P(
                name="smtpd_client_connection_count_limit",
                kind="int",
                default="50",
                minimum=0,
                doc="The maximal number of simultaneous connections per client (0: no limit).",
            ),
            _P(
                name="default_process_limit",
                kind="int",
                default="100",
                minimum=1,
                doc="The session limit of a master.cf service whose maxproc is -.",
            ),
            _P(
                name="disable_vrfy_command",
                kind="bool",
                default="no",
                doc="Disable the VRFY command (RFC 5321 section 3.5.3).",
            ),
            _P(
                name="smtpd_helo_required",
                kind="bool",
                default="no",
                doc="Require HELO or EHLO before MAIL FROM.",
            ),
            _P(
                name="smtpd_delay_reject",
                kind="bool",
                default="yes",
                doc="Delay client, HELO and sender rejects until RCPT TO.",
            ),
            _P(
                name="smtpd_forbid_bare_newline",
                kind="bool",
                default="yes",
                doc="Reject bare LF line endings (RFC 5321 section 2.3.8; Postfix 3.7 says no).",
            ),
            _P(
                name="smtpd_upstream_proxy_protocol",
                kind="choice",
                default="",
                choices=("", "haproxy"),
                doc="The proxy protocol spoken before SMTP: empty (none) or haproxy.",
            ),
            _P(
                name="smtpd_authorized_xclient_hosts",
                kind="list",
                default="",
                doc="The clients allowed to use the XCLIENT command.",
                file_elements=True,
            ),
        ),
    ),
    (
        "SMTP server restrictions",
        (
            _P(
                name="smtpd_client_restrictions",
                kind="list",
                default="",
                doc=_RESTRICTION + "when a client connects.",
            ),
            _P(
                name="smtpd_helo_restrictions",
                kind="list",
                default="",
                doc=_RESTRICTION + "to the HELO or EHLO command.",
            ),
            _P(
                name="smtpd_sender_restrictions",
                kind="list",
                default="",
                doc=_RESTRICTION + "to MAIL FROM.",
            ),
            _P(
                name="smtpd_relay_restrictions",
                kind="list",
                default="permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination",
                doc="Relay control " + _RESTRICTION + "to RCPT TO (differs: reject, not defer).",
            ),
            _P(
                name="smtpd_recipient_restrictions",
                kind="list",
                default="",
                doc=_RESTRICTION + "to RCPT TO, after smtpd_relay_restrictions.",
            ),
            _P(
                name="smtpd_data_restrictions",
                kind="list",
                default="",
                doc=_RESTRICTION + "to the DATA command.",
            ),
            _P(
                name="smtpd_end_of_data_restrictions",
                kind="list",
                default="",
                doc=_RESTRICTION + "after the end of the message data.",
            ),
            _P(
                name="local_recipient_maps",
                kind="table_list",
                default="",
                doc="Tables of the known local recipients (differs: empty, accept all).",
            ),
        ),
    ),
    (
        "SMTP server TLS and authentication",
        (
            _P(
                name="smtpd_tls_security_level",
                kind="choice",
                default="",
                choices=("", "none", "may", "encrypt"),
                doc="STARTTLS (RFC 3207): none, may (offer) or encrypt (require).",
            ),
            _P(
                name="smtpd_tls_cert_file",
                kind="str",
                default="",
                doc="The PEM server certificate (and chain) file.",
            ),
            _P(
                name="smtpd_tls_key_file",
                kind="str",
                default="$smtpd_tls_cert_file",
                doc="The PEM private key file of the server certificate.",
            ),
            _P(
                name="smtpd_tls_wrappermode",
                kind="bool",
                default="no",
                doc="Speak TLS from the start of the connection (SMTPS, RFC 8314).",
            ),
            _P(
                name="smtpd_sasl_auth_enable",
                kind="bool",
                default="no",
                doc="Offer SMTP AUTH (RFC 4954).",
            ),
        ),
    ),
    (
        "Content",
        (
            _P(
                name="header_checks",
                kind="table_list",
                default="",
                doc="Tables of patterns applied to each message header line.",
            ),
            _P(
                name="body_checks",
                kind="table_list",
                default="",
                doc="Tables of patterns applied to each message body line.",
            ),
            _P(
                name="always_bcc",
                kind="str",
                default="",
                doc="An address that receives a copy of every message.",
            ),
        ),
    ),
    (
        "Routing",
        (
            _P(
                name="relayhost",
                kind="str",
                default="",
                doc="The next hop for remote mail: host, [host], host:port (empty: MX).",
            ),
            _P(
                name="transport_maps",
                kind="table_list",
                default="",
                doc="Tables that map recipient domains to transport:nexthop.",
            ),
            _P(
                name="default_transport",
                kind="str",
                default="smtp",
                doc="The transport for remote destinations that are not relay_domains.",
            ),
            _P(
                name="relay_transport",
                kind="str",
                default="relay",
                doc="The transport for relay_domains destinations.",
            ),
        ),
    ),
    (
        "SMTP and LMTP client",
        (
            _P(
                name="smtp_connect_timeout",
                kind="time",
                default="30s",
                unit="s",
                minimum=1,
                doc="How long to wait for a TCP connection to complete.",
            ),
            _P(
                name="smtp_helo_timeout",
                kind="time",
                default="300s",
                unit="s",
                minimum=1,
                doc="How long to wait for the greeting and for the EHLO/HELO reply.",
            ),
            _P(
                name="smtp_mail_timeout",
                kind="time",
                default="300s",
                unit="s",
                minimum=1,
                doc="How long to wait for the MAIL FROM reply.",
            ),
            _P(
                name="smtp_rcpt_timeout",
                kind="time",
                default="300s",
                unit="s",
                minimum=1,
                doc="How long to wait for a RCPT TO reply.",
            ),
            _P(
                name="smtp_data_init_timeout",
                kind="time",
                default="120s",
                unit="s",
                minimum=1,
                doc="How long to wait for the DATA reply.",
            ),
            _P(
                name="smtp_data_xfer_timeout",
                kind="time",
                default="180s",
                unit="s",
                minimum=1,
                doc="How long a send of message content may stall.",
            ),
            _P(
                name="smtp_data_done_timeout",
                kind="time",
                default="600s",
                unit="s",
                minimum=1,
                doc='How long to wait for the reply to the final "." (RFC 5321 section 4.5.3.2).',
            ),
            _P(
                name="smtp_quit_timeout",
                kind="time",
                default="300s",
                unit="s",
                minimum=1,
                doc="How long to wait for the QUIT reply.",
            ),
            _P(
                name="smtp_tcp_port",
                kind="port",
                default="smtp",
                doc="The default TCP port of the SMTP client: a number or a service name.",
            ),
            _P(
                name="lmtp_tcp_port",
                kind="port",
                default="24",
                doc="The default TCP port of the LMTP client: a number or a service name.",
            ),
            _P(
                name="smtp_helo_name",
                kind="str",
                default="$myhostname",
                doc="The host name sent in EHLO or HELO.",
            ),
            _P(
                name="smtp_address_preference",
                kind="choice",
                default="any",
                choices=("any", "ipv4", "ipv6"),
                doc="Which address family to try first for a destination.",
            ),
            _P(
                name="default_destination_concurrency_limit",
                kind="int",
                default="20",
                minimum=0,
                doc="The maximal number of parallel deliveries to one destination.",
            ),
            _P(
                name="smtp_destination_concurrency_limit",
                kind="int",
                default="$default_destination_concurrency_limit",
                minimum=0,
                doc="The maximal number of parallel SMTP deliveries to one destination.",
            ),
            _P(
                name="default_destination_recipient_limit",
                kind="int",
                default="50",
                minimum=0,
                doc="The maximal number of recipients per delivery (0: no limit).",
            ),
            _P(
                name="smtp_destination_recipient_limit",
                kind="int",
                default="$default_destination_recipient_limit",
                minimum=0,
                doc="The maximal number of recipients per SMTP delivery (0: no limit).",
            ),
        ),
    ),
    (
        "Queue and retries",
        (
            _P(
                name="queue_directory",
                kind="str",
                default="/var/spool/mta",
                doc="The directory of the mail queue (differs from Postfix's path).",
            ),
            _P(
                name="queue_minfree",
                kind="size",
                default="0",
                doc="The free space in bytes the queue file system needs to accept mail.",
            ),
            _P(
                name="qmgr_message_active_limit",
                kind="int",
                default="20000",
                minimum=1,
                doc="The maximal number of messages in the active queue.",
            ),
            _P(
                name="minimal_backoff_time",
                kind="time",
                default="300s",
                unit="s",
                minimum=1,
                doc="The minimal time between delivery attempts of a deferred message.",
            ),
            _P(
                name="maximal_backoff_time",
                kind="time",
                default="4000s",
                unit="s",
                minimum=1,
                doc="The maximal time between delivery attempts of a deferred message.",
            ),
            _P(
                name="queue_run_delay",
                kind="time",
                default="300s",
                unit="s",
                minimum=1,
                doc="How often the deferred queue is scanned.",
            ),
            _P(
                name="maximal_queue_lifetime",
                kind="time",
                default="5d",
                unit="d",
                doc="How long a deferred message is retried before it bounces.",
            ),
            _P(
                name="bounce_queue_lifetime",
                kind="time",
                default="5d",
                unit="d",
                doc="How long an undeliverable bounce message is retried.",
            ),
            _P(
                name="delay_warning_time",
                kind="time",
                default="0h",
                unit="h",
                doc="When to tell the sender a message is delayed (0: never).",
            ),
            _P(
                name="soft_bounce",
                kind="bool",
                default="no",
                doc="Turn permanent (5xx) failures into temporary (4xx) ones, for testing.",
            ),
        ),
    ),
    (
        "Bounces and notices",
        (
            _P(
                name="double_bounce_sender",
                kind="str",
                default="double-bounce",
                doc="The sender of postmaster notices; mail to it is discarded.",
            ),
            _P(
                name="bounce_notice_recipient",
                kind="str",
                default="postmaster",
                doc="Who receives the bounce notices of notify_classes.",
            ),
            _P(
                name="2bounce_notice_recipient",
                kind="str",
                default="postmaster",
                doc="Who receives undeliverable bounces.",
            ),
            _P(
                name="notify_classes",
                kind="list",
                default="resource, software",
                choices=(
                    "bounce",
                    "2bounce",
                    "data",
                    "delay",
                    "policy",
                    "protocol",
                    "resource",
                    "software",
                ),
                doc="The problem classes reported to the postmaster.",
            ),
        ),
    ),
    (
        "Files, processes and logging",
        (
            _P(
                name="config_directory",
                kind="str",
                default=Computed("the directory that holds main.cf", _confdir),
                doc="The directory of main.cf and master.cf.",
            ),
            _P(
                name="mail_owner",
                kind="str",
                default="mta",
                doc="The user the daemon runs as after binding (differs: Postfix's is postfix).",
            ),
            _P(
                name="maillog_file",
                kind="str",
                default="",
                doc="The mail log file (empty: standard output).",
            ),
        ),
    ),
    (
        "mta extensions",
        (
            _P(
                name="stats_listen",
                kind="str",
                default="",
                doc="host:port of the HTTP statistics service (empty: off).",
                extension=True,
            ),
            _P(
                name="stats_username",
                kind="str",
                default="",
                doc="The HTTP Basic user of the statistics service (empty: no authentication).",
                extension=True,
            ),
            _P(
                name="stats_password",
                kind="str",
                default="",
                doc="The statistics service password; ignored when stats_username is empty.",
                extension=True,
            ),
            _P(
                name="dns_nameservers",
                kind="list",
                default="",
                doc="host[:port] of the DNS servers for every lookup (empty: system resolver).",
                extension=True,
            ),
        ),
    ),
)


def _index(groups: tuple[tuple[str, tuple[Parameter, ...]], ...]) -> Mapping[str, Parameter]:
    table: dict[str, Parameter] = {}
    for _, parameters in groups:
        for parameter in parameters:
            if parameter.name in table:
                raise ValueError(f"{parameter.name} declared twice")
            table[parameter.name] = parameter
    return MappingProxyType(table)


#: Every supported parameter by name.
PARAMETERS: Mapping[str, Parameter] = _index(GROUPS)
