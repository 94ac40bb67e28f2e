"""Tests of mta.config.parameters: the table's declarations and each kind's validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from mta.config.model import check
from mta.config.parameters import GROUPS, PARAMETERS, Computed, Parameter, Value
from mta.config.postfix_names import POSTFIX_NAMES


def parse(name: str, value: str) -> Value:
    return PARAMETERS[name].parse(value)


def test_every_parameter_has_a_doc_and_a_valid_default(tmp_path: Path) -> None:
    """With an empty main.cf, every default expands and validates without a problem
    (Postfix's check-param-defaults)."""
    (tmp_path / "main.cf").write_text("")
    config, problems = check(tmp_path)
    assert problems == []
    assert config is not None
    for name, parameter in PARAMETERS.items():
        assert parameter.doc.strip(), name
        assert config.str(name) is not None


def test_names_are_postfix_names_or_marked_extensions() -> None:
    """A parameter either is a Postfix parameter or is an mta extension, never a
    name that would collide with Postfix."""
    for name, parameter in PARAMETERS.items():
        assert (name in POSTFIX_NAMES) != parameter.extension, name
    assert {p.name for p in PARAMETERS.values() if p.extension} >= {
        "stats_listen",
        "stats_username",
        "stats_password",
        "dns_nameservers",
    }


def test_parameters_mta_does_not_act_on_are_not_declared() -> None:
    """Debian's stock main.cf parameters that mta ignores get the unsupported warning
    instead of a silent entry in the table."""
    for name in (
        "biff",
        "append_dot_mydomain",
        "readme_directory",
        "alias_maps",
        "alias_database",
        "compatibility_level",
        "smtpd_tls_session_cache_database",
        "mailbox_size_limit",
    ):
        assert name not in PARAMETERS


def test_groups_hold_every_parameter_once() -> None:
    """The documentation groups and the lookup table agree."""
    grouped = [parameter.name for _, parameters in GROUPS for parameter in parameters]
    assert sorted(grouped) == sorted(PARAMETERS)


@pytest.mark.parametrize(
    ("name", "default"),
    [
        ("myorigin", "$myhostname"),
        ("mydestination", "$myhostname, localhost.$mydomain, localhost"),
        ("mynetworks", "127.0.0.0/8 [::1]/128"),
        (
            "smtpd_relay_restrictions",
            "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination",
        ),
        ("queue_directory", "/var/spool/mta"),
        ("message_size_limit", "10240000"),
        ("smtpd_banner", "$myhostname ESMTP $mail_name"),
        ("mail_name", "mta"),
        ("mail_owner", "mta"),
        ("maximal_queue_lifetime", "5d"),
        ("delay_warning_time", "0h"),
        ("smtp_tcp_port", "smtp"),
        ("lmtp_tcp_port", "24"),
        ("smtpd_forbid_bare_newline", "yes"),
        ("smtp_destination_concurrency_limit", "$default_destination_concurrency_limit"),
        ("notify_classes", "resource, software"),
        ("relay_domains", ""),
    ],
)
def test_defaults_as_postfix_writes_them(name: str, default: str) -> None:
    """Defaults are written unexpanded, in Postfix's spelling (or mta's where noted)."""
    assert PARAMETERS[name].default == default


def test_computed_defaults_are_computed_at_load_not_declared() -> None:
    """myhostname, mydomain and config_directory are computed when a Config is built."""
    for name in ("myhostname", "mydomain", "config_directory"):
        assert isinstance(PARAMETERS[name].default, Computed)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("smtpd_recipient_limit", "1", 1),
        ("smtpd_recipient_limit", "5000", 5000),
        ("message_size_limit", "0", 0),
        ("soft_bounce", "yes", True),
        ("soft_bounce", "no", False),
        ("soft_bounce", "TRUE", True),
        ("soft_bounce", "false", False),
        ("smtpd_timeout", "300", 300),
        ("smtpd_timeout", "300s", 300),
        ("smtpd_timeout", "5m", 300),
        ("smtpd_timeout", "2h", 7200),
        ("maximal_queue_lifetime", "5", 5 * 86400),
        ("maximal_queue_lifetime", "1w", 604800),
        ("maximal_queue_lifetime", "0", 0),
        ("delay_warning_time", "4", 4 * 3600),
        ("smtp_address_preference", "ipv6", "ipv6"),
        ("smtpd_tls_security_level", "", ""),
        ("smtpd_tls_security_level", "encrypt", "encrypt"),
        ("inet_protocols", "ipv4, ipv6", ("ipv4", "ipv6")),
        ("notify_classes", "bounce 2bounce", ("bounce", "2bounce")),
        (
            "header_checks",
            "regexp:/etc/x pcre:{/a/ REJECT}",
            ("regexp:/etc/x", "pcre:{/a/ REJECT}"),
        ),
        ("transport_maps", "", ()),
        ("local_recipient_maps", "proxy:unix:passwd.byname", ("proxy:unix:passwd.byname",)),
        ("smtp_tcp_port", "2525", 2525),
        ("smtp_tcp_port", "submission", 587),
        ("smtpd_banner", "any $text", "any $text"),
    ],
)
def test_valid_values(name: str, value: str, expected: Value) -> None:
    """Each kind accepts Postfix's spellings and yields the typed value."""
    assert parse(name, value) == expected


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("smtpd_recipient_limit", "0", "must be at least 1"),
        ("smtpd_recipient_limit", "-5", "whole number"),
        ("smtpd_recipient_limit", "ten", "whole number"),
        ("smtpd_recipient_limit", "1.5", "whole number"),
        ("message_size_limit", "10M", "number of bytes"),
        ("soft_bounce", "maybe", '"yes" or "no"'),
        ("soft_bounce", "", '"yes" or "no"'),
        ("smtpd_timeout", "5x", "optional unit"),
        ("smtpd_timeout", "5 m", "optional unit"),
        ("smtpd_timeout", "m", "optional unit"),
        ("smtpd_timeout", "0", "must be at least 1s"),
        ("smtp_address_preference", "ipv5", 'one of: "any", "ipv4", "ipv6"'),
        ("mynetworks_style", "", "one of"),
        ("inet_protocols", "ipv4 ipx", '"ipx" is not one of'),
        ("notify_classes", "everything", "is not one of"),
        ("header_checks", "/etc/postfix/header_checks", "not a lookup table"),
        ("transport_maps", "hash:", "not a lookup table"),
        ("smtp_tcp_port", "99999", "out of range"),
        ("smtp_tcp_port", "no-such-service", "unknown TCP service"),
        ("smtpd_client_restrictions", "check_policy_service { x", "missing"),
    ],
)
def test_invalid_values(name: str, value: str, reason: str) -> None:
    """Bad values raise ValueError with a reason a person can act on."""
    with pytest.raises(ValueError, match=reason.replace("(", r"\(")):
        parse(name, value)


def test_declaration_mistakes_fail_at_declaration() -> None:
    """A time parameter without a unit, a choice without choices and a doc-less
    parameter are programming errors caught when the table is built."""
    with pytest.raises(ValueError, match="unit"):
        Parameter(name="x", kind="time", default="1", doc="d")
    with pytest.raises(ValueError, match="choices"):
        Parameter(name="x", kind="choice", default="a", doc="d")
    with pytest.raises(ValueError, match="doc"):
        Parameter(name="x", kind="str", default="a", doc=" ")
    with pytest.raises(ValueError, match="file elements"):
        Parameter(name="x", kind="str", default="a", doc="d", file_elements=True)


def test_file_elements_hook_is_used_only_where_allowed() -> None:
    """Lists marked file_elements hand their elements to the file reader; other lists
    keep a /path element as written."""
    seen: list[list[str]] = []

    def files(elements: list[str]) -> list[str]:
        seen.append(elements)
        return ["10.0.0.0/8"]

    assert PARAMETERS["mynetworks"].parse("/etc/nets", files) == ("10.0.0.0/8",)
    assert seen == [["/etc/nets"]]
    assert PARAMETERS["dns_nameservers"].parse("/etc/x", files) == ("/etc/x",)
    assert len(seen) == 1
