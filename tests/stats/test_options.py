"""Tests of mta.stats.options: stats_listen, credentials, TLS files and exposure warnings."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mta.config import load
from mta.stats.options import (
    StatsOptions,
    check,
    exposure_warnings,
    is_loopback,
    parse_listen,
    stats_options,
)
from tests.stats.certs import make_cert


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8025", ("127.0.0.1", 8025)),
        ("localhost:80", ("127.0.0.1", 80)),
        ("[::1]:8025", ("::1", 8025)),
        ("8025", ("", 8025)),
        ("*:80", ("", 80)),
        (":80", ("", 80)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("[::]:80", ("::", 80)),
    ],
)
def test_parse_listen(value: str, expected: tuple[str, int]) -> None:
    """host:port, [ipv6]:port, and a bare port (or *:port) for every address."""
    assert parse_listen(value) == expected


@pytest.mark.parametrize(
    "value", ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "::1:80", "[::1]80", "mx.example:80"]
)
def test_parse_listen_rejects(value: str) -> None:
    """No port, a port out of range, IPv6 without brackets, a host name."""
    with pytest.raises(ValueError):
        parse_listen(value)


@given(st.text(max_size=30))
def test_parse_listen_raises_only_value_error(value: str) -> None:
    """Any text is either an address or a ValueError."""
    try:
        _host, port = parse_listen(value)
    except ValueError:
        return
    assert 1 <= port <= 65535


def test_loopback() -> None:
    """Loopback addresses are loopback; every-address and public ones are not."""
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("127.1.2.3")
    assert not is_loopback("") and not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")


def test_exposure_warnings() -> None:
    """Beyond loopback: a warning without authentication and one without TLS; on
    loopback none; a user without a password is always worth a warning."""
    assert exposure_warnings(StatsOptions("127.0.0.1", 8025)) == []
    open_ = exposure_warnings(StatsOptions("", 80))
    assert len(open_) == 2
    assert "without authentication" in open_[0] and "*:80" in open_[0]
    assert "without TLS" in open_[1]
    tls = StatsOptions("192.0.2.1", 443, "u", "p", Path("c"), Path("k"))
    assert exposure_warnings(tls) == []
    cleartext = exposure_warnings(StatsOptions("192.0.2.1", 80, "u", "p"))
    assert len(cleartext) == 1 and "password" in cleartext[0]
    assert "empty" in exposure_warnings(StatsOptions("127.0.0.1", 80, "u", ""))[0]


def test_options_and_check_from_main_cf(tmp_path: Path) -> None:
    """main.cf makes the options; check reports the warnings located at
    stats_listen and a broken TLS file as an error."""
    cert, key = make_cert(tmp_path)
    (tmp_path / "main.cf").write_text(
        "stats_listen = 0.0.0.0:8443\nstats_username = admin\nstats_password = s3cret\n"
        f"stats_tls_cert_file = {cert}\nstats_tls_key_file = {key}\n"
    )
    cfg = load(tmp_path)
    options = stats_options(cfg)
    assert options == StatsOptions("0.0.0.0", 8443, "admin", "s3cret", cert, key)
    assert check(cfg) == []
    key.write_text("not a key\n")
    problems = check(load(tmp_path))
    assert [p.severity for p in problems] == ["error"]
    assert "stats_tls_cert_file" in problems[0].message and "not a PEM private key" in str(
        problems[0]
    )


def test_password_ignored_without_user(tmp_path: Path) -> None:
    """stats_password is ignored when stats_username is empty (no authentication)."""
    (tmp_path / "main.cf").write_text("stats_listen = 127.0.0.1:1\nstats_password = x\n")
    options = stats_options(load(tmp_path))
    assert options is not None and not options.authenticated and options.password == ""


def test_bad_listen_is_a_check_error(tmp_path: Path) -> None:
    """A stats_listen that cannot be used stops the start (error at its line)."""
    (tmp_path / "main.cf").write_text("stats_listen = nowhere\n")
    problems = check(load(tmp_path))
    assert len(problems) == 1 and problems[0].severity == "error" and problems[0].line == 1
