"""Tests of mta.cli_postconf: the postconf command line (flags, output, exit codes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mta.cli_postconf import run


@pytest.fixture
def confdir(tmp_path: Path) -> Path:
    (tmp_path / "main.cf").write_text("# mine\nmail_name = Example\nbiff = no\n")
    return tmp_path


def test_names(confdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """postconf NAME prints name = value; unknown names warn on stderr, exit 0."""
    assert run(confdir, ["mail_name", "smtpd_banner", "biff"]) == 0
    out, err = capsys.readouterr()
    assert out == "mail_name = Example\nsmtpd_banner = $myhostname ESMTP $mail_name\n"
    assert err == "postconf: warning: biff: unsupported parameter\n"


def test_n_and_h(confdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-n lists what main.cf sets; -h drops the names."""
    assert run(confdir, ["-n"]) == 0
    assert capsys.readouterr().out == "mail_name = Example\n"
    assert run(confdir, ["-h", "mail_name"]) == 0
    assert capsys.readouterr().out == "Example\n"
    assert run(confdir, ["-nh"]) == 0
    assert capsys.readouterr().out == "Example\n"


def test_d(confdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-d prints defaults."""
    assert run(confdir, ["-d", "mail_name", "soft_bounce"]) == 0
    assert capsys.readouterr().out == "mail_name = mta\nsoft_bounce = no\n"


def test_all(confdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No names: every supported parameter, sorted."""
    assert run(confdir, []) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == sorted(lines, key=lambda line: line.split(" =")[0])
    assert "mail_name = Example" in lines


def test_e(confdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-e edits main.cf in place; then postconf shows the new value."""
    assert run(confdir, ["-e", "mail_name = Other", "relayhost=[relay]:25"]) == 0
    assert (confdir / "main.cf").read_text() == (
        "# mine\nmail_name = Other\nbiff = no\nrelayhost = [relay]:25\n"
    )
    assert run(confdir, ["-h", "relayhost"]) == 0
    assert capsys.readouterr().out == "[relay]:25\n"


def test_c_overrides_the_directory(confdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-c DIR reads that directory, like Postfix's postconf -c."""
    assert run(Path("/nonexistent"), ["-c", str(confdir), "-h", "mail_name"]) == 0
    assert capsys.readouterr().out == "Example\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-e", "smtpd_timeout = soon"], 'bad value for smtpd_timeout: "soon"'),
        (["-e"], "-e needs name=value"),
        (["-n", "-d"], "-n and -d cannot be used together"),
        (["-e", "-n", "a=b"], "-e cannot be combined"),
        (["-x"], "unrecognized arguments: -x"),
    ],
)
def test_failures_are_one_line_on_stderr(
    confdir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """Every failure is one stderr line and exit code 1; main.cf is untouched."""
    before = (confdir / "main.cf").read_text()
    assert run(confdir, argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("postconf: fatal: ") and err.count("\n") == 1
    assert message in err
    assert (confdir / "main.cf").read_text() == before


def test_missing_main_cf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without main.cf there is nothing to show, except defaults."""
    assert run(tmp_path, ["mail_name"]) == 1
    assert "cannot read main.cf" in capsys.readouterr().err
    assert run(tmp_path, ["-d", "mail_name"]) == 0
    assert capsys.readouterr().out == "mail_name = mta\n"


def test_values_print_even_when_another_value_is_bad(
    confdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """postconf shows raw values of a broken main.cf (so it can be inspected and
    fixed); mta check is the place for problems."""
    (confdir / "main.cf").write_text("smtpd_timeout = soon\n")
    assert run(confdir, ["smtpd_timeout"]) == 0
    assert capsys.readouterr().out == "smtpd_timeout = soon\n"
