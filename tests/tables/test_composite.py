"""unionmap: and pipemap: tables built from other tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from mta.tables import accepts_partial_keys, open_table
from mta.tables.base import TableError


def test_unionmap_joins_every_hit(tmp_path: Path) -> None:
    """Each member that has the key contributes, in order, comma-joined."""
    (tmp_path / "h").write_text("a from-hash\n")
    t = open_table(
        "unionmap:{hash:h, inline:{a=from-inline, b=2}, static:always}", base_dir=tmp_path
    )
    assert t.lookup("a") == "from-hash,from-inline,always"
    assert t.lookup("b") == "2,always"
    u = open_table("unionmap:{inline:{a=1}, inline:{b=2}}", base_dir=tmp_path)
    assert u.lookup("c") is None


def test_pipemap_feeds_each_result_to_the_next(tmp_path: Path) -> None:
    """A result is the next table's key; a miss anywhere is a miss."""
    t = open_table("pipemap:{inline:{a=b, x=y}, inline:{b=final}}", base_dir=tmp_path)
    assert t.lookup("a") == "final"
    assert t.lookup("x") is None
    assert t.lookup("q") is None


def test_partial_keys_follow_the_members(tmp_path: Path) -> None:
    """A union with a pattern member, or a pipe starting with one, gets
    full keys only."""
    (tmp_path / "r").write_text("/./ x\n")
    assert accepts_partial_keys(open_table("unionmap:{inline:{a=b}}", base_dir=tmp_path))
    assert not accepts_partial_keys(
        open_table("unionmap:{inline:{a=b}, regexp:r}", base_dir=tmp_path)
    )
    assert not accepts_partial_keys(
        open_table("pipemap:{regexp:r, inline:{x=y}}", base_dir=tmp_path)
    )


@pytest.mark.parametrize("spec", ["unionmap:hash:x", "pipemap:{}", "unionmap:{nosuch:x}"])
def test_bad_specs(spec: str, tmp_path: Path) -> None:
    """Missing braces, an empty list and a bad member are TableErrors."""
    with pytest.raises(TableError):
        open_table(spec, base_dir=tmp_path)
