"""Tests of mta.config.master: master.cf services, overrides and listener addresses."""

from __future__ import annotations

from pathlib import Path

import pytest

from mta.config.master import MasterService, default_services, parse_master_cf

DEBIAN_MASTER_CF = Path("/usr/share/postfix/master.cf.dist")


def parse_one(text: str) -> MasterService:
    services, problems = parse_master_cf(text, "master.cf")
    assert problems == []
    assert len(services) == 1
    return services[0]


@pytest.mark.skipif(not DEBIAN_MASTER_CF.exists(), reason="Debian's postfix is not installed")
def test_debian_stock_master_cf_is_accepted_silently() -> None:
    """Postfix's own master.cf (internal daemons, pipe services, continuation lines
    with -o and argv=) parses without a single problem; its only listener is smtp."""
    services, problems = parse_master_cf(DEBIAN_MASTER_CF.read_text(), "master.cf")
    assert problems == []
    names = {(service.name, service.type) for service in services}
    assert {("pickup", "unix"), ("qmgr", "unix"), ("relay", "unix"), ("maildrop", "unix")} <= names
    listeners = [service for service in services if service.is_listener]
    assert [(s.name, s.listen_address()) for s in listeners] == [("smtp", ("", 25))]
    relay = next(service for service in services if service.name == "relay")
    assert dict(relay.overrides) == {"syslog_name": "postfix/$service_name"}
    maildrop = next(service for service in services if service.name == "maildrop")
    assert maildrop.args == (
        "flags=DRXhu",
        "user=vmail",
        "argv=/usr/bin/maildrop",
        "-d",
        "${recipient}",
    )
    tlsmgr = next(service for service in services if service.name == "tlsmgr")
    assert (tlsmgr.wakeup, tlsmgr.maxproc) == (1000, 1)


def test_fields_and_defaults() -> None:
    """Each field is read; - gives Postfix's default."""
    service = parse_one("submission inet n - y 60 5 smtpd -v\n")
    assert service == MasterService(
        name="submission",
        type="inet",
        private=False,
        unpriv=True,
        chroot=True,
        wakeup=60,
        maxproc=5,
        command="smtpd",
        args=("-v",),
        line=1,
    )
    unix = parse_one("x unix - - - - - smtp\n")
    assert (unix.private, unix.unpriv, unix.chroot, unix.wakeup, unix.maxproc) == (
        True,
        True,
        False,
        0,
        None,
    )


def test_overrides_in_every_spelling() -> None:
    """-o name=value, -oname=value and -o { name = value with spaces } on continuation
    lines become overrides; other options stay arguments."""
    text = (
        "# the submission service\n"
        "submission inet n - n - - smtpd\n"
        "  -o syslog_name=postfix/submission\n"
        "  -o smtpd_tls_security_level=encrypt\n"
        "\n"
        "  -osmtpd_sasl_auth_enable=yes\n"
        "  -v -n name\n"
        "  -o { smtpd_client_restrictions = permit_sasl_authenticated, reject }\n"
    )
    service = parse_one(text)
    assert service.line == 2
    assert dict(service.overrides) == {
        "syslog_name": "postfix/submission",
        "smtpd_tls_security_level": "encrypt",
        "smtpd_sasl_auth_enable": "yes",
        "smtpd_client_restrictions": "permit_sasl_authenticated, reject",
    }
    assert service.args == ("-v", "-n", "name")


def test_option_parsing_stops_at_the_first_argument() -> None:
    """As with getopt in Postfix daemons, -o after a non-option is an argument."""
    service = parse_one("x unix - n n - - pipe flags=R argv=/bin/cmd -o x=y\n")
    assert service.overrides == {}
    assert service.args == ("flags=R", "argv=/bin/cmd", "-o", "x=y")


def test_last_override_wins() -> None:
    """A repeated -o name keeps the last value, like a repeated main.cf line."""
    service = parse_one("smtp inet n - n - - smtpd -o a=1 -o a=2\n")
    assert dict(service.overrides) == {"a": "2"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("smtp inet n - n - smtpd", "needs 8 fields, found 7"),
        ("smtp tcp n - n - - smtpd", 'bad type "tcp"'),
        ("smtp inet x - n - - smtpd", 'bad private field "x"'),
        ("smtp inet n yes n - - smtpd", 'bad unpriv field "yes"'),
        ("smtp inet n - 1 - - smtpd", 'bad chroot field "1"'),
        ("smtp inet n - n soon - smtpd", 'bad wakeup field "soon"'),
        ("smtp inet n - n - many smtpd", 'bad maxproc field "many"'),
        ("smtp inet n - n - - smtpd -o", '"-o" needs an argument'),
        ("smtp inet n - n - - smtpd -o novalue", 'missing "="'),
        ("smtp inet n - n - - smtpd -o { a = b", 'missing "}"'),
        ("nosuchservice inet n - n - - smtpd", 'unknown TCP service name "nosuchservice"'),
        ("127.0.0.1:99999 inet n - n - - smtpd", "out of range"),
    ],
)
def test_bad_lines_are_errors_at_their_line(line: str, message: str) -> None:
    """A bad service line is an error at its line and is left out."""
    services, problems = parse_master_cf(f"# c\n{line}\n", "master.cf")
    assert services == ()
    assert [(p.line, p.severity) for p in problems] == [(2, "error")]
    assert message in problems[0].message


def test_duplicate_service_is_an_error() -> None:
    """The same name and type twice is an error that names the first line."""
    text = "smtp inet n - n - - smtpd\nsmtp unix - - n - - smtp\nsmtp inet n - n - - smtpd\n"
    services, problems = parse_master_cf(text, "master.cf")
    assert len(services) == 2
    assert [(p.line, p.severity) for p in problems] == [(3, "error")]
    assert "duplicate service smtp/inet (first at line 1)" in problems[0].message


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("x unix - n n - - /usr/local/bin/filter", "unknown command: /usr/local/bin/filter"),
        ("smtp inet n - y - 1 postscreen", "unsupported command: postscreen"),
        ("smtpd pass - - y - - smtpd", "smtpd is only supported as inet"),
    ],
)
def test_commands_mta_does_not_run_warn(line: str, message: str) -> None:
    """Unknown or unsupported commands are warnings; the line is still kept."""
    services, problems = parse_master_cf(line + "\n", "master.cf")
    assert len(services) == 1
    assert [(p.line, p.severity) for p in problems] == [(1, "warning")]
    assert message in problems[0].message


@pytest.mark.parametrize(
    ("name", "address"),
    [
        ("smtp", ("", 25)),
        ("25", ("", 25)),
        ("2525", ("", 2525)),
        ("submission", ("", 587)),
        ("smtps", ("", 465)),
        ("submissions", ("", 465)),
        ("127.0.0.1:2525", ("127.0.0.1", 2525)),
        ("localhost:submission", ("localhost", 587)),
        ("[::1]:2525", ("::1", 2525)),
    ],
)
def test_listen_address(name: str, address: tuple[str, int]) -> None:
    """[host:]port service names resolve; no host means inet_interfaces."""
    service = parse_one(f"{name} inet n - n - - smtpd\n")
    assert service.is_listener
    assert service.listen_address() == address


def test_listen_address_of_a_unix_service_is_an_error() -> None:
    """Only inet services have an address."""
    with pytest.raises(ValueError, match="not an inet service"):
        parse_one("smtp unix - - n - - smtp\n").listen_address()


def test_default_services_are_one_smtp_listener() -> None:
    """Without master.cf, mta listens on port 25 of inet_interfaces."""
    (service,) = default_services()
    assert service.is_listener
    assert service.listen_address() == ("", 25)
    assert service.overrides == {}
    assert service.line is None


def test_services_are_frozen_and_hashable() -> None:
    """A service is a value: immutable, comparable, usable as a key."""
    service = parse_one("smtp inet n - n - - smtpd -o a=1\n")
    with pytest.raises(AttributeError):
        service.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        service.overrides["a"] = "2"  # type: ignore[index]
    assert {service: 1}[parse_one("smtp inet n - n - - smtpd -o a=1\n")] == 1


def test_process_limit() -> None:
    """maxproc - means default_process_limit; a number is the limit itself."""
    assert parse_one("smtp inet n - n - - smtpd\n").process_limit(100) == 100
    assert parse_one("smtp inet n - n - 7 smtpd\n").process_limit(100) == 7
    assert parse_one("smtp inet n - n - 0 smtpd\n").process_limit(100) == 0
