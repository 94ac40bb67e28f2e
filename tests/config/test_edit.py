"""Tests of mta.config.edit: postconf output lines and postconf -e editing of main.cf."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mta.config import load
from mta.config.edit import EditError, apply_changes, edit_main_cf, postconf_lines
from mta.config.parameters import PARAMETERS

MAIN_CF = """\
# Identity
myhostname = mail.example.com

# Trusted networks,
# one per line
mynetworks = 127.0.0.0/8
    192.0.2.0/24
    # a comment inside the continued line
    198.51.100.0/24
biff = no
smtpd_banner = $myhostname ESMTP
"""


@pytest.fixture
def main_cf(tmp_path: Path) -> Path:
    path = tmp_path / "main.cf"
    path.write_text(MAIN_CF)
    return path


# -- postconf output -----------------------------------------------------------------------------


def test_effective_values_for_named_parameters(main_cf: Path) -> None:
    """postconf NAME...: raw values as written (no expansion), in the order asked."""
    cfg = load(main_cf.parent)
    assert postconf_lines(cfg, ["smtpd_banner", "mynetworks", "relayhost", "mail_name"]) == [
        "smtpd_banner = $myhostname ESMTP",
        "mynetworks = 127.0.0.0/8 192.0.2.0/24 198.51.100.0/24",
        "relayhost =",
        "mail_name = mta",
    ]


def test_all_effective_values_sorted(main_cf: Path) -> None:
    """postconf without names: every supported parameter, sorted by name."""
    lines = postconf_lines(load(main_cf.parent), [])
    assert [line.split(" =")[0] for line in lines] == sorted(PARAMETERS)
    assert "myhostname = mail.example.com" in lines


def test_non_default_values(main_cf: Path) -> None:
    """postconf -n: only what main.cf sets among supported parameters, sorted."""
    cfg = load(main_cf.parent)
    assert postconf_lines(cfg, [], "non_default") == [
        "myhostname = mail.example.com",
        "mynetworks = 127.0.0.0/8 192.0.2.0/24 198.51.100.0/24",
        "smtpd_banner = $myhostname ESMTP",
    ]
    assert postconf_lines(cfg, ["relayhost", "myhostname"], "non_default") == [
        "myhostname = mail.example.com"
    ]


def test_default_values(main_cf: Path) -> None:
    """postconf -d: defaults as Postfix writes them, whatever main.cf says."""
    cfg = load(main_cf.parent)
    assert postconf_lines(cfg, ["smtpd_banner", "mynetworks", "always_bcc"], "default") == [
        "smtpd_banner = $myhostname ESMTP $mail_name",
        "mynetworks = 127.0.0.0/8 [::1]/128",
        "always_bcc =",
    ]


def test_hide_name(main_cf: Path) -> None:
    """postconf -h: values alone (an empty value is an empty line)."""
    cfg = load(main_cf.parent)
    assert postconf_lines(cfg, ["myhostname", "relayhost"], hide_name=True) == [
        "mail.example.com",
        "",
    ]


def test_unknown_names_are_warnings(main_cf: Path) -> None:
    """Names mta does not support are reported like Postfix's postconf does, and the
    other names are still printed."""
    cfg = load(main_cf.parent)
    warnings: list[str] = []
    lines = postconf_lines(cfg, ["biff", "mail_name", "nonsense"], warnings=warnings)
    assert lines == ["mail_name = mta"]
    assert warnings == [
        "postconf: warning: biff: unsupported parameter",
        "postconf: warning: nonsense: unknown parameter",
    ]
    with pytest.raises(KeyError, match="nonsense: unknown parameter"):
        postconf_lines(cfg, ["nonsense"])


# -- postconf -e -----------------------------------------------------------------------------------


def test_edit_replaces_in_place_keeping_comments_and_order(main_cf: Path) -> None:
    """A changed parameter's logical line, continuation lines included, is replaced
    where it stands; comments (even inside the continued line) and order stay."""
    warnings = edit_main_cf(main_cf, ["mynetworks = 10.0.0.0/8", "myhostname=mx.example.org"])
    assert warnings == []
    assert main_cf.read_text() == (
        "# Identity\n"
        "myhostname = mx.example.org\n"
        "\n"
        "# Trusted networks,\n"
        "# one per line\n"
        "mynetworks = 10.0.0.0/8\n"
        "    # a comment inside the continued line\n"
        "biff = no\n"
        "smtpd_banner = $myhostname ESMTP\n"
    )
    cfg = load(main_cf.parent)
    assert cfg.list("mynetworks") == ["10.0.0.0/8"]
    assert cfg.str("myhostname") == "mx.example.org"


def test_edit_appends_new_parameters(main_cf: Path) -> None:
    """Parameters not yet in main.cf are appended in the order given."""
    edit_main_cf(main_cf, ["relayhost = [smarthost]:587", "always_bcc ="])
    assert main_cf.read_text() == MAIN_CF + "relayhost = [smarthost]:587\nalways_bcc =\n"


def test_edit_adds_missing_final_newline(tmp_path: Path) -> None:
    """Appending to a file without a final newline starts a new line."""
    path = tmp_path / "main.cf"
    path.write_text("mail_name = x")
    edit_main_cf(path, ["relayhost = y"])
    assert path.read_text() == "mail_name = x\nrelayhost = y\n"


def test_edit_removes_later_duplicates(tmp_path: Path) -> None:
    """A later duplicate would win over the edited line, so it goes."""
    path = tmp_path / "main.cf"
    path.write_text("relayhost = a\n# keep\nrelayhost = b\n  continued\nmail_name = m\n")
    edit_main_cf(path, ["relayhost = c"])
    assert path.read_text() == "relayhost = c\n# keep\nmail_name = m\n"


def test_edit_creates_main_cf(tmp_path: Path) -> None:
    """postconf -e on a directory without main.cf creates it."""
    edit_main_cf(tmp_path / "main.cf", ["mail_name = x"])
    assert (tmp_path / "main.cf").read_text() == "mail_name = x\n"


@pytest.mark.parametrize(
    ("assignment", "reason"),
    [
        ("smtpd_timeout = soon", 'bad value for smtpd_timeout: "soon"'),
        ("myhostname = $myhostname.x", "expansion loop"),
        ("no equals sign", 'missing "="'),
        ("bad name = 1", 'bad parameter name "bad name"'),
        ("= 1", "missing parameter name"),
        ("mynetworks = { 10.0.0.0/8", 'missing "}"'),
    ],
)
def test_bad_edits_leave_the_file_untouched(main_cf: Path, assignment: str, reason: str) -> None:
    """A bad name or value is refused with the reason, and main.cf is not rewritten."""
    before = main_cf.stat()
    with pytest.raises(EditError, match=reason.replace("$", r"\$")):
        edit_main_cf(main_cf, ["mail_name = fine", assignment])
    assert main_cf.read_text() == MAIN_CF
    assert main_cf.stat().st_ino == before.st_ino
    assert sorted(os.listdir(main_cf.parent)) == ["main.cf"]


def test_edit_of_an_unsupported_name_warns_and_writes(main_cf: Path) -> None:
    """As in Postfix, any name may be set (it may be a user variable); mta warns."""
    warnings = edit_main_cf(main_cf, ["biff = yes", "my_var = 1"])
    assert warnings == [
        "postconf: warning: biff: unsupported parameter",
        "postconf: warning: my_var: unknown parameter",
    ]
    text = main_cf.read_text()
    assert "biff = yes\n" in text and text.endswith("my_var = 1\n")


def test_edit_warns_about_undefined_references(main_cf: Path) -> None:
    """A new value that refers to an undefined name is written with a warning."""
    warnings = edit_main_cf(main_cf, ["relayhost = $nowhere"])
    assert warnings == [
        "postconf: warning: undefined parameter $nowhere in relayhost expands to empty"
    ]


def test_edit_is_atomic_and_keeps_the_mode(main_cf: Path) -> None:
    """The file is replaced by rename (new inode), keeps its mode, and no temporary
    file is left behind."""
    main_cf.chmod(0o640)
    before = main_cf.stat().st_ino
    edit_main_cf(main_cf, ["mail_name = x"])
    after = main_cf.stat()
    assert after.st_ino != before
    assert after.st_mode & 0o777 == 0o640
    assert sorted(os.listdir(main_cf.parent)) == ["main.cf"]


def test_apply_changes_is_a_pure_text_transformation() -> None:
    """Lines other than the changed ones are kept byte for byte, odd spacing included."""
    text = "a=1\n\tb  =  2  \n#c = 3\nc = 3 # not a comment\n"
    assert apply_changes(text, {"c": "4"}) == "a=1\n\tb  =  2  \n#c = 3\nc = 4\n"
