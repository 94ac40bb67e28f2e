"""Tests of mta.config.model: load/check of a configuration directory and the Config."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mta.config import PARAMETERS, ConfigError, check, load, read


def confdir(tmp_path: Path, main_cf: str, master_cf: str | None = None) -> Path:
    (tmp_path / "main.cf").write_text(main_cf)
    if master_cf is not None:
        (tmp_path / "master.cf").write_text(master_cf)
    return tmp_path


def problems_of(tmp_path: Path, main_cf: str, master_cf: str | None = None) -> list[str]:
    _, problems = check(confdir(tmp_path, main_cf, master_cf))
    return [str(problem).replace(str(tmp_path) + "/", "") for problem in problems]


# -- typed accessors ----------------------------------------------------------------------------


def test_typed_accessors(tmp_path: Path) -> None:
    """Each accessor returns the expanded, typed value."""
    cfg = load(
        confdir(
            tmp_path,
            "myhostname = mail.example.com\n"
            "smtpd_timeout = 2m\n"
            "message_size_limit = 1000\n"
            "soft_bounce = yes\n"
            "smtpd_recipient_limit = 7\n"
            "mynetworks = 10.0.0.0/8, [::1]/128\n"
            "smtp_tcp_port = 2525\n"
            "header_checks = regexp:/etc/mta/hc inline:{ a=b }\n",
        )
    )
    assert cfg.str("myhostname") == "mail.example.com"
    assert cfg.str("smtpd_banner") == "mail.example.com ESMTP mta"
    assert cfg.time("smtpd_timeout") == 120
    assert cfg.size("message_size_limit") == 1000
    assert cfg.bool("soft_bounce") is True
    assert cfg.int("smtpd_recipient_limit") == 7
    assert cfg.list("mynetworks") == ["10.0.0.0/8", "[::1]/128"]
    assert cfg.int("smtp_tcp_port") == cfg.port("smtp_tcp_port") == 2525
    assert cfg.list("header_checks") == ["regexp:/etc/mta/hc", "inline:{ a=b }"]
    assert cfg.list("mydestination") == [
        "mail.example.com",
        "localhost.example.com",
        "localhost",
    ]
    assert cfg.str("mydomain") == "example.com"
    assert cfg.str("config_directory") == str(tmp_path)


def test_defaults_computed_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """myhostname comes from the machine's FQDN at load; mydomain follows myhostname
    as Postfix derives it."""
    monkeypatch.setattr("socket.getfqdn", lambda: "box.lan.example.org")
    cfg = load(confdir(tmp_path, ""))
    assert (cfg.str("myhostname"), cfg.str("mydomain")) == (
        "box.lan.example.org",
        "lan.example.org",
    )
    assert cfg.default("myhostname") == "box.lan.example.org"
    monkeypatch.setattr("socket.getfqdn", lambda: "box")
    cfg = load(confdir(tmp_path, ""))
    assert (cfg.str("myhostname"), cfg.str("mydomain")) == ("box.localdomain", "localdomain")
    cfg = load(confdir(tmp_path, "myhostname = example.com\n"))
    assert cfg.str("mydomain") == "localdomain"


def test_unknown_names_and_wrong_kinds_are_programming_errors(tmp_path: Path) -> None:
    """A name not in the table is a KeyError; an accessor of another kind a TypeError."""
    cfg = load(confdir(tmp_path, "biff = no\n"))
    with pytest.raises(KeyError, match="biff"):
        cfg.str("biff")
    with pytest.raises(KeyError):
        cfg.raw("no_such_thing")
    with pytest.raises(TypeError, match="smtpd_timeout is a time parameter"):
        cfg.int("smtpd_timeout")
    with pytest.raises(TypeError):
        cfg.list("myhostname")
    with pytest.raises(TypeError):
        cfg.bool("smtpd_recipient_limit")


def test_raw_default_and_non_default(tmp_path: Path) -> None:
    """raw() is the text as written (or the default), unexpanded; non_default() lists
    what main.cf sets among supported parameters."""
    cfg = load(confdir(tmp_path, "myorigin = $mydomain\nmail_name = Mail\n  Server\nbiff = no\n"))
    assert cfg.raw("myorigin") == "$mydomain"
    assert cfg.raw("mail_name") == "Mail Server"
    assert cfg.raw("smtpd_banner") == "$myhostname ESMTP $mail_name"
    assert cfg.default("mail_name") == "mta"
    assert cfg.is_default("smtpd_banner") and not cfg.is_default("myorigin")
    assert cfg.non_default() == {"mail_name": "Mail Server", "myorigin": "$mydomain"}
    origin = cfg.origin("mail_name")
    assert origin is not None and origin.line == 2
    assert cfg.origin("smtpd_banner") is None


def test_config_is_immutable_and_reads_equal(tmp_path: Path) -> None:
    """A Config cannot be changed, and reading the same directory twice gives equal
    configurations."""
    directory = confdir(tmp_path, "myhostname = a.example\n", "smtp inet n - n - - smtpd\n")
    first, second = load(directory), load(directory)
    assert first == second
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.confdir = Path("/")  # type: ignore[misc]
    with pytest.raises(TypeError):
        first._settings["x"] = None  # type: ignore[index]
    assert hash(first) == hash(second)


def test_path_resolves_relative_to_main_cf(tmp_path: Path) -> None:
    """Relative paths in values resolve against the directory that holds main.cf."""
    cfg = load(confdir(tmp_path, "queue_directory = spool\n"))
    assert cfg.path(cfg.str("queue_directory")) == tmp_path / "spool"
    assert cfg.path("/var/x") == Path("/var/x")
    assert cfg.main_cf == tmp_path / "main.cf"
    assert cfg.master_cf == tmp_path / "master.cf"


def test_list_file_elements_resolve_against_confdir(tmp_path: Path) -> None:
    """mynetworks may name files, absolute or relative to the configuration directory."""
    (tmp_path / "trusted").write_text("# office\n192.0.2.0/24\n")
    absolute = tmp_path / "more"
    absolute.write_text("198.51.100.0/24\n")
    cfg = load(confdir(tmp_path, f"mynetworks = 127.0.0.0/8 ./trusted {absolute}\n"))
    assert cfg.list("mynetworks") == ["127.0.0.0/8", "192.0.2.0/24", "198.51.100.0/24"]


# -- problems ---------------------------------------------------------------------------------


def test_bad_values_are_errors_with_file_and_line(tmp_path: Path) -> None:
    """A bad value is an error naming file, line, parameter, value and reason, and
    load() refuses the configuration with it."""
    text = "# limits\nsmtpd_timeout = forever\nsoft_bounce = maybe\n"
    assert problems_of(tmp_path, text) == [
        'main.cf:2: error: bad value for smtpd_timeout: "forever": '
        "expected a number with an optional unit s, m, h, d or w",
        'main.cf:3: error: bad value for soft_bounce: "maybe": expected "yes" or "no"',
    ]
    with pytest.raises(ConfigError) as caught:
        load(tmp_path)
    assert [p.line for p in caught.value.problems] == [2, 3]
    assert str(caught.value).endswith("(and 1 more errors)")
    assert "\n" not in str(caught.value)


def test_bad_value_through_expansion_is_reported_with_the_expanded_value(tmp_path: Path) -> None:
    """Validation sees the expanded value; a bad default says which default it was."""
    problems = problems_of(tmp_path, "default_destination_concurrency_limit = many\n")
    assert problems[0] == (
        'main.cf:1: error: bad value for default_destination_concurrency_limit: "many": '
        "expected a whole number"
    )
    # Every parameter whose default refers to it is reported too (smtp_, lmtp_, ...).
    assert (
        'main.cf: error: bad value for smtp_destination_concurrency_limit: "many": '
        "expected a whole number (default: $default_destination_concurrency_limit)"
    ) in problems[1:]


def test_expansion_loop_is_an_error_naming_the_parameter(tmp_path: Path) -> None:
    """A parameter that refers back to itself is an error, never a hang."""
    problems = problems_of(tmp_path, "myhostname = $myorigin\nmyorigin = $myhostname\n")
    assert "main.cf:1: error: myhostname: expansion loop: myhostname -> myorigin -> myhostname" in (
        problems
    )
    assert "main.cf:2: error: myorigin: expansion loop: myorigin -> myhostname -> myorigin" in (
        problems
    )


def test_self_reference_is_a_loop(tmp_path: Path) -> None:
    """name = $name is the shortest loop."""
    assert problems_of(tmp_path, "relayhost = [$relayhost]\n")[0] == (
        "main.cf:1: error: relayhost: expansion loop: relayhost -> relayhost"
    )


def test_long_reference_chains_do_not_overflow(tmp_path: Path) -> None:
    """A chain longer than Postfix's nesting limit is an error, not a RecursionError."""
    chain = "".join(f"v{index} = $v{index + 1}\n" for index in range(300))
    problems = problems_of(tmp_path, f"relayhost = $v0\n{chain}")
    assert any("relayhost: unreasonable macro call nesting" in p for p in problems)


def test_undefined_reference_warns_and_expands_to_empty(tmp_path: Path) -> None:
    """$name of an undefined name expands to empty with a warning at the line that
    uses it; the configuration still loads."""
    directory = confdir(tmp_path, "smtpd_banner = $myhostname $nothing_here\n")
    config, problems = check(directory)
    assert config is not None
    assert [str(p).replace(str(tmp_path) + "/", "") for p in problems] == [
        "main.cf:1: warning: undefined parameter $nothing_here in smtpd_banner expands to empty"
    ]
    assert config.str("smtpd_banner") == config.str("myhostname") + " "


def test_unsupported_parameters_warn_but_stay_available(tmp_path: Path) -> None:
    """Postfix names mta does not implement and non-Postfix names both get the
    unsupported warning, and remain usable as $name (user variables)."""
    text = "biff = no\nmy_relay = [smarthost]:587\nrelayhost = $my_relay\n"
    directory = confdir(tmp_path, text)
    config, problems = check(directory)
    assert config is not None
    assert [str(p).replace(str(tmp_path) + "/", "") for p in problems] == [
        "main.cf:1: warning: unsupported parameter: biff",
        "main.cf:2: warning: unsupported parameter: my_relay",
    ]
    assert config.str("relayhost") == "[smarthost]:587"


def test_missing_main_cf_is_an_error(tmp_path: Path) -> None:
    """main.cf is required."""
    config, problems = check(tmp_path)
    assert config is None
    assert [(p.file, p.line, p.severity) for p in problems] == [
        (str(tmp_path / "main.cf"), None, "error")
    ]
    assert "cannot read main.cf" in problems[0].message
    with pytest.raises(ConfigError):
        load(tmp_path)


def test_missing_file_element_is_an_error(tmp_path: Path) -> None:
    """A mynetworks file that does not exist stops the configuration."""
    problems = problems_of(tmp_path, "mynetworks = ./absent\n")
    assert problems[0].startswith("main.cf:1: error: mynetworks: cannot read ")
    # Parameters that default to $mynetworks report it too, without a line.
    assert all(": error: " in p and "cannot read" in p for p in problems)


def test_problems_come_in_file_order(tmp_path: Path) -> None:
    """check() lists main.cf problems by line, then master.cf problems by line,
    warnings and errors interleaved."""
    main_cf = "biff = no\nsmtpd_timeout = x\n bad continuation-only? no: continues\nfoo\n"
    master_cf = "smtp inet n - n - - smtpd\n  -o smtpd_timeout=y\nx unix - - n - - ./filter\n"
    problems = problems_of(tmp_path, main_cf, master_cf)
    assert [p.split(": ")[0:2] for p in problems] == [
        ["main.cf:1", "warning"],
        ["main.cf:2", "error"],
        ["main.cf:4", "error"],
        ["master.cf:1", "error"],
        ["master.cf:3", "warning"],
    ]


# -- master.cf and services ----------------------------------------------------------------------


def test_no_master_cf_means_one_smtpd_on_port_25(tmp_path: Path) -> None:
    """Without master.cf the listeners are the default smtp service."""
    cfg = load(confdir(tmp_path, ""))
    (listener,) = cfg.listeners()
    assert listener.listen_address() == ("", 25)
    assert cfg.services == cfg.listeners()


def test_listeners_are_the_inet_smtpd_services(tmp_path: Path) -> None:
    """Internal Postfix daemons are services but not listeners."""
    master_cf = (
        "127.0.0.1:2525 inet n - n - - smtpd\n"
        "127.0.0.1:2587 inet n - n - 10 smtpd -o smtpd_tls_security_level=encrypt\n"
        "pickup unix n - y 60 1 pickup\n"
        "qmgr unix n - n 300 1 qmgr\n"
    )
    cfg = load(confdir(tmp_path, "", master_cf))
    assert len(cfg.services) == 4
    assert [s.listen_address() for s in cfg.listeners()] == [
        ("127.0.0.1", 2525),
        ("127.0.0.1", 2587),
    ]


def test_for_service_applies_overrides_also_to_expansion(tmp_path: Path) -> None:
    """-o overrides replace main.cf values for that service only, and other
    parameters that refer to them with $name see the override, as in Postfix."""
    main_cf = "myhostname = mx.example.com\nsmtpd_timeout = 60s\n"
    master_cf = (
        "smtp inet n - n - - smtpd\n"
        "submission inet n - n - - smtpd\n"
        "  -o myhostname=submit.example.com\n"
        "  -o { smtpd_client_restrictions = permit_sasl_authenticated, reject }\n"
        "  -o smtpd_timeout=$submission_timeout\n"
    )
    directory = confdir(tmp_path, main_cf + "submission_timeout = 5m\n", master_cf)
    cfg = load(directory)
    smtp, submission = cfg.listeners()
    assert cfg.for_service(smtp) is cfg
    derived = cfg.for_service(submission)
    assert derived.str("smtpd_banner") == "submit.example.com ESMTP mta"
    assert derived.list("smtpd_client_restrictions") == ["permit_sasl_authenticated", "reject"]
    assert derived.time("smtpd_timeout") == 300
    assert derived.raw("myhostname") == "submit.example.com"
    assert not derived.is_default("smtpd_client_restrictions")
    assert cfg.str("smtpd_banner") == "mx.example.com ESMTP mta"
    assert cfg.time("smtpd_timeout") == 60
    assert load(directory).for_service(submission) == derived


def test_for_service_defines_service_name(tmp_path: Path) -> None:
    """$service_name expands to the master.cf service name inside a service."""
    master_cf = "submission inet n - n - - smtpd -o smtpd_banner=$myhostname/$service_name\n"
    cfg = load(confdir(tmp_path, "myhostname = h.example\n", master_cf))
    assert cfg.for_service(cfg.listeners()[0]).str("smtpd_banner") == "h.example/submission"


def test_for_service_of_a_foreign_service_validates(tmp_path: Path) -> None:
    """for_service() with a service built elsewhere checks its overrides."""
    cfg = load(confdir(tmp_path, ""))
    good = dataclasses.replace(cfg.listeners()[0], overrides={"smtpd_timeout": "7"})
    assert cfg.for_service(good).time("smtpd_timeout") == 7
    bad = dataclasses.replace(cfg.listeners()[0], overrides={"smtpd_timeout": "soon"})
    with pytest.raises(ConfigError, match="bad value for smtpd_timeout"):
        cfg.for_service(bad)


def test_override_problems_are_located_in_master_cf(tmp_path: Path) -> None:
    """A bad override value is an error at its service's master.cf line; an unknown
    override name on a listener is an unsupported-parameter warning."""
    master_cf = (
        "# services\n"
        "smtp inet n - n - - smtpd\n"
        "  -o smtpd_timeout=never\n"
        "  -o no_such_parameter=1\n"
    )
    assert problems_of(tmp_path, "", master_cf) == [
        "master.cf:2: warning: service smtp/inet: unsupported parameter: no_such_parameter",
        'master.cf:2: error: service smtp/inet: bad value for smtpd_timeout: "never": '
        "expected a number with an optional unit s, m, h, d or w",
    ]


def test_override_that_breaks_a_main_cf_value_says_which_service(tmp_path: Path) -> None:
    """When an override makes another parameter's main.cf value bad, the problem is at
    that main.cf line and names the service."""
    main_cf = "smtpd_recipient_limit = $limit\nlimit = 10\n"
    master_cf = "smtp inet n - n - - smtpd -o limit=lots\n"
    problems = problems_of(tmp_path, main_cf, master_cf)
    assert (
        'main.cf:1: error: bad value for smtpd_recipient_limit: "lots": expected a whole number'
        " (with the -o overrides of service smtp/inet)"
    ) in problems


def test_read_is_lenient_for_tools(tmp_path: Path) -> None:
    """read() returns a Config even with errors; only the bad parameter's accessor
    fails, naming the problem."""
    cfg, problems = read(confdir(tmp_path, "smtpd_timeout = x\nmail_name = ok\n"))
    assert [p.severity for p in problems] == ["error"]
    assert cfg.str("mail_name") == "ok"
    assert cfg.raw("smtpd_timeout") == "x"
    with pytest.raises(ConfigError, match="smtpd_timeout"):
        cfg.time("smtpd_timeout")


def test_problem_helper_locates_at_the_setting(tmp_path: Path) -> None:
    """Config.problem() lets other checks report at the parameter's line."""
    cfg = load(confdir(tmp_path, "# x\nheader_checks = regexp:/nonexistent\n"))
    problem = cfg.problem("header_checks", "cannot open /nonexistent")
    assert (problem.line, problem.severity) == (2, "error")
    assert problem.message == "header_checks: cannot open /nonexistent"
    assert cfg.problem("body_checks", "x", "warning").line is None


def test_importing_reads_nothing() -> None:
    """Importing the package computes no default and reads no file."""
    code = (
        "import builtins, socket\n"
        "def boom(*a, **k): raise SystemExit('read at import')\n"
        "socket.getfqdn = boom\n"
        "builtins.open = boom\n"
        "import mta.config, mta.config.docs, mta.cli_postconf\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


def test_myorigin_file_is_read_as_on_debian(tmp_path: Path) -> None:
    """Debian's `myorigin = /etc/mailname` means the first line of that file; raw()
    keeps the path, and a missing file is an error at the line."""
    (tmp_path / "mailname").write_text("\nmail.example.net\nignored\n")
    cfg = load(confdir(tmp_path, f"myorigin = {tmp_path / 'mailname'}\n"))
    assert cfg.str("myorigin") == "mail.example.net"
    assert cfg.raw("myorigin") == str(tmp_path / "mailname")
    problems = problems_of(tmp_path, "myorigin = /nonexistent/mailname\n")
    assert problems == [
        "main.cf:1: error: myorigin: cannot read /nonexistent/mailname: No such file or directory"
    ]


DEBIAN_MAIN_CF = """\
# See /usr/share/postfix/main.cf.dist for a commented, more complete version
smtpd_banner = $myhostname ESMTP $mail_name (Debian/GNU)
biff = no
append_dot_mydomain = no
readme_directory = no
compatibility_level = 3.6
smtpd_tls_cert_file=/etc/ssl/certs/ssl-cert-snakeoil.pem
smtpd_tls_key_file=/etc/ssl/private/ssl-cert-snakeoil.key
smtpd_tls_security_level=may
smtp_tls_CApath=/etc/ssl/certs
smtp_tls_session_cache_database = btree:${data_directory}/smtp_scache
smtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated defer_unauth_destination
myhostname = vm.example.net
alias_maps = hash:/etc/aliases
alias_database = hash:/etc/aliases
mydestination = $myhostname, localhost.localdomain, , localhost
relayhost =
mynetworks = 127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128
mailbox_size_limit = 0
recipient_delimiter = +
inet_interfaces = all
inet_protocols = all
"""


def test_debian_generated_main_cf_loads_with_warnings_only(tmp_path: Path) -> None:
    """The main.cf that Debian's postfix package writes is accepted: what mta does not
    implement is named as unsupported, nothing is an error."""
    directory = confdir(tmp_path, DEBIAN_MAIN_CF)
    config, problems = check(directory)
    assert config is not None
    unsupported = [p.message.split(": ")[1] for p in problems]
    assert unsupported == [
        "biff",
        "append_dot_mydomain",
        "readme_directory",
        "compatibility_level",
        "smtp_tls_session_cache_database",
        "alias_maps",
        "alias_database",
        "mailbox_size_limit",
    ]
    assert all(p.severity == "warning" for p in problems)
    assert config.list("mydestination") == ["vm.example.net", "localhost.localdomain", "localhost"]
    assert config.str("smtpd_tls_security_level") == "may"


_line = st.tuples(
    st.sampled_from([*sorted(PARAMETERS), "x", "y"]),
    st.text(alphabet="${}():?ab ,/.#\t=", max_size=25),
).map(lambda pair: f"{pair[0]} = {pair[1]}")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(_line, st.text(max_size=30)), max_size=8), st.text(max_size=80))
def test_check_never_raises(lines: list[str], master_cf: str) -> None:
    """Whatever main.cf and master.cf hold, check() returns Problems (or a Config),
    never an exception: expansion, lists, files and overrides included."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory)
        (path / "main.cf").write_text("\n".join(lines), errors="surrogateescape")
        (path / "master.cf").write_text(
            "smtp inet n - n - - smtpd -o x=$y\n" + master_cf, errors="surrogateescape"
        )
        config, problems = check(path)
        assert config is not None or any(p.severity == "error" for p in problems)
