"""``mta postmap``: -q, -q -, -s and checking a table, through mta.cli."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from mta.cli import main


@pytest.fixture
def in_dir(tmp_path: Path) -> Path:
    old = Path.cwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(old)


def test_query_prints_the_value(in_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-q KEY prints the first table's value and exits 0; no type means hash:."""
    (in_dir / "access").write_text("spam@example.com REJECT go away\n")
    assert main(["postmap", "-q", "SPAM@example.com", "access"]) == 0
    assert capsys.readouterr().out == "REJECT go away\n"


def test_missing_key_exits_1(in_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A key no table has: exit 1, nothing printed."""
    (in_dir / "access").write_text("a b\n")
    assert main(["-c", str(in_dir), "postmap", "-q", "zzz", "hash:access"]) == 1
    assert capsys.readouterr().out == ""


def test_query_several_tables_and_types(in_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The first table that has the key answers; regexp and yaml work too."""
    (in_dir / "r").write_text("/^(.*)@example\\.org$/ user $1\n")
    (in_dir / "y.yaml").write_text("k: from yaml\n")
    assert main(["postmap", "-q", "joe@example.org", "yaml:y.yaml", "regexp:r"]) == 0
    assert main(["postmap", "-q", "k", "yaml:y.yaml", "regexp:r"]) == 0
    assert capsys.readouterr().out == "user joe\nfrom yaml\n"


def test_keys_from_stdin(
    in_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """-q - reads keys and prints key<TAB>value for those found."""
    (in_dir / "t").write_text("a 1\nb 2\n")
    monkeypatch.setattr("sys.stdin", io.StringIO("a\nx\nb\n"))
    assert main(["postmap", "-q", "-", "texthash:t"]) == 0
    assert capsys.readouterr().out == "a\t1\nb\t2\n"


def test_dump_and_check(in_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-s lists a fixed table; a bare name checks it; a bad table exits 1
    naming file and line."""
    (in_dir / "t").write_text("a 1\n")
    (in_dir / "bad").write_text("/x/ ok\n/(/ broken\n")
    assert main(["postmap", "-s", "t"]) == 0
    assert main(["postmap", "t"]) == 0
    assert capsys.readouterr().out == "a\t1\n"
    assert main(["postmap", "regexp:bad"]) == 1
    err = capsys.readouterr().err
    assert f"{in_dir / 'bad'}:2: regexp map: bad pattern" in err
    assert main(["postmap", "-s", "regexp:bad2"]) == 1
