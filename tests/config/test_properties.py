"""Tests of mta.config.properties: the appliance's properties.yaml on top of main.cf."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mta.check import full_check
from mta.config import check, load
from mta.config.edit import postconf_lines
from mta.config.properties import (
    ERR_KEY_VOLUME,
    ERR_LOG_TERMINAL,
    ERR_PRECONFIGURE,
    ERR_SSL_KEYS_MISSING,
    ERR_SSL_NOT_DEFINED,
    ERR_UI_PORT,
    apply_timezone,
    read_properties,
)
from tests.stats.certs import make_cert


def confdir(tmp_path: Path, properties: str | None, main_cf: str = "") -> Path:
    (tmp_path / "main.cf").write_text("queue_directory = queue\n" + main_cf)
    if properties is not None:
        (tmp_path / "properties.yaml").write_text(properties)
    return tmp_path


def messages(tmp_path: Path, severity: str = "error") -> list[str]:
    _, problems = full_check(tmp_path)
    return [str(p).replace(str(tmp_path) + "/", "") for p in problems if p.severity == severity]


def test_without_properties_yaml_nothing_changes(tmp_path: Path) -> None:
    """No properties.yaml: main.cf alone decides, and no appliance default applies."""
    cfg = load(confdir(tmp_path, None, "myhostname = mx.example.org\n"))
    assert cfg.str("myhostname") == "mx.example.org"
    assert cfg.str("stats_listen") == ""
    assert cfg.str("mynetworks") == "127.0.0.0/8 [::1]/128"


def test_datasheet_defaults_fill_what_main_cf_leaves_unset(tmp_path: Path) -> None:
    """An empty properties.yaml is the appliance with every default: hostname
    localhost.localdomain, relaying for 127.0.0.1, the statistics GUI on port 80 of
    every address without authentication; main.cf settings stay in force."""
    cfg = load(confdir(tmp_path, "", "mynetworks = 10.0.0.0/8\n"))
    assert cfg.str("myhostname") == "localhost.localdomain"
    assert cfg.str("stats_listen") == "*:80"
    assert cfg.str("stats_username") == ""
    assert cfg.list("mynetworks") == ["10.0.0.0/8"]
    assert cfg.str("relayhost") == ""
    assert cfg.str("maillog_file") == ""
    assert cfg.str("smtpd_tls_cert_file") == ""


def test_written_properties_override_main_cf_with_a_warning(tmp_path: Path) -> None:
    """A property written in properties.yaml wins over main.cf; mta check warns at
    the main.cf line it overrides; postconf shows the result."""
    d = confdir(
        tmp_path,
        "hostname: relay.example.com\nsmtpd_trusted_networks: 192.0.2.0/24, 10.1.0.0/16\n"
        "smart_relay: smarthost.example.net:587\nusername: admin\npassword: pa$word\n"
        "ui_port: 8080\n",
        "myhostname = old.example.com\nstats_listen = 127.0.0.1:8025\n",
    )
    cfg, problems = check(d)
    assert cfg is not None
    assert cfg.str("myhostname") == "relay.example.com"
    assert cfg.list("mynetworks") == ["192.0.2.0/24", "10.1.0.0/16"]
    assert cfg.str("relayhost") == "[smarthost.example.net]:587"
    assert cfg.str("stats_username") == "admin"
    assert cfg.str("stats_password") == "pa$word"  # literal, not an expansion
    assert cfg.str("stats_listen") == "127.0.0.1:8080"  # main.cf's host, the property's port
    warnings = [str(p).replace(str(d) + "/", "") for p in problems if p.severity == "warning"]
    assert "main.cf:2: warning: myhostname is overridden by properties.yaml hostname" in warnings
    assert "main.cf:3: warning: stats_listen is overridden by properties.yaml ui_port" in warnings
    lines = postconf_lines(cfg, ["myhostname", "relayhost", "stats_password"])
    assert lines == [
        "myhostname = relay.example.com",
        "relayhost = [smarthost.example.net]:587",
        "stats_password = pa$$word",
    ]
    assert cfg.origin("myhostname") is not None
    assert cfg.origin("myhostname").file.endswith("properties.yaml")  # type: ignore[union-attr]
    assert cfg.origin("myhostname").line == 1  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("written", "relayhost"),
    [
        ("smart.example.net", "[smart.example.net]"),
        ("smart.example.net:2525", "[smart.example.net]:2525"),
        ("[192.0.2.1]:25", "[192.0.2.1]:25"),
        ("2001:db8::1", "[2001:db8::1]"),
    ],
)
def test_smart_relay_is_one_host_without_mx_lookup(
    tmp_path: Path, written: str, relayhost: str
) -> None:
    """smart_relay names one host: it becomes relayhost in brackets (no MX lookup)."""
    cfg = load(confdir(tmp_path, f'smart_relay: "{written}"\n'))
    assert cfg.str("relayhost") == relayhost


def test_cc_mta_is_a_copy_unless_smart_relay_is_set(tmp_path: Path) -> None:
    """cc_mta's domain receives a copy of every message (always_bcc); with a
    smart_relay it does not work (datasheet), so it is ignored with a warning."""
    cfg = load(confdir(tmp_path, "cc_mta: archive.example.com\n"))
    assert cfg.str("always_bcc") == "cc@archive.example.com"
    d2 = tmp_path / "two"
    d2.mkdir()
    cfg2, problems = check(confdir(d2, "cc_mta: archive.example.com\nsmart_relay: s.example\n"))
    assert cfg2 is not None and cfg2.str("always_bcc") == ""
    assert any("cc_mta is ignored because smart_relay is defined" in str(p) for p in problems)


@pytest.mark.parametrize("value", ["0", "65536", "70000", "eighty", "-1", "true", "[80]"])
def test_ui_port_out_of_range_is_the_datasheet_error(tmp_path: Path, value: str) -> None:
    """A ui_port that is not 1..65535 stops the start with the datasheet's words,
    located at its line."""
    confdir(tmp_path, f"hostname: a.example\nui_port: {value}\n")
    assert messages(tmp_path) == [f"properties.yaml:2: error: {ERR_UI_PORT}"]


def test_broken_yaml_is_a_preconfigure_error(tmp_path: Path) -> None:
    """properties.yaml that is not YAML, or not name: value lines, is the
    datasheet's "failed to preconfigure" error with the line."""
    confdir(tmp_path, "hostname: a.example\nui_port: [80\n")
    found = messages(tmp_path)
    assert len(found) == 1 and found[0].startswith("properties.yaml:")
    assert ERR_PRECONFIGURE in found[0]
    (tmp_path / "properties.yaml").write_text("- just\n- a list\n")
    assert messages(tmp_path) == [
        f"properties.yaml:1: error: {ERR_PRECONFIGURE}: expected name: value lines"
    ]


def test_bad_values_and_unknown_names(tmp_path: Path) -> None:
    """yes/no properties take yes or no; a timezone must exist; a host name must be
    one; an unknown property is a warning."""
    confdir(
        tmp_path,
        "logs_enabled: maybe\ntimezone: Mars/Olympus\nhostname: 'not a host'\nfoo: 1\n",
    )
    assert messages(tmp_path) == [
        "properties.yaml:1: error: Error: logs_enabled value must be yes or no",
        "properties.yaml:2: error: Error: unknown timezone: Mars/Olympus",
        "properties.yaml:3: error: Error: hostname value must be a host name",
    ]
    assert messages(tmp_path, "warning") == ["properties.yaml:4: warning: unknown property: foo"]


def test_yaml_booleans_are_yes_and_no(tmp_path: Path) -> None:
    """YAML 1.1 reads yes/no as booleans; they are the datasheet's yes and no."""
    props, problems = read_properties(confdir(tmp_path, "logs_enabled: yes\nssl_disabled: true\n"))
    assert props is not None and not problems
    assert props.values["logs_enabled"] == "yes" and props.values["ssl_disabled"] == "yes"


def test_logs_enabled_needs_the_log_volume(tmp_path: Path) -> None:
    """logs_enabled=yes without the log volume directory is the datasheet's
    "log terminal is not connected"; with it, the mail log goes to
    maillog_filename under it (a leading slash is still relative to the volume)."""
    d = confdir(
        tmp_path,
        "logs_enabled: yes\nmaillog_filename: /srv1_logs/maillog\n",
        "appliance_log_directory = logvol\n",
    )
    found = messages(d)
    assert len(found) == 1 and ERR_LOG_TERMINAL in found[0]
    assert found[0].startswith("properties.yaml:1: error: ")
    (tmp_path / "logvol").mkdir()
    cfg, problems = full_check(d)
    assert cfg is not None, problems
    assert cfg.path(cfg.str("maillog_file")) == tmp_path / "logvol" / "srv1_logs" / "maillog"


def test_logs_disabled_leaves_the_mail_log_alone(tmp_path: Path) -> None:
    """logs_enabled=no (the default): maillog_filename has no effect."""
    cfg = load(confdir(tmp_path, "maillog_filename: x.log\n", "maillog_file = own.log\n"))
    assert cfg.str("maillog_file") == "own.log"


def test_ssl_needs_key_files(tmp_path: Path) -> None:
    """ssl_disabled=no with an empty key or certificate name: the datasheet error."""
    confdir(tmp_path, "ssl_disabled: no\nssl_key_file: ''\n")
    assert messages(tmp_path) == [f"properties.yaml:1: error: {ERR_SSL_NOT_DEFINED}"]


def test_ssl_keys_on_the_key_volume(tmp_path: Path) -> None:
    """ssl_disabled=no: without the key volume, "failed to mount key volume"; with it
    but without the files (or with a key of another certificate), "couldn't find ssl
    keys"; with a good pair, TLS for SMTP (STARTTLS offered) and the statistics."""
    d = confdir(tmp_path, "ssl_disabled: no\n", "appliance_key_directory = keys\n")

    def appliance_errors() -> list[str]:
        # (The SMTP server's own TLS check may name the same files too.)
        return [m for m in messages(d) if m.startswith("properties.yaml:")]

    found = appliance_errors()
    assert len(found) == 1 and ERR_KEY_VOLUME in found[0]
    (tmp_path / "keys").mkdir()
    found = appliance_errors()
    assert len(found) == 1 and ERR_SSL_KEYS_MISSING in found[0] and "server.pem" in found[0]
    make_cert(tmp_path / "keys", "server")
    make_cert(tmp_path / "other", "server")
    os.replace(tmp_path / "other" / "server.key", tmp_path / "keys" / "server.key")
    found = appliance_errors()
    assert len(found) == 1 and ERR_SSL_KEYS_MISSING in found[0] and "does not belong" in found[0]
    make_cert(tmp_path / "keys", "server")
    cfg, problems = full_check(d)
    assert cfg is not None, problems
    assert cfg.path(cfg.str("smtpd_tls_cert_file")) == tmp_path / "keys" / "server.pem"
    assert cfg.path(cfg.str("stats_tls_key_file")) == tmp_path / "keys" / "server.key"
    assert cfg.str("smtpd_tls_security_level") == "may"


def test_timezone_sets_the_process_zone(tmp_path: Path) -> None:
    """timezone sets TZ; an empty one leaves it as it is."""
    props, _ = read_properties(confdir(tmp_path, "timezone: Europe/Berlin\n"))
    env: dict[str, str] = {"TZ": "UTC"}
    assert apply_timezone(props, env) and env["TZ"] == "Europe/Berlin"
    props, _ = read_properties(confdir(tmp_path, "timezone: ''\n"))
    env = {"TZ": "UTC"}
    assert not apply_timezone(props, env) and env["TZ"] == "UTC"
