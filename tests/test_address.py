"""Tests for mta.address: envelope path parsing (RFC 5321 4.1.2, RFC 6531)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mta.address import (
    AddressError,
    domain_of,
    is_address_literal,
    is_fqdn,
    is_valid_domain,
    local_part,
    parse_path,
    split_path_and_params,
)

VALID = [
    # (argument text, allow_null, expected address, expected rest)
    ("<user@example.com>", False, "user@example.com", ""),
    ("<user@example.com> SIZE=10 BODY=8BITMIME", True, "user@example.com", "SIZE=10 BODY=8BITMIME"),
    ("<>", True, "", ""),
    ("<> SIZE=1", True, "", "SIZE=1"),
    ("user@example.com", False, "user@example.com", ""),  # no <>: Postfix tolerates it
    ("user@example.com NOTIFY=NEVER", False, "user@example.com", "NOTIFY=NEVER"),
    ("  <a@b.c>", False, "a@b.c", ""),  # "MAIL FROM: <a@b.c>"
    ("<Postmaster>", False, "Postmaster", ""),  # RFC 5321 4.1.1.3
    ("<@relay.example,@[10.0.0.1]:user@example.com>", False, "user@example.com", ""),
    ("<@[IPv6:2001:db8::1]:u@x.org>", False, "u@x.org", ""),
    ('<"a b"@example.com>', False, '"a b"@example.com', ""),
    ('<"odd > char"@example.com> X=1', False, '"odd > char"@example.com', "X=1"),
    ('<"q\\"uote"@x.org>', False, '"q\\"uote"@x.org', ""),
    ("<user@[192.0.2.1]>", False, "user@[192.0.2.1]", ""),
    ("<user@[IPv6:::1]>", False, "user@[IPv6:::1]", ""),
    ("<user@[ipv6:2001:db8::ffff:192.0.2.1]>", False, "user@[ipv6:2001:db8::ffff:192.0.2.1]", ""),
    ("<first.last+tag@sub.example.co.uk>", False, "first.last+tag@sub.example.co.uk", ""),
    ("<a..b@x.org>", False, "a..b@x.org", ""),  # lenient dot-string, as Postfix
    ("<x_y@host_name.example>", False, "x_y@host_name.example", ""),
]


@pytest.mark.parametrize(("text", "allow_null", "address", "rest"), VALID)
def test_valid_paths(text: str, allow_null: bool, address: str, rest: str) -> None:
    """Valid paths give the mailbox without brackets or source route, and the
    parameter text."""
    assert parse_path(text, allow_null=allow_null, smtputf8=False) == (address, rest)


INVALID = [
    # (argument text, allow_null, code, status)
    ("<>", False, 501, "5.1.3"),  # null forward-path
    ("<user@example.com", True, 501, "5.1.7"),
    ("<user@example.com", False, 501, "5.1.3"),
    ("<user@exa mple.com>", False, 501, "5.1.3"),
    ("<user@-bad.example>", False, 501, "5.1.3"),
    ("<user@example..com>", False, 501, "5.1.3"),
    ("<user@example.com.>", False, 501, "5.1.3"),
    ("<user@>", False, 501, "5.1.3"),
    ("<@example.com>", False, 501, "5.1.3"),
    ("<us(er@example.com>", False, 501, "5.1.3"),
    ("<a@b@c>", False, 501, "5.1.3"),
    ("<user@example.com>junk", False, 501, "5.1.3"),
    ('<"unterminated@x.org>', False, 501, "5.1.3"),
    ('<""@x.org>', False, 501, "5.1.3"),
    ("<user@[300.1.1.1]>", False, 501, "5.1.3"),
    ("<user@[1.2.3]>", False, 501, "5.1.3"),
    ("<user@[IPv6:zz::1]>", False, 501, "5.1.3"),
    ("<user@[IPv6:fe80::1%eth0]>", False, 501, "5.1.3"),
    ("<user@[foo:bar]>", False, 501, "5.1.3"),  # unregistered tag
    ("<@a.example:>", False, 501, "5.1.3"),
    ("<@a.example,user@x.org>", False, 501, "5.1.3"),
    ("<@-bad:u@x.org>", False, 501, "5.1.3"),
    ("<" + "a" * 65 + "@x.org>", False, 553, "5.1.3"),
    ("<a@" + "b" * 64 + ".org>", False, 501, "5.1.3"),  # label over 63
    ("<a@" + ".".join(["b" * 50] * 5) + ">", True, 553, "5.1.7"),  # domain over 255
    ("<" + "a" * 60 + "@" + ".".join(["b" * 60] * 4) + ">", True, 553, "5.1.7"),  # path
    ("<jöran@example.com>", True, 553, "5.6.7"),  # non-ASCII without SMTPUTF8
    ("<user@bücher.example>", False, 553, "5.6.7"),
    ("<a\udcff@x.org>", False, 501, "5.1.3"),  # bytes that were not UTF-8
]


@pytest.mark.parametrize(("text", "allow_null", "code", "status"), INVALID)
def test_invalid_paths(text: str, allow_null: bool, code: int, status: str) -> None:
    """Bad paths raise AddressError with the RFC 3463 status for the role."""
    with pytest.raises(AddressError) as info:
        parse_path(text, allow_null=allow_null, smtputf8=False)
    assert (info.value.reply.code, info.value.reply.status) == (code, status)


def test_smtputf8_allows_non_ascii() -> None:
    """With SMTPUTF8 (RFC 6531 3.3) UTF-8 local parts and U-label domains pass."""
    assert parse_path("<jöran@bücher.example>", allow_null=True, smtputf8=True) == (
        "jöran@bücher.example",
        "",
    )
    assert parse_path('<"ö ö"@x.org>', allow_null=False, smtputf8=True)[0] == '"ö ö"@x.org'


def test_smtputf8_still_rejects_bad_labels() -> None:
    """A non-ASCII label must still be a usable U-label."""
    with pytest.raises(AddressError):
        parse_path("<a@bü cher.example>", allow_null=False, smtputf8=True)
    with pytest.raises(AddressError):
        parse_path("<a@☃☃.example\u200b>", allow_null=False, smtputf8=True)


def test_length_limits_are_inclusive() -> None:
    """64-octet local parts and 255-octet domains are allowed (RFC 5321 4.5.3.1)."""
    local = "a" * 64
    assert parse_path(f"<{local}@x.org>", allow_null=False, smtputf8=False)[0] == f"{local}@x.org"
    domain = ".".join(["b" * 63] * 3 + ["c" * 63])
    assert len(domain) == 255
    assert is_valid_domain(domain)
    assert not is_valid_domain(domain + "c")
    with pytest.raises(AddressError) as info:  # but the path is then over 256
        parse_path(f"<a@{domain}>", allow_null=False, smtputf8=False)
    assert info.value.reply.code == 553


def test_split_path_and_params() -> None:
    """The split honours quotes and brackets and strips leading white space."""
    assert split_path_and_params('<"a b>"@x> SIZE=1  RET=FULL') == (
        '<"a b>"@x>',
        "SIZE=1  RET=FULL",
    )
    assert split_path_and_params('"a b"@x BODY=7BIT') == ('"a b"@x', "BODY=7BIT")
    assert split_path_and_params("  <a@b>") == ("<a@b>", "")
    assert split_path_and_params("<a@b") == ("<a@b", "")
    assert split_path_and_params("<a b>") == ("<a b>", "")


def test_helpers() -> None:
    """domain_of lower-cases; local_part keeps quotes; FQDN and literal checks."""
    assert domain_of("User@Example.COM") == "example.com"
    assert domain_of("postmaster") == ""
    assert domain_of('"a@b"@X.org') == "x.org"
    assert domain_of('"a@b"') == ""
    assert local_part('"a@b"@x.org') == '"a@b"'
    assert local_part("user@x.org") == "user"
    assert local_part("postmaster") == "postmaster"
    assert is_fqdn("mail.example.com")
    assert is_fqdn("mail.example.com.")
    assert not is_fqdn("localhost")
    assert not is_fqdn("[192.0.2.1]")
    assert not is_fqdn("bad..name")
    assert is_address_literal("[192.0.2.1]")
    assert is_address_literal("[IPv6:::1]")
    assert not is_address_literal("192.0.2.1")
    assert not is_address_literal("[192.0.2.256]")
    assert is_valid_domain("[IPv6:::1]")
    assert not is_valid_domain("bücher.example")
    assert is_valid_domain("bücher.example", smtputf8=True)


# -- properties ---------------------------------------------------------------

_ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
_atom = st.text(alphabet=_ATEXT, min_size=1, max_size=10)
_dot_string = st.lists(_atom, min_size=1, max_size=4).map(".".join)
_qcontent = st.one_of(
    st.sampled_from([chr(c) for c in range(32, 127) if chr(c) not in '"\\']),
    st.sampled_from([chr(c) for c in range(32, 127)]).map(lambda c: "\\" + c),
)
_quoted = st.lists(_qcontent, min_size=1, max_size=12).map(lambda xs: '"' + "".join(xs) + '"')
_label = st.from_regex(r"\A[A-Za-z0-9](?:[A-Za-z0-9-]{0,10}[A-Za-z0-9])?\Z")
_name = st.lists(_label, min_size=1, max_size=4).map(".".join)
_ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: "[" + ".".join(map(str, t)) + "]")
_ipv6 = st.ip_addresses(v=6).map(lambda a: f"[IPv6:{a}]")
_domain = st.one_of(_name, _ipv4, _ipv6)
_mailbox = st.builds(lambda lp, d: f"{lp}@{d}", st.one_of(_dot_string, _quoted), _domain)


@given(_mailbox, st.lists(_domain, max_size=3), st.sampled_from(["", " SIZE=1", " A=b C"]))
def test_round_trip(mailbox: str, route: list[str], params: str) -> None:
    """A generated valid mailbox, with any source route and parameters, parses
    back to itself (or to the 553 length error when it is too long)."""
    prefix = ",".join("@" + d for d in route) + (":" if route else "")
    text = f"<{prefix}{mailbox}>{params}"
    try:
        address, rest = parse_path(text, allow_null=False, smtputf8=False)
    except AddressError as e:
        assert e.reply.code == 553
        return
    assert address == mailbox
    assert rest == params.strip()
    assert domain_of(address) == mailbox.rpartition("@")[2].lower()


@given(st.text(max_size=80), st.booleans(), st.booleans())
def test_any_text_raises_only_address_error(text: str, allow_null: bool, utf8: bool) -> None:
    """Whatever the text, parse_path returns or raises AddressError."""
    try:
        address, rest = parse_path(text, allow_null=allow_null, smtputf8=utf8)
    except AddressError as e:
        assert e.reply.code in (501, 553)
    else:
        assert isinstance(address, str) and isinstance(rest, str)


@given(st.text(max_size=40))
def test_helpers_never_fail(text: str) -> None:
    """The helpers accept any text."""
    domain_of(text)
    local_part(text)
    is_fqdn(text)
    is_valid_domain(text, smtputf8=True)
