"""Queue listings: Postfix mailq text and JSON, golden outputs; the sidecar scan."""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path

from mta.envelope import Envelope, RcptState, Recipient
from mta.queue.listing import format_json, format_mailq, scan
from mta.queue.store import QueueStore
from mta.reply import Reply

T0 = 1_692_274_346.0  # Thu Aug 17 12:12:26 2023 UTC
GREYLISTED = Reply.make(450, "4.2.0", "<bob@example.org>: Recipient address rejected: Greylisted")
TIMEOUT = Reply.make(421, "4.4.2", "mx.example.net[192.0.2.7]:25: conversation timed out")
LONG = Reply.make(
    451,
    "4.3.0",
    "host mx.example.com[198.51.100.1] said: temporary failure while talking to the "
    "content filter, please try again later",
)


def active() -> tuple[str, Envelope]:
    return "active", Envelope(
        queue_id="4RkXJk3pLyzAB1C2D3",
        sender="alice@example.com",
        recipients=[Recipient("bob@example.org"), Recipient("carol@example.org")],
        arrival_time=T0,
        size=1386,
    )


def deferred() -> tuple[str, Envelope]:
    return "deferred", Envelope(
        queue_id="4RkXLm0QqHzAB1C2D4",
        sender="",
        recipients=[
            Recipient("done@example.net", RcptState.DELIVERED, Reply(250, "0.0", "Ok")),
            Recipient("d1@example.net", RcptState.DEFERRED, TIMEOUT),
            Recipient("fresh@example.net"),
            Recipient("d2@example.net", RcptState.DEFERRED, TIMEOUT),
            Recipient("bob@example.org", RcptState.DEFERRED, GREYLISTED),
            Recipient("gone@example.net", RcptState.BOUNCED, Reply(550, "1.1", "no")),
        ],
        arrival_time=T0 + 86400 * 30 + 3600,
        size=20480,
    )


def held() -> tuple[str, Envelope]:
    return "hold", Envelope(
        queue_id="3F1A42E3C2",
        sender="bulk@example.com",
        recipients=[Recipient("x@example.com", RcptState.DEFERRED, LONG)],
        arrival_time=T0 - 86400 * 200,
        size=312,
    )


GOLDEN_TEXT = """\
-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------
4RkXJk3pLyzAB1C2D3*    1386 Thu Aug 17 12:12:26  alice@example.com
                                         bob@example.org
                                         carol@example.org

4RkXLm0QqHzAB1C2D4    20480 Sat Sep 16 13:12:26  MAILER-DAEMON
              (421 4.4.2 mx.example.net[192.0.2.7]:25: conversation timed out)
                                         d1@example.net
                                         d2@example.net
         (450 4.2.0 <bob@example.org>: Recipient address rejected: Greylisted)
                                         bob@example.org
                                         fresh@example.net

3F1A42E3C2!     312 Sun Jan 29 12:12:26  bulk@example.com
(451 4.3.0 host mx.example.com[198.51.100.1] said: temporary failure while talking to the \
content filter, please try again later)
                                         x@example.com

-- 21 Kbytes in 3 Requests.
"""


def test_mailq_golden_text() -> None:
    """Active (*), deferred with reasons (one line per run of recipients with
    the same reason, right-aligned to column 78, long ones from column 0),
    null sender as MAILER-DAEMON, held (!), only pending recipients, the
    Kbytes/Requests trailer."""
    assert format_mailq([active(), deferred(), held()], tz=UTC) == GOLDEN_TEXT


def test_mailq_columns_match_postfix() -> None:
    """Short reasons end at column 78; recipients start at column 41."""
    lines = format_mailq([deferred()], tz=UTC).splitlines()
    reason = lines[2]
    assert reason.endswith(")") and len(reason) == 78
    assert lines[3].index("d1@") == 41


def test_empty_queue() -> None:
    """Postfix's words for an empty queue, and an empty JSON array."""
    assert format_mailq([]) == "Mail queue is empty\n"
    assert format_json([]) == "[]\n"


def test_one_request_is_singular() -> None:
    """Postfix says "1 Request." (and rounds Kbytes down)."""
    text = format_mailq([active()], tz=UTC)
    assert text.endswith("\n\n-- 1 Kbytes in 1 Request.\n")


def test_day_of_month_is_space_padded_and_english() -> None:
    """asctime form: "Mon Jan  1", whatever the locale."""
    env = active()[1]
    env.arrival_time = 1_704_067_200.0  # 2024-01-01 00:00:00 UTC
    line = format_mailq([("incoming", env)], tz=UTC).splitlines()[1]
    assert line == "4RkXJk3pLyzAB1C2D3     1386 Mon Jan  1 00:00:00  alice@example.com"


def test_control_characters_are_not_printed() -> None:
    """A hostile address cannot move the operator's cursor."""
    env = active()[1]
    env.sender = "evil\x1b[2J@example.com"
    assert "evil?[2J@example.com" in format_mailq([("incoming", env)], tz=UTC)


GOLDEN_JSON = [
    {
        "id": "4RkXJk3pLyzAB1C2D3",
        "queue": "active",
        "size": 1386,
        "arrival_time": "2023-08-17T12:12:26Z",
        "sender": "alice@example.com",
        "recipients": [
            {"address": "bob@example.org", "state": "pending", "reason": ""},
            {"address": "carol@example.org", "state": "pending", "reason": ""},
        ],
    },
    {
        "id": "4RkXLm0QqHzAB1C2D4",
        "queue": "deferred",
        "size": 20480,
        "arrival_time": "2023-09-16T13:12:26Z",
        "sender": "MAILER-DAEMON",
        "recipients": [
            {"address": "done@example.net", "state": "delivered", "reason": "250 2.0.0 Ok"},
            {"address": "d1@example.net", "state": "deferred", "reason": TIMEOUT.one_line()},
            {"address": "fresh@example.net", "state": "pending", "reason": ""},
            {"address": "d2@example.net", "state": "deferred", "reason": TIMEOUT.one_line()},
            {"address": "bob@example.org", "state": "deferred", "reason": GREYLISTED.one_line()},
            {"address": "gone@example.net", "state": "bounced", "reason": "550 5.1.1 no"},
        ],
    },
    {
        "id": "3F1A42E3C2",
        "queue": "hold",
        "size": 312,
        "arrival_time": "2023-01-29T12:12:26Z",
        "sender": "bulk@example.com",
        "recipients": [
            {"address": "x@example.com", "state": "deferred", "reason": LONG.one_line()},
        ],
    },
]


def test_json_golden() -> None:
    """One JSON array; every recipient with its state and last reply; RFC 3339
    UTC times; one message per line."""
    text = format_json([active(), deferred(), held()])
    assert json.loads(text) == GOLDEN_JSON
    lines = text.splitlines()
    assert lines[0] == "[" and lines[-1] == "]" and len(lines) == 5
    assert lines[1].startswith('{"id": "4RkXJk3pLyzAB1C2D3", "queue": "active", "size": 1386,')


def _seed(root: Path, state: str, env: Envelope, data: bytes = b"x") -> None:
    (root / state / "cur" / env.queue_id).write_bytes(data)
    (root / state / "envelope" / f"{env.queue_id}.json").write_bytes(env.to_json())


def test_scan_reads_sidecars_in_postfix_queue_order(tmp_path: Path) -> None:
    """scan() yields active, incoming, deferred, hold (Postfix's order), ids
    sorted within each, skips corrupt and unreadable sidecars, and takes the
    size from the message file when the sidecar has none."""
    QueueStore(tmp_path).create_layout()
    _seed(tmp_path, "hold", held()[1])
    _seed(tmp_path, "deferred", deferred()[1])
    _seed(tmp_path, "active", active()[1])
    for qid in ("B2", "A1"):
        env = Envelope(qid, "s@example.com", [Recipient("r@example.com")], T0)
        _seed(tmp_path, "incoming", env, b"y" * 77)
    (tmp_path / "deferred/envelope/BROKEN.json").write_bytes(b"{")
    _seed(tmp_path, "corrupt", active()[1])
    found = [(s, e.queue_id, e.size) for s, e in scan(tmp_path)]
    assert found == [
        ("active", "4RkXJk3pLyzAB1C2D3", 1386),
        ("incoming", "A1", 77),
        ("incoming", "B2", 77),
        ("deferred", "4RkXLm0QqHzAB1C2D4", 20480),
        ("hold", "3F1A42E3C2", 312),
    ]


def test_scan_of_a_missing_queue_is_empty(tmp_path: Path) -> None:
    """No queue directory yet: an empty listing, not an error."""
    assert list(scan(tmp_path / "nowhere")) == []


def test_listing_reads_only_the_sidecars(tmp_path: Path) -> None:
    """A large queue is listed from the envelope sidecars alone (no message
    file is opened: here there are none), so mailq stays fast on 100,000
    messages; the timing itself is a benchmark (bench/), not a test."""
    QueueStore(tmp_path).create_layout()
    template = deferred()[1]
    envelope_dir = tmp_path / "deferred/envelope"
    for i in range(2_000):
        template.queue_id = f"Q{i:06d}"
        (envelope_dir / f"Q{i:06d}.json").write_bytes(template.to_json())
    text = format_mailq(scan(tmp_path))
    assert text.endswith("in 2000 Requests.\n")
