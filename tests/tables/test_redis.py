"""``redis:FILE`` tables: the redis.cf syntax, its errors, and that such a
table refuses to act as a key-to-value lookup table."""

from __future__ import annotations

from pathlib import Path

import pytest

from mta.redisclient import RedisConfig
from mta.tables import open_table
from mta.tables.base import TableError
from mta.tables.redis import RedisTable


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "redis.cf"
    path.write_text(text)
    return path


def test_full_file(tmp_path: Path) -> None:
    """Every setting, comments and a continuation line, relative to main.cf's directory."""
    write(
        tmp_path,
        "# shared state\nhosts = [::1]:6380\ndbnum = 2\nusername = mta\npassword = s3cret\n"
        "key_prefix =\n  fleet1:\ntimeout = 250ms\nretry_after = 1m\n",
    )
    table = open_table("redis:redis.cf", base_dir=tmp_path)
    assert isinstance(table, RedisTable)
    assert table.config == RedisConfig(
        host="::1",
        port=6380,
        database=2,
        username="mta",
        password="s3cret",
        key_prefix="fleet1:",
        timeout=0.25,
        retry_after=60.0,
    )
    assert table.config.address == "[::1]:6380"


def test_defaults_and_unix_socket(tmp_path: Path) -> None:
    """An empty file means 127.0.0.1:6379; unix: names a socket."""
    assert open_table("redis:redis.cf", base_dir=write(tmp_path, "").parent).config == (  # type: ignore[attr-defined]
        RedisConfig()
    )
    write(tmp_path, "hosts = unix:/run/redis/redis.sock\n")
    cfg = open_table("redis:redis.cf", base_dir=tmp_path).config  # type: ignore[attr-defined]
    assert cfg.unix == "/run/redis/redis.sock" and cfg.address == "unix:/run/redis/redis.sock"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hostz = x\n", 'unknown setting "hostz"'),
        ("hosts = a:1 b:2\n", "one Redis server"),
        ("hosts = a:99999\n", "bad port"),
        ("dbnum = two\n", "need a number"),
        ("timeout = soon\n", "need a time"),
        ("timeout = 0\n", "more than 0"),
        ("\n\nno equals here\n", 'missing "="'),
    ],
)
def test_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    """A bad line is a TableError with the file, the line number and the reason."""
    path = write(tmp_path, text)
    with pytest.raises(TableError, match=message) as info:
        open_table(f"redis:{path}", base_dir=tmp_path)
    assert (
        info.value.file == str(path) and info.value.line == text.count("\n", 0, len(text) - 1) + 1
    )


def test_missing_file(tmp_path: Path) -> None:
    """A file that is not there is a TableError naming it."""
    with pytest.raises(TableError, match="cannot open"):
        open_table("redis:nope.cf", base_dir=tmp_path)


def test_not_a_lookup_table(tmp_path: Path) -> None:
    """Used as an access map it says where it can be used instead of answering."""
    table = open_table(f"redis:{write(tmp_path, '')}", base_dir=tmp_path)
    with pytest.raises(TableError, match="address_verify_map"):
        table.lookup("example.com")
