"""Queue ids: the name of a queued message on disk, in replies and in the log.

Made like Postfix's long queue ids (``enable_long_queue_ids``, Postfix 2.9+):
the arrival time is spelled with the 52 letters and digits that are not
vowels, so an id never reads as a word and sorts like the time it was made.
The layout is ::

    SSSSSS UUUU z PPPP NNN
    seconds  |  |  |    per-process sequence (starts at a random value)
             |  |  process id
             |  separator (the fields after it never use "z")
             microseconds

18 characters, letters and digits only.  Two processes running at the same
time have different pids, and one process never repeats a sequence number
within the same microsecond, so ids are unique across the daemon and the
``mta`` tools writing to one queue.

Inputs: the clock and the pid.  Outputs: ``new_queue_id()``; the validators
``is_queue_id()`` (what the tools accept, what the store accepts as a file
name) and ``queue_id_time()``.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import time

# Postfix's alphabet for long ids: digits and consonants, in ASCII order so
# that fixed-width numbers compare like their values.
_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"
_ALPHABET51 = _ALPHABET[:-1]  # without the separator "z"
_SEPARATOR = "z"
_SEC_WIDTH = 6  # 52**6 seconds reach the year 2596
_USEC_WIDTH = 4  # 52**4 > 10**6
_PID_WIDTH = 4  # 51**4 > 2**22, Linux's largest pid_max
_SEQ_WIDTH = 3

_sequence = itertools.count(random.randrange(len(_ALPHABET51) ** _SEQ_WIDTH))

_LONG_ID = re.compile(
    rf"[{_ALPHABET}]{{{_SEC_WIDTH + _USEC_WIDTH}}}{_SEPARATOR}"
    rf"[{_ALPHABET51}]{{{_PID_WIDTH + _SEQ_WIDTH}}}"
)

MAX_QUEUE_ID_LENGTH = 64


def _encode(value: int, alphabet: str, width: int) -> str:
    """``value`` modulo ``len(alphabet)**width``, as exactly ``width`` digits."""
    base = len(alphabet)
    digits = []
    for _ in range(width):
        value, digit = divmod(value, base)
        digits.append(alphabet[digit])
    return "".join(reversed(digits))


def _decode(text: str, alphabet: str) -> int:
    value = 0
    for ch in text:
        value = value * len(alphabet) + alphabet.index(ch)
    return value


def new_queue_id(now: float | None = None) -> str:
    """A fresh queue id; ``now`` (Unix time) is for tests, default the clock."""
    if now is None:
        ns = time.time_ns()
    else:
        ns = round(now * 1_000_000_000)
    seconds, rest = divmod(ns, 1_000_000_000)
    return "".join(
        (
            _encode(seconds, _ALPHABET, _SEC_WIDTH),
            _encode(rest // 1000, _ALPHABET, _USEC_WIDTH),
            _SEPARATOR,
            # The pid is read on every call so that a forked child differs.
            _encode(os.getpid(), _ALPHABET51, _PID_WIDTH),
            _encode(next(_sequence), _ALPHABET51, _SEQ_WIDTH),
        )
    )


def is_queue_id(text: str) -> bool:
    """True for a name that may be a queue id: ASCII letters and digits only,
    at most 64 of them.  Looser than what ``new_queue_id`` makes, so that
    queues seeded by hand or ids typed by an operator are accepted, but
    strict enough that it can never name a path outside a queue directory."""
    return 0 < len(text) <= MAX_QUEUE_ID_LENGTH and text.isascii() and text.isalnum()


def queue_id_time(queue_id: str) -> float | None:
    """The Unix time encoded in an id made by ``new_queue_id``, else None."""
    if not _LONG_ID.fullmatch(queue_id):
        return None
    seconds = _decode(queue_id[:_SEC_WIDTH], _ALPHABET)
    micros = _decode(queue_id[_SEC_WIDTH : _SEC_WIDTH + _USEC_WIDTH], _ALPHABET)
    if micros >= 1_000_000:
        return None
    return seconds + micros / 1_000_000
