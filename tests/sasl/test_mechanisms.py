"""Tests for mta.sasl.mechanisms (PLAIN, LOGIN) and the security options."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mta.sasl import Challenge, Failure, SecurityOptions, acceptable
from mta.sasl.mechanisms import Credentials, Mechanism


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_plain_with_and_without_initial_response() -> None:
    """PLAIN: initial response or an empty 334 first (RFC 4616, RFC 4954)."""
    m = Mechanism("PLAIN")
    assert m.feed(b64(b"\0alice\0pw")) == Credentials("", "alice", "pw")
    m = Mechanism("PLAIN")
    assert m.feed(None) == Challenge("")
    assert m.feed(b64(b"admin\0alice\0pw")) == Credentials("admin", "alice", "pw")


@pytest.mark.parametrize(
    "response", [b64(b"alice\0pw"), b64(b"\0\0pw"), "%%%", b64(b"\xff\0a\0b"), b64(b"a\0b\0c\0d")]
)
def test_plain_malformed(response: str) -> None:
    """Wrong field count, empty user, bad base64 or UTF-8: a failure."""
    assert isinstance(Mechanism("PLAIN").feed(response), Failure)


def test_login_dialogue() -> None:
    """LOGIN: Username:, Password:, then the credentials; an initial
    response is the user name (as Outlook sends it)."""
    m = Mechanism("LOGIN")
    assert m.feed(None) == Challenge(b64(b"Username:"))
    assert m.feed(b64(b"alice")) == Challenge(b64(b"Password:"))
    assert m.feed(b64(b"pw")) == Credentials("", "alice", "pw")
    m = Mechanism("LOGIN")
    assert m.feed(b64(b"alice")) == Challenge(b64(b"Password:"))
    assert isinstance(Mechanism("LOGIN").feed(b64(b"")), Failure)
    with pytest.raises(ValueError):
        Mechanism("CRAM-MD5")


@given(
    st.lists(st.one_of(st.none(), st.text(max_size=40)), max_size=4),
    st.sampled_from(["PLAIN", "LOGIN"]),
)
def test_any_responses_give_a_step(responses: list[str | None], name: str) -> None:
    """Whatever the client sends, the mechanism answers with a step."""
    m = Mechanism(name)
    for r in responses:
        assert isinstance(m.feed(r), Challenge | Credentials | Failure)


def test_security_options() -> None:
    """noanonymous/noplaintext refuse, mutual_auth requires; private is never offered."""
    assert acceptable({"plaintext"}, ("noanonymous",))
    assert not acceptable({"plaintext"}, ("noplaintext",))
    assert not acceptable({"anonymous"}, ("noanonymous",))
    assert not acceptable({"plaintext"}, ("mutual_auth",))
    assert acceptable({"mutual-auth", "dictionary"}, ("mutual_auth",))
    assert not acceptable({"private"}, ())
    opts = SecurityOptions(plain=("noplaintext",), tls=("noanonymous",))
    assert opts.select(False) == ("noplaintext",) and opts.select(True) == ("noanonymous",)
