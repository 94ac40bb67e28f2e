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
    raw: bool = False  # not $-expanded at load: its $names are filled in at use (Postfix RAW)

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
                name="smtpd_recipient_overshoot_limit",
                kind="int",
                default="1000",
                minimum=0,
                doc="Recipients past smtpd_recipient_limit before each one counts as an error.",
            ),
            _P(
                name="smtpd_client_connection_rate_limit",
                kind="int",
                default="0",
                minimum=0,
                doc="Connections per client per anvil_rate_time_unit (0: no limit).",
            ),
            _P(
                name="smtpd_client_message_rate_limit",
                kind="int",
                default="0",
                minimum=0,
                doc="MAIL FROM requests per client per anvil_rate_time_unit (0: no limit).",
            ),
            _P(
                name="smtpd_client_recipient_rate_limit",
                kind="int",
                default="0",
                minimum=0,
                doc="RCPT TO requests per client per anvil_rate_time_unit (0: no limit).",
            ),
            _P(
                name="smtpd_client_auth_rate_limit",
                kind="int",
                default="0",
                minimum=0,
                doc="AUTH commands per client per anvil_rate_time_unit (0: no limit).",
            ),
            _P(
                name="smtpd_client_event_limit_exceptions",
                kind="list",
                default="$mynetworks",
                doc="Clients exempt from the connection, message, recipient and AUTH limits.",
                file_elements=True,
            ),
            _P(
                name="anvil_rate_time_unit",
                kind="time",
                default="60s",
                unit="s",
                minimum=1,
                doc="The time unit of the smtpd_client_*_rate_limit counters.",
            ),
            _P(
                name="anvil_rate_map",
                kind="str",
                default="",
                doc="redis:FILE where the nodes of a fleet add up the smtpd_client_*_rate_limit"
                " counters (empty: each node counts alone).",
                extension=True,
            ),
            _P(
                name="smtpd_upstream_proxy_timeout",
                kind="time",
                default="5s",
                unit="s",
                minimum=1,
                doc="How long to wait for the PROXY header of smtpd_upstream_proxy_protocol.",
            ),
            _P(
                name="smtpd_discard_ehlo_keywords",
                kind="list",
                default="",
                doc="EHLO keywords not announced; their features are off (e.g. chunking, dsn).",
            ),
            _P(
                name="smtputf8_enable",
                kind="bool",
                default="yes",
                doc="Offer SMTPUTF8 (RFC 6531): UTF-8 addresses and headers accepted and carried.",
            ),
            _P(
                name="smtpd_per_request_deadline",
                kind="bool",
                default="no",
                doc="Make smtpd_timeout a deadline per command or message chunk, not per read.",
            ),
            _P(
                name="smtpd_min_data_rate",
                kind="int",
                default="500",
                minimum=1,
                doc="With smtpd_per_request_deadline: bytes/second that extend the DATA deadline.",
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
            _P(
                name="smtpd_tls_chain_files",
                kind="list",
                default="",
                doc="PEM files each holding a private key followed by its certificate chain.",
            ),
            _P(
                name="smtpd_tls_protocols",
                kind="str",
                default=">=TLSv1.2",
                doc='TLS versions with opportunistic TLS, e.g. ">=TLSv1.2" or "!TLSv1, !TLSv1.1" '
                "(differs: TLS 1.2 and newer by default).",
            ),
            _P(
                name="smtpd_tls_mandatory_protocols",
                kind="str",
                default=">=TLSv1.2",
                doc="TLS versions with smtpd_tls_security_level = encrypt (differs: TLS 1.2+).",
            ),
            _P(
                name="smtpd_tls_ciphers",
                kind="choice",
                default="medium",
                choices=("medium", "high"),
                doc="The cipher grade with opportunistic TLS: medium or high.",
            ),
            _P(
                name="smtpd_tls_mandatory_ciphers",
                kind="choice",
                default="medium",
                choices=("medium", "high"),
                doc="The cipher grade with smtpd_tls_security_level = encrypt.",
            ),
            _P(
                name="smtpd_tls_exclude_ciphers",
                kind="list",
                default="",
                doc="OpenSSL cipher names or types removed from the cipher list.",
            ),
            _P(
                name="tls_high_cipherlist",
                kind="str",
                default="aNULL:-aNULL:HIGH:@STRENGTH",
                doc="The OpenSSL cipher list of the high grade.",
            ),
            _P(
                name="tls_medium_cipherlist",
                kind="str",
                default="aNULL:-aNULL:HIGH:MEDIUM:+RC4:@STRENGTH",
                doc="The OpenSSL cipher list of the medium grade.",
            ),
            _P(
                name="smtpd_tls_received_header",
                kind="bool",
                default="yes",
                doc="Name the TLS protocol and cipher in Received: (differs: Postfix says no).",
            ),
            _P(
                name="smtpd_tls_auth_only",
                kind="bool",
                default="yes",
                doc="Offer AUTH only after STARTTLS (differs: Postfix says no).",
            ),
            _P(
                name="smtpd_sasl_type",
                kind="choice",
                default="dovecot",
                choices=("dovecot", "table"),
                doc="The SASL backend: dovecot (auth socket) or table (smtpd_sasl_password_maps); "
                "differs: no cyrus.",
            ),
            _P(
                name="smtpd_sasl_path",
                kind="str",
                default="private/auth",
                doc="The Dovecot auth socket: a UNIX path (relative: to queue_directory) "
                "or inet:host:port.",
            ),
            _P(
                name="smtpd_sasl_service",
                kind="str",
                default="smtp",
                doc="The service name passed to the SASL backend.",
            ),
            _P(
                name="smtpd_sasl_security_options",
                kind="list",
                default="noanonymous",
                choices=("noanonymous", "noplaintext", "nodictionary", "noactive", "mutual_auth",
                         "forward_secrecy"),
                doc="The SASL mechanism properties refused on connections without TLS.",
            ),
            _P(
                name="smtpd_sasl_tls_security_options",
                kind="list",
                default="$smtpd_sasl_security_options",
                choices=("noanonymous", "noplaintext", "nodictionary", "noactive", "mutual_auth",
                         "forward_secrecy"),
                doc="The SASL mechanism properties refused on TLS connections.",
            ),
            _P(
                name="smtpd_sasl_authenticated_header",
                kind="bool",
                default="no",
                doc="Name the authenticated user in the Received: header.",
            ),
            _P(
                name="broken_sasl_auth_clients",
                kind="bool",
                default="no",
                doc='Also announce AUTH in the obsolete "AUTH=" form for old clients.',
            ),
            _P(
                name="smtpd_sasl_password_maps",
                kind="table_list",
                default="",
                doc="With smtpd_sasl_type = table: user -> {SCHEME}hash as doveadm pw writes it.",
                extension=True,
            ),
            _P(
                name="smtpd_sasl_auth_failure_limit",
                kind="int",
                default="3",
                minimum=0,
                doc="Failed AUTH commands after which the session ends with 421 (0: no limit).",
                extension=True,
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
        "Milters",
        (
            _P(
                name="smtpd_milters",
                kind="str",
                default="",
                doc="Milters (inet:host:port, unix:/path) for mail received over SMTP, in order.",
            ),
            _P(
                name="non_smtpd_milters",
                kind="str",
                default="",
                doc="Milter applications for mail submitted with the sendmail command, in order.",
            ),
            _P(
                name="milter_connect_timeout",
                kind="time",
                default="30s",
                unit="s",
                minimum=1,
                doc="How long to wait for a connection to a milter.",
            ),
            _P(
                name="milter_command_timeout",
                kind="time",
                default="30s",
                unit="s",
                minimum=1,
                doc="How long to wait for a milter's reply to a command other than content.",
            ),
            _P(
                name="milter_content_timeout",
                kind="time",
                default="300s",
                unit="s",
                minimum=1,
                doc="How long to wait for a milter's reply to message content.",
            ),
            _P(
                name="milter_default_action",
                kind="choice",
                default="tempfail",
                choices=("accept", "reject", "tempfail", "quarantine", "abort"),
                doc="What happens when a milter fails: accept, reject, tempfail, quarantine"
                " (hold), or abort (mta: 421 and end the session).",
            ),
            _P(
                name="milter_protocol",
                kind="int",
                default="6",
                minimum=2,
                maximum=6,
                doc="The milter protocol version offered to milters.",
            ),
            _P(
                name="milter_macro_daemon_name",
                kind="str",
                default="$myhostname",
                doc="The {daemon_name} macro value.",
            ),
            _P(
                name="milter_macro_v",
                kind="str",
                default="$mail_name",
                doc="The v macro value.",
            ),
            _P(
                name="milter_connect_macros",
                kind="str",
                default="j {daemon_name} {daemon_addr} v _",
                doc="Macros sent to milters after a connection is made.",
            ),
            _P(
                name="milter_helo_macros",
                kind="str",
                default="{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}",
                doc="Macros sent to milters after HELO/EHLO.",
            ),
            _P(
                name="milter_mail_macros",
                kind="str",
                default="i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host}"
                " {mail_mailer}",
                doc="Macros sent to milters after MAIL FROM.",
            ),
            _P(
                name="milter_rcpt_macros",
                kind="str",
                default="i {rcpt_addr} {rcpt_host} {rcpt_mailer}",
                doc="Macros sent to milters after RCPT TO.",
            ),
            _P(
                name="milter_data_macros",
                kind="str",
                default="i",
                doc="Macros sent to milters after DATA.",
            ),
            _P(
                name="milter_end_of_header_macros",
                kind="str",
                default="i",
                doc="Macros sent to milters after the end of the message headers.",
            ),
            _P(
                name="milter_end_of_data_macros",
                kind="str",
                default="i",
                doc="Macros sent to milters after the end of the message.",
            ),
        ),
    ),
    (
        "Content inspection",
        (
            _P(
                name="mime_header_checks",
                kind="table_list",
                default="$header_checks",
                doc="Tables applied to MIME headers and to the headers of body parts.",
            ),
            _P(
                name="nested_header_checks",
                kind="table_list",
                default="$header_checks",
                doc="Tables applied to the headers of attached messages (message/rfc822).",
            ),
            _P(
                name="body_checks_size_limit",
                kind="size",
                default="51200",
                doc="How many octets of each body part body_checks inspect.",
            ),
            _P(
                name="disable_mime_input_processing",
                kind="bool",
                default="no",
                doc="Inspect the message as one body, without looking for MIME parts.",
            ),
        ),
    ),
    (
        "Access policy",
        (
            _P(
                name="smtpd_null_access_lookup_key",
                kind="str",
                default="<>",
                doc="The access table key of the null sender address.",
            ),
            _P(
                name="recipient_delimiter",
                kind="str",
                default="",
                doc="The characters that separate a user name from an address extension.",
            ),
            _P(
                name="relay_recipient_maps",
                kind="table_list",
                default="",
                doc="Tables of the valid recipients in relay_domains (empty: all valid).",
            ),
            _P(
                name="smtpd_reject_unlisted_recipient",
                kind="bool",
                default="yes",
                doc="Reject recipients not in local, virtual or relay recipient tables.",
            ),
            _P(
                name="smtpd_reject_unlisted_sender",
                kind="bool",
                default="no",
                doc="Reject senders that would be unlisted recipients.",
            ),
            _P(
                name="show_user_unknown_table_name",
                kind="bool",
                default="yes",
                doc='Name the table in "User unknown" replies.',
            ),
            _P(
                name="access_map_reject_code",
                kind="int",
                default="554",
                doc="The reply code of REJECT in an access table.",
                minimum=400,
                maximum=599,
            ),
            _P(
                name="access_map_defer_code",
                kind="int",
                default="450",
                doc="The reply code of DEFER in an access table.",
                minimum=400,
                maximum=599,
            ),
            _P(
                name="reject_code",
                kind="int",
                default="554",
                doc="The reply code of the reject restriction.",
                minimum=400,
                maximum=599,
            ),
            _P(
                name="defer_code",
                kind="int",
                default="450",
                doc="The reply code of the defer restriction.",
                minimum=400,
                maximum=599,
            ),
            _P(
                name="relay_domains_reject_code",
                kind="int",
                default="554",
                doc="The reply code of reject_unauth_destination.",
                minimum=400,
                maximum=599,
            ),
            _P(
                name="invalid_hostname_reject_code",
                kind="int",
                default="501",
                doc="The reply code of reject_invalid_helo_hostname.",
                minimum=400,
                maximum=599,
            ),
            _P(
                name="non_fqdn_reject_code",
                kind="int",
                default="504",
                doc="The reply code of the reject_non_fqdn_* restrictions.",
                minimum=400,
                maximum=599,
            ),
            _P(
                name="unknown_address_reject_code",
                kind="int",
                default="450",
                doc="The reply code of reject_unknown_sender_domain and _recipient_domain.",
                minimum=400,
                maximum=599,
            ),
            _P(
                name="unknown_hostname_reject_code",
                kind="int",
                default="450",
                doc="The reply code of reject_unknown_helo_hostname.",
                minimum=400,
                maximum=599,
            ),
            _P(
                name="unknown_relay_recipient_reject_code",
                kind="int",
                default="550",
                doc="The reply code for a recipient not in relay_recipient_maps.",
                minimum=400,
                maximum=599,
            ),
            _P(
                name="unknown_local_recipient_reject_code",
                kind="int",
                default="550",
                doc="The reply code for a recipient not in local_recipient_maps.",
                minimum=400,
                maximum=599,
            ),
            _P(
                name="multi_recipient_bounce_reject_code",
                kind="int",
                default="550",
                doc="The reply code of reject_multi_recipient_bounce.",
                minimum=400,
                maximum=599,
            ),
            _P(
                name="plaintext_reject_code",
                kind="int",
                default="450",
                doc="The reply code of reject_plaintext_session.",
                minimum=400,
                maximum=599,
            ),
            _P(
                name="reject_tempfail_action",
                kind="choice",
                default="defer_if_permit",
                doc="What a restriction does when DNS or a lookup fails for now.",
                choices=('defer_if_permit', 'defer'),
            ),
            _P(
                name="unknown_address_tempfail_action",
                kind="choice",
                default="$reject_tempfail_action",
                doc="The tempfail action of reject_unknown_sender_domain and _recipient_domain.",
                choices=('defer_if_permit', 'defer'),
            ),
            _P(
                name="unknown_helo_hostname_tempfail_action",
                kind="choice",
                default="$reject_tempfail_action",
                doc="The tempfail action of reject_unknown_helo_hostname.",
                choices=('defer_if_permit', 'defer'),
            ),
        ),
    ),
    (
        "DNS block and allow lists",
        (
            _P(
                name="maps_rbl_reject_code",
                kind="int",
                default="554",
                doc="The reply code ($rbl_code) when a DNS block list lists the client or domain.",
                minimum=400,
                maximum=599,
            ),
            _P(
                name="default_rbl_reply",
                kind="str",
                default=(
                    "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using "
                    "$rbl_domain${rbl_reason?; $rbl_reason}"
                ),
                doc="The reply template of DNS list rejections ($rbl_* are filled in per reply).",
                raw=True,
            ),
            _P(
                name="rbl_reply_maps",
                kind="table_list",
                default="",
                doc="Tables of reply templates by DNS list domain (as written, with =filter).",
            ),
        ),
    ),
    (
        "Policy delegation",
        (
            _P(
                name="smtpd_policy_service_timeout",
                kind="time",
                default="100s",
                doc="How long one policy request (connect, write, answer) may take.",
                unit='s',
                minimum=1,
            ),
            _P(
                name="smtpd_policy_service_max_idle",
                kind="time",
                default="300s",
                doc="How long an idle policy server connection is kept.",
                unit='s',
                minimum=1,
            ),
            _P(
                name="smtpd_policy_service_max_ttl",
                kind="time",
                default="1000s",
                doc="How long a policy server connection is reused at most.",
                unit='s',
                minimum=1,
            ),
            _P(
                name="smtpd_policy_service_try_limit",
                kind="int",
                default="2",
                doc="How many times a policy request is tried.",
                minimum=1,
            ),
            _P(
                name="smtpd_policy_service_retry_delay",
                kind="time",
                default="1s",
                doc="The delay before a policy request is tried again.",
                unit='s',
                minimum=0,
            ),
            _P(
                name="smtpd_policy_service_request_limit",
                kind="int",
                default="0",
                doc="Requests per policy server connection (0: no limit).",
                minimum=0,
            ),
            _P(
                name="smtpd_policy_service_default_action",
                kind="str",
                default="451 4.3.5 Server configuration problem",
                doc="The access result used when the policy server cannot be asked.",
            ),
            _P(
                name="smtpd_policy_service_policy_context",
                kind="str",
                default="",
                doc="The policy_context attribute sent to policy servers.",
            ),
        ),
    ),
    (
        "Address verification",
        (
            _P(
                name="address_verify_map",
                kind="str",
                default="btree:$queue_directory/verify_cache",
                doc="The verification cache file (empty: in memory; differs: in queue_directory;"
                " redis:FILE: shared by a fleet in Redis).",
            ),
            _P(
                name="address_verify_positive_expire_time",
                kind="time",
                default="31d",
                doc="How long a positive verification result is used.",
                unit='d',
                minimum=1,
            ),
            _P(
                name="address_verify_positive_refresh_time",
                kind="time",
                default="7d",
                doc="When a positive result is verified again in the background.",
                unit='d',
                minimum=1,
            ),
            _P(
                name="address_verify_negative_expire_time",
                kind="time",
                default="3d",
                doc="How long a negative verification result is used.",
                unit='d',
                minimum=1,
            ),
            _P(
                name="address_verify_negative_refresh_time",
                kind="time",
                default="3h",
                doc="When a negative result is verified again.",
                unit='h',
                minimum=1,
            ),
            _P(
                name="address_verify_negative_cache",
                kind="bool",
                default="yes",
                doc="Keep negative verification results.",
            ),
            _P(
                name="address_verify_poll_count",
                kind="int",
                default="3",
                doc="How many times smtpd asks for a probe result (waits count-1 delays).",
                minimum=1,
            ),
            _P(
                name="address_verify_poll_delay",
                kind="time",
                default="3s",
                doc="The delay between two such questions.",
                unit='s',
                minimum=1,
            ),
            _P(
                name="address_verify_sender",
                kind="str",
                default="$double_bounce_sender",
                doc="The sender of verification probes (<> or empty: the null sender).",
            ),
            _P(
                name="address_verify_relayhost",
                kind="str",
                default="$relayhost",
                doc="The next hop of verification probes, as relayhost.",
            ),
            _P(
                name="address_verify_cache_cleanup_interval",
                kind="time",
                default="12h",
                doc="How often expired entries are removed from the cache file.",
                unit='s',
                minimum=1,
            ),
            _P(
                name="unverified_recipient_reject_code",
                kind="int",
                default="450",
                doc="The reply code when the next hop refuses a verified recipient.",
                minimum=400,
                maximum=599,
            ),
            _P(
                name="unverified_recipient_defer_code",
                kind="int",
                default="450",
                doc="The reply code when a recipient cannot be verified for now.",
                minimum=400,
                maximum=599,
            ),
            _P(
                name="unverified_recipient_tempfail_action",
                kind="choice",
                default="$reject_tempfail_action",
                doc="The tempfail action of reject_unverified_recipient.",
                choices=('defer_if_permit', 'defer'),
            ),
            _P(
                name="unverified_recipient_reject_reason",
                kind="str",
                default="",
                doc="The reply text for unverified recipients (empty: the next hop's).",
            ),
            _P(
                name="unverified_sender_reject_code",
                kind="int",
                default="450",
                doc="The reply code when the next hop refuses a verified sender.",
                minimum=400,
                maximum=599,
            ),
            _P(
                name="unverified_sender_defer_code",
                kind="int",
                default="450",
                doc="The reply code when a sender cannot be verified for now.",
                minimum=400,
                maximum=599,
            ),
            _P(
                name="unverified_sender_tempfail_action",
                kind="choice",
                default="$reject_tempfail_action",
                doc="The tempfail action of reject_unverified_sender.",
                choices=('defer_if_permit', 'defer'),
            ),
            _P(
                name="unverified_sender_reject_reason",
                kind="str",
                default="",
                doc="The reply text for unverified senders (empty: the next hop's).",
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
            _P(
                name="local_transport",
                kind="str",
                default="local:$myhostname",
                doc="The transport for mydestination domains (mta has no local(8): set it to "
                "virtual, lmtp:... or error:...).",
            ),
            _P(
                name="virtual_transport",
                kind="str",
                default="virtual",
                doc="The transport for virtual_mailbox_domains destinations.",
            ),
            _P(
                name="sender_bcc_maps",
                kind="table_list",
                default="",
                doc="Tables that map a sender address or domain to a BCC address.",
            ),
            _P(
                name="recipient_bcc_maps",
                kind="table_list",
                default="",
                doc="Tables that map a recipient address or domain to a BCC address.",
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
            _P(
                name="relay_destination_concurrency_limit",
                kind="int",
                default="$default_destination_concurrency_limit",
                minimum=0,
                doc="The maximal number of parallel deliveries to one destination by relay.",
            ),
            _P(
                name="relay_destination_recipient_limit",
                kind="int",
                default="$default_destination_recipient_limit",
                minimum=0,
                doc="The maximal number of recipients per delivery by relay (0: no limit).",
            ),
            _P(
                name="smtp_rset_timeout",
                kind="time",
                default="20s",
                unit="s",
                minimum=1,
                doc="How long to wait for the RSET reply.",
            ),
            _P(
                name="smtp_dns_support_level",
                kind="choice",
                default="",
                choices=("", "disabled", "enabled", "dnssec"),
                doc="DNS use of the SMTP client; dnssec trusts the AD bit of dns_nameservers "
                "(for DANE).",
            ),
            _P(
                name="smtp_mx_address_limit",
                kind="int",
                default="5",
                minimum=0,
                doc="The maximal number of MX host addresses tried per delivery (0: no limit).",
            ),
            _P(
                name="smtp_mx_session_limit",
                kind="int",
                default="2",
                minimum=0,
                doc="The maximal number of SMTP sessions per delivery (0: no limit).",
            ),
            _P(
                name="smtp_skip_5xx_greeting",
                kind="bool",
                default="yes",
                doc="Try the next MX host after a 5xx greeting instead of bouncing.",
            ),
            _P(
                name="smtp_connection_cache_on_demand",
                kind="bool",
                default="yes",
                doc="Keep a connection open for more messages to the same destination.",
            ),
            _P(
                name="smtp_connection_cache_time_limit",
                kind="time",
                default="2s",
                unit="s",
                minimum=1,
                doc="How long an unused cached connection stays open.",
            ),
            _P(
                name="smtp_connection_reuse_time_limit",
                kind="time",
                default="300s",
                unit="s",
                minimum=1,
                doc="How long a connection may be reused from its start.",
            ),
            _P(
                name="smtp_connection_reuse_count_limit",
                kind="int",
                default="0",
                minimum=0,
                doc="How many times a connection may be reused (0: no limit).",
            ),
            _P(
                name="lmtp_destination_recipient_limit",
                kind="int",
                default="$default_destination_recipient_limit",
                minimum=0,
                doc="The maximal number of recipients per LMTP delivery (0: no limit).",
            ),
            _P(
                name="lmtp_destination_concurrency_limit",
                kind="int",
                default="$default_destination_concurrency_limit",
                minimum=0,
                doc="The maximal number of parallel LMTP deliveries to one destination.",
            ),
        ),
    ),
    (
        "SMTP client TLS and SASL",
        (
            _P(
                name="smtp_tls_security_level",
                kind="choice",
                default="",
                choices=(
                    "",
                    "none",
                    "may",
                    "encrypt",
                    "dane",
                    "dane-only",
                    "verify",
                    "secure",
                ),
                doc="Outbound TLS: none, may (opportunistic), encrypt, dane, dane-only, verify "
                "or secure.",
            ),
            _P(
                name="smtp_tls_CAfile",
                kind="str",
                default="",
                doc="A PEM file of trusted CA certificates (empty: the system's store).",
            ),
            _P(
                name="smtp_tls_CApath",
                kind="str",
                default="",
                doc="A directory of trusted CA certificates (c_rehash layout).",
            ),
            _P(
                name="smtp_tls_policy_maps",
                kind="table_list",
                default="",
                doc="Tables of per-destination TLS policy: level [match=...] [protocols=...].",
            ),
            _P(
                name="smtp_tls_protocols",
                kind="str",
                default=">=TLSv1",
                doc="The TLS protocols used with opportunistic TLS.",
            ),
            _P(
                name="smtp_tls_mandatory_protocols",
                kind="str",
                default=">=TLSv1",
                doc="The TLS protocols used with mandatory TLS (encrypt and above).",
            ),
            _P(
                name="smtp_tls_verify_cert_match",
                kind="list",
                default="hostname",
                doc="The names a certificate must match at the verify level.",
            ),
            _P(
                name="smtp_tls_secure_cert_match",
                kind="list",
                default="nexthop, dot-nexthop",
                doc="The names a certificate must match at the secure level.",
            ),
            _P(
                name="smtp_tls_loglevel",
                kind="int",
                default="1",
                minimum=0,
                doc="TLS logging: 0 errors only, 1 the outcome of each handshake (differs: "
                "Postfix's is 0).",
            ),
            _P(
                name="smtp_mta_sts_enable",
                kind="bool",
                default="yes",
                doc="Apply MTA-STS (RFC 8461) policies of recipient domains to MX delivery.",
                extension=True,
            ),
            _P(
                name="smtp_sasl_auth_enable",
                kind="bool",
                default="no",
                doc="Authenticate to the server with SASL (RFC 4954) when a password is known.",
            ),
            _P(
                name="smtp_sasl_password_maps",
                kind="table_list",
                default="",
                doc="Tables that map a server host or next hop to username:password.",
            ),
            _P(
                name="smtp_sasl_mechanism_filter",
                kind="list",
                default="",
                doc="The SASL mechanisms to use, of those the server offers (empty: all).",
            ),
            _P(
                name="smtp_sasl_security_options",
                kind="list",
                default="noplaintext, noanonymous",
                doc="SASL options without TLS; noplaintext forbids PLAIN and LOGIN.",
            ),
            _P(
                name="smtp_sasl_tls_security_options",
                kind="list",
                default="noanonymous",
                doc="SASL options over TLS (differs: Postfix's is $smtp_sasl_security_options).",
            ),
            _P(
                name="smtp_sasl_auth_soft_bounce",
                kind="bool",
                default="yes",
                doc="Defer, instead of bounce, mail refused for an authentication failure.",
            ),
        ),
    ),
    (
        "Virtual mailbox delivery",
        (
            _P(
                name="virtual_mailbox_domains",
                kind="list",
                default="$virtual_mailbox_maps",
                doc="The domains delivered by the virtual transport into local mailboxes.",
                file_elements=True,
            ),
            _P(
                name="virtual_mailbox_maps",
                kind="table_list",
                default="",
                doc="Tables that map a recipient to its maildir (a path ending in /), "
                "relative to virtual_mailbox_base.",
            ),
            _P(
                name="virtual_mailbox_base",
                kind="str",
                default="",
                doc="The directory that virtual_mailbox_maps paths are relative to.",
            ),
            _P(
                name="virtual_mailbox_limit",
                kind="size",
                default="51200000",
                doc="The maximal size in bytes of one delivered message file (0: no limit).",
            ),
            _P(
                name="virtual_destination_recipient_limit",
                kind="int",
                default="$default_destination_recipient_limit",
                minimum=0,
                doc="The maximal number of recipients per virtual delivery (0: no limit).",
            ),
            _P(
                name="virtual_destination_concurrency_limit",
                kind="int",
                default="$default_destination_concurrency_limit",
                minimum=0,
                doc="The maximal number of parallel virtual(8) deliveries to one domain.",
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
                doc="How often the queue directories are rescanned for changes by the mta tools.",
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
                name="delay_notice_recipient",
                kind="str",
                default="postmaster",
                doc="Who receives the delay warnings of notify_classes (delay).",
            ),
            _P(
                name="error_notice_recipient",
                kind="str",
                default="postmaster",
                doc="Who receives the notices of notify_classes resource and software.",
            ),
            _P(
                name="bounce_size_limit",
                kind="int",
                default="50000",
                minimum=1,
                doc="The largest original returned whole in a bounce; larger: its headers only.",
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
            _P(
                name="maillog_format",
                kind="choice",
                default="postfix",
                choices=("postfix", "json"),
                doc="The mail log format: postfix (syslog lines) or json (one object a line).",
                extension=True,
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
                name="stats_node_name",
                kind="str",
                default="",
                doc="The node label on every /metrics series, to tell the nodes of a fleet"
                " apart, e.g. $myhostname (empty: no label).",
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
            _P(
                name="stats_tls_cert_file",
                kind="str",
                default="",
                doc="The PEM certificate (and chain) of the statistics service: HTTPS when set.",
                extension=True,
            ),
            _P(
                name="stats_tls_key_file",
                kind="str",
                default="$stats_tls_cert_file",
                doc="The PEM private key of the statistics service certificate.",
                extension=True,
            ),
            _P(
                name="appliance_log_directory",
                kind="str",
                default="/var/log/mta",
                doc="The log volume: properties.yaml maillog_filename is relative to it.",
                extension=True,
            ),
            _P(
                name="appliance_key_directory",
                kind="str",
                default="$config_directory/keys",
                doc="The key volume: properties.yaml ssl_key_file and ssl_cert_file are under it.",
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
