"""open_table: the type registry, errors, proxy:, and the per-reload cache."""

from pathlib import Path

import pytest

from mta.tables import TABLE_TYPES, LookupTable, TableCache, accepts_partial_keys, open_table
from mta.tables.base import TableError
from mta.tables.static import StaticTable


def test_unknown_type() -> None:
    """An unknown type is named in the error."""
    with pytest.raises(TableError) as info:
        open_table("foo:/etc/x", base_dir=Path("."))
    assert str(info.value) == "unsupported lookup table type: foo"


@pytest.mark.parametrize("spec", ["/etc/mta/access", ":name", ""])
def test_spec_without_type(spec: str) -> None:
    """A spec must be type:name."""
    with pytest.raises(TableError, match="need type:name"):
        open_table(spec, base_dir=Path("."))


def test_empty_file_name(tmp_path: Path) -> None:
    """hash: with no file name is an error, not the base directory."""
    with pytest.raises(TableError, match="missing file name"):
        open_table("hash:", base_dir=tmp_path)


def test_directory_is_not_a_table(tmp_path: Path) -> None:
    """A directory named as a table file is reported, not a crash."""
    with pytest.raises(TableError, match="cannot open"):
        open_table(f"texthash:{tmp_path}", base_dir=tmp_path)


def test_proxy_is_transparent(tmp_path: Path) -> None:
    """proxy:hash:FILE is hash:FILE."""
    (tmp_path / "t").write_text("k v\n")
    table = open_table("proxy:hash:t", base_dir=tmp_path)
    assert table.lookup("k") == "v"
    assert table.spec == "hash:t"


def test_every_table_keeps_the_protocol(tmp_path: Path) -> None:
    """Each registered type yields a LookupTable with its spec."""
    (tmp_path / "t").write_text("192.0.2.1 v\n")
    for spec in ["hash:t", "cidr:t", "inline:{a=b}", "static:x", "texthash:t"]:
        table = open_table(spec, base_dir=tmp_path)
        assert isinstance(table, LookupTable)
        assert table.spec == spec


def test_adding_a_type_is_one_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new type needs one registry entry and nothing else."""

    def open_upper(spec: str, name: str, base_dir: Path) -> LookupTable:
        return StaticTable(spec, name.upper())

    monkeypatch.setitem(TABLE_TYPES, "upper", open_upper)
    assert open_table("upper:abc", base_dir=Path(".")).lookup("x") == "ABC"


def test_pattern_tables_take_no_partial_keys() -> None:
    """cidr, regexp and pcre get full keys only (also behind proxy:)."""
    kinds = {
        "cidr:x": False,
        "regexp:x": False,
        "pcre:x": False,
        "proxy:regexp:x": False,
        "hash:x": True,
        "inline:{a=b}": True,
        "static:x": True,
    }
    for spec, expected in kinds.items():
        assert accepts_partial_keys(StaticTable(spec, "")) is expected, spec


def test_cache_opens_once_per_spec(tmp_path: Path) -> None:
    """A TableCache returns the same table for the same spec; a new cache
    (a reload) reads the file again."""
    path = tmp_path / "t"
    path.write_text("k 1\n")
    cache = TableCache(tmp_path)
    first = cache.open("hash:t")
    path.write_text("k 2\n")
    assert cache.open("hash:t") is first
    assert first.lookup("k") == "1"
    assert TableCache(tmp_path).open("hash:t").lookup("k") == "2"
    assert len(cache) == 1
