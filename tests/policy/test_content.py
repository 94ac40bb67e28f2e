"""header_checks, mime_header_checks, nested_header_checks and body_checks
as a streaming filter: which table sees what, each action, and that chunking
never changes the outcome."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mta.policy.content import ContentChecks, ContentFilter
from mta.tables.regexp import RegexpTable


def table(text: str, name: str = "regexp:t") -> RegexpTable:
    return RegexpTable.from_bytes(name, text.encode(), file=name, pcre=False)


def run(checks: ContentChecks, message: bytes, size: int | None = None) -> tuple[bytes, object]:
    f = ContentFilter(checks)
    if size is None:
        out = f.feed(message)
    else:
        out = b"".join(f.feed(message[i : i + size]) for i in range(0, len(message), size))
    return out + f.finish(), f.result


MESSAGE = (
    b"Received: from x\r\n\tby y\r\n"
    b"Subject: make money fast\r\n"
    b"X-Old: 1\r\n"
    b"X-Drop: yes\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="BB"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--BB\r\n"
    b"Content-Type: text/plain\r\n"
    b"X-Part: p1\r\n"
    b"\r\n"
    b"hello secret\r\n"
    b"--BB\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Subject: inner\r\n"
    b"\r\n"
    b"inner body\r\n"
    b"--BB--\r\n"
    b"epilogue\r\n"
)


def test_ciphermail_example_rejects() -> None:
    """/^Subject: make money fast/ REJECT spam detected: 550 5.7.1 and the
    message is not queued."""
    checks = ContentChecks(
        header_checks=(table("/^Subject: make money fast/ REJECT spam detected\n"),)
    )
    _out, result = run(checks, MESSAGE)
    assert result.action == "reject"  # type: ignore[attr-defined]
    assert result.reply.one_line() == "550 5.7.1 spam detected"  # type: ignore[attr-defined]
    assert result.notes[0].what == "header Subject: make money fast"  # type: ignore[attr-defined]


def test_which_table_sees_which_header() -> None:
    """Primary non-MIME headers → header_checks; MIME headers and part
    headers → mime_header_checks; attached message → nested_header_checks;
    body lines (and boundaries) → body_checks."""
    seen: dict[str, list[str]] = {"h": [], "m": [], "n": [], "b": []}

    class Spy:
        def __init__(self, name: str) -> None:
            self.spec = f"spy:{name}"
            self.name = name

        def lookup(self, key: str) -> None:
            seen[self.name].append(key)

    checks = ContentChecks(
        header_checks=(Spy("h"),),  # type: ignore[arg-type]
        mime_header_checks=(Spy("m"),),  # type: ignore[arg-type]
        nested_header_checks=(Spy("n"),),  # type: ignore[arg-type]
        body_checks=(Spy("b"),),  # type: ignore[arg-type]
    )
    run(checks, MESSAGE)
    assert seen["h"] == [
        "Received: from x\n\tby y",
        "Subject: make money fast",
        "X-Old: 1",
        "X-Drop: yes",
    ]
    assert seen["m"] == [
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="BB"',
        "Content-Type: text/plain",
        "X-Part: p1",
        "Content-Type: message/rfc822",
    ]
    assert seen["n"] == ["Subject: inner"]
    assert seen["b"] == [
        "preamble",
        "--BB",
        "hello secret",
        "--BB",
        "inner body",
        "--BB--",
        "epilogue",
    ]


def test_edit_actions() -> None:
    """IGNORE deletes, REPLACE substitutes, PREPEND inserts; body lines too."""
    checks = ContentChecks(
        header_checks=(
            table(
                "/^X-Drop:/ IGNORE\n/^X-Old: (.*)/ REPLACE X-New: $1\n"
                "/^Subject:/ PREPEND X-Seen: yes\n"
            ),
        ),
        body_checks=(table("/^hello (.*)/ REPLACE hi $1\n"),),
    )
    out, result = run(checks, MESSAGE)
    assert b"X-Drop" not in out
    assert b"X-New: 1\r\n" in out and b"X-Old" not in out
    assert b"X-Seen: yes\r\nSubject: make money fast\r\n" in out
    assert b"hi secret\r\n" in out
    assert result.action == "accept"  # type: ignore[attr-defined]


def test_message_actions() -> None:
    """HOLD, REDIRECT, FILTER, BCC, WARN are recorded; DISCARD ends it.
    (MIME-Version goes to mime_header_checks, which defaults to the same.)"""
    headers = table(
        "/^Subject:/ HOLD look at it\n/^X-Old:/ REDIRECT boss@example.org\n"
        "/^X-Drop:/ FILTER smtp:[127.0.0.1]:10025\n/^Received:/ WARN seen\n"
        "/^MIME-Version:/ BCC copy@example.org\n"
    )
    checks = ContentChecks(header_checks=(headers,), mime_header_checks=(headers,))
    _, result = run(checks, MESSAGE)
    r = result
    assert r.hold == "look at it"  # type: ignore[attr-defined]
    assert r.redirect == "boss@example.org"  # type: ignore[attr-defined]
    assert r.filter == "smtp:[127.0.0.1]:10025"  # type: ignore[attr-defined]
    assert r.bcc == ["copy@example.org"]  # type: ignore[attr-defined]
    assert next(n.whatsup for n in r.notes) == "warning"  # type: ignore[attr-defined]
    discard = ContentChecks(body_checks=(table("/secret/ DISCARD\n"),))
    _out, result = run(discard, MESSAGE)
    assert result.action == "discard"  # type: ignore[attr-defined]


def test_body_checks_size_limit() -> None:
    """Only the first body_checks_size_limit octets of each part are inspected."""
    checks = ContentChecks(body_checks=(table("/late/ REJECT\n"),), body_checks_size_limit=20)
    message = b"Subject: x\r\n\r\n" + b"a" * 30 + b"\r\nlate\r\n"
    assert run(checks, message)[1].action == "accept"  # type: ignore[attr-defined]
    assert run(ContentChecks(body_checks=checks.body_checks), message)[1].action == "reject"  # type: ignore[attr-defined]


def test_untouched_message_passes_byte_for_byte() -> None:
    """Without a matching rule the queued bytes are the received bytes."""
    checks = ContentChecks(
        header_checks=(table("/^nomatch/ REJECT\n"),), body_checks=(table("/^nomatch/ REJECT\n"),)
    )
    assert run(checks, MESSAGE)[0] == MESSAGE
    assert run(checks, MESSAGE + b"no newline at end")[0] == MESSAGE + b"no newline at end"


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=1, max_value=40))
def test_chunking_does_not_change_the_outcome(size: int) -> None:
    """Fed in pieces of any size, the output and the decision are the same."""
    checks = ContentChecks(
        header_checks=(table("/^X-Drop:/ IGNORE\n/^X-Old: (.*)/ REPLACE X-New: $1\n"),),
        mime_header_checks=(table("/^X-Part:/ PREPEND X-Before: part\n"),),
        body_checks=(table("/^hello/ WARN hi\n/^inner/ HOLD inner\n"),),
    )
    whole_out, whole = run(checks, MESSAGE)
    out, result = run(checks, MESSAGE, size)
    assert out == whole_out
    assert result.notes == whole.notes  # type: ignore[attr-defined]
    assert result.hold == whole.hold == "inner"  # type: ignore[attr-defined]
