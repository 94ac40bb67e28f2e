"""Queue ids: Postfix long-id look, alphabet, uniqueness, time order, validation."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mta.queue import ids
from mta.queue.ids import is_queue_id, new_queue_id, queue_id_time

# Digits and consonants (Postfix's long queue id alphabet), then "z", then
# the pid/sequence part without "z".
ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"
LONG_ID = re.compile(rf"[{ALPHABET}]{{10}}z[{ALPHABET[:-1]}]{{7}}")

# Times from 2001 to 2500, to the microsecond.
times = st.integers(min_value=1_000_000_000_000_000, max_value=16_725_225_600_000_000).map(
    lambda us: us / 1_000_000
)


def test_format_is_letters_and_digits_of_the_alphabet() -> None:
    """A new id has the documented layout and uses no vowels (never a word)."""
    for _ in range(1000):
        queue_id = new_queue_id()
        assert LONG_ID.fullmatch(queue_id), queue_id
        assert queue_id.isascii() and queue_id.isalnum()
        assert not set("aeiouAEIOU") & set(queue_id)
        assert is_queue_id(queue_id)


def test_unique_under_many_calls() -> None:
    """200,000 ids made as fast as possible in one process never repeat."""
    ids = [new_queue_id() for _ in range(200_000)]
    assert len(set(ids)) == len(ids)


def test_unique_when_many_made_in_the_same_microsecond() -> None:
    """The sequence part tells apart ids made at the very same time."""
    ids = {new_queue_id(now=1_700_000_000.123456) for _ in range(10_000)}
    assert len(ids) == 10_000


def test_unique_across_processes() -> None:
    """Four processes making ids at the same time never make the same one."""
    code = "from mta.queue.ids import new_queue_id\nfor _ in range(20000): print(new_queue_id())"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    every: list[str] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        every.extend(out.split())
    assert len(every) == 80_000
    assert len(set(every)) == len(every)


def test_forked_processes_differ_by_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fork copies the sequence counter; the pid alone keeps the ids apart,
    even at the same microsecond."""
    made = []
    for pid in (4321, 4322):
        monkeypatch.setattr(ids, "_sequence", itertools.count(0))
        monkeypatch.setattr(ids.os, "getpid", lambda pid=pid: pid)
        made.append({new_queue_id(now=1_700_000_000.0) for _ in range(1000)})
    assert len(made[0]) == len(made[1]) == 1000
    assert not made[0] & made[1]


@given(times, times)
def test_sorts_like_time(t1: float, t2: float) -> None:
    """Ids made at different microseconds sort in time order."""
    if round(t1 * 1e6) == round(t2 * 1e6):
        return
    a, b = new_queue_id(now=t1), new_queue_id(now=t2)
    assert (a < b) == (t1 < t2)


@given(times)
def test_time_round_trips(t: float) -> None:
    """queue_id_time recovers the time an id was made at, to the microsecond."""
    decoded = queue_id_time(new_queue_id(now=t))
    assert decoded is not None
    assert abs(decoded - t) < 1e-6 * 2


def test_queue_id_time_of_foreign_ids_is_none() -> None:
    """Postfix short ids and hand-made names carry no time we can read."""
    assert queue_id_time("3F1A42E3C2") is None
    assert queue_id_time("") is None


def test_is_queue_id_accepts_operator_input() -> None:
    """Postfix short ids and hand-made alphanumeric names are accepted."""
    for good in ("3F1A42E3C2", "ABC123", "x", "a" * 64):
        assert is_queue_id(good)


def test_is_queue_id_rejects_anything_path_like() -> None:
    """No separator, dot, space, non-ASCII or over-long name passes."""
    bad_names = ("", "../etc", "a/b", "a.json", "a b", "ab\n", "caf\u00e9", "\u0661", "a" * 65)
    for bad in bad_names:
        assert not is_queue_id(bad)


@given(st.text())
def test_is_queue_id_never_accepts_a_path(text: str) -> None:
    """Whatever is typed, an accepted id is one plain ASCII file name."""
    if is_queue_id(text):
        assert re.fullmatch(r"[A-Za-z0-9]{1,64}", text)
