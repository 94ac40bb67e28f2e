"""Envelope addresses: reverse-path and forward-path parsing (RFC 5321 4.1.2, RFC 6531).

Input: the argument text of ``MAIL FROM:`` or ``RCPT TO:`` (after the colon), as
decoded by the command parser.  Output: the mailbox without angle brackets ("" for
the null reverse-path ``<>``) and the ESMTP parameter text that follows it.  Errors
raise :class:`AddressError` carrying the SMTP reply to send.

Leniency follows Postfix with ``strict_rfc821_envelopes = no``: the angle brackets
may be missing, a space may follow the colon, a dot-string local part may hold
empty atoms (``a..b``, ``x.@y``: seen in the wild), and a mailbox may lack a domain
(``<postmaster>``, RFC 5321 4.1.1.3; policy decides about the others).  Source
routes are accepted and dropped (RFC 5321 4.1.1.3 and appendix C).

Also small helpers for policy code: :func:`domain_of`, :func:`local_part`,
:func:`is_fqdn`, :func:`is_address_literal`, :func:`is_valid_domain`.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from encodings import idna as _idna

from mta.reply import Reply

# RFC 5321 4.5.3.1.1-3: size limits, in octets.
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256
_MAX_LABEL = 63  # RFC 1035 2.3.4

# RFC 5322 3.2.3 atext, used by RFC 5321 Atom.
_ATEXT = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
)
# RFC 5321 4.1.2: sub-domain = Let-dig [Ldh-str].  Underscore is tolerated as
# Postfix does (it appears in real host names); policy may be stricter.
_LABEL_RE = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?$")
_IPV4_RE = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")


class AddressError(ValueError):
    """A path that cannot be accepted; ``reply`` is what the server answers."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.one_line())
        self.reply = reply


class _Role:
    """The replies for one kind of path: RFC 3463 X.1.7 for a sender, X.1.3 for
    a recipient."""

    def __init__(self, sender: bool) -> None:
        self.detail = "1.7" if sender else "1.3"
        self.noun = "sender" if sender else "recipient"

    def syntax(self) -> AddressError:
        return AddressError(Reply(501, self.detail, f"Bad {self.noun} address syntax"))

    def too_long(self, what: str) -> AddressError:
        return AddressError(Reply(553, self.detail, f"Error: {self.noun} {what} too long"))

    def not_ascii(self) -> AddressError:
        # RFC 6531 3.7.4.1 / RFC 5248: X.6.7, non-ASCII address without SMTPUTF8.
        return AddressError(
            Reply(553, "6.7", f"Error: non-ASCII {self.noun} address needs SMTPUTF8")
        )


def split_path_and_params(arg: str) -> tuple[str, str]:
    """Split ``<path> PARAM=x ...`` into the path text (brackets included) and
    the parameter text (leading white space removed).

    Quoted strings are honoured, so ``<"a >b"@x> SIZE=1`` splits after the
    closing ``>``.  Without a leading ``<`` the path ends at the first white
    space outside quotes.  Malformed text is split anyway; :func:`parse_path`
    rejects it.
    """
    arg = arg.lstrip(" \t")
    i = 0
    n = len(arg)
    in_quote = False
    bracketed = arg.startswith("<")
    closed = not bracketed
    while i < n:
        c = arg[i]
        if in_quote:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif c in " \t" and closed:
            break
        elif c == ">" and bracketed and not closed:
            closed = True
        i += 1
    return arg[:i], arg[i:].lstrip(" \t")


def parse_path(text: str, *, allow_null: bool, smtputf8: bool) -> tuple[str, str]:
    """Parse a reverse-path (``allow_null=True``, MAIL) or forward-path
    (``allow_null=False``, RCPT) and return ``(address, params_text)``.

    ``smtputf8`` permits non-ASCII (RFC 6531 3.3).  Raises :class:`AddressError`
    with 501 5.1.7/5.1.3 for bad syntax, 553 for paths over the RFC 5321
    4.5.3.1 limits and 553 5.6.7 for non-ASCII without SMTPUTF8.
    """
    role = _Role(sender=allow_null)
    path, rest = split_path_and_params(text)
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH:
        raise role.too_long("address")
    if path.startswith("<"):
        if not path.endswith(">") or len(path) < 2:
            raise role.syntax()
        inner = path[1:-1]
    else:
        inner = path  # Postfix tolerates a missing <> (strict_rfc821_envelopes = no)
    if inner == "":
        if allow_null and path == "<>":
            return "", rest
        raise role.syntax()
    if not inner.isascii():
        if any(0xD800 <= ord(c) <= 0xDFFF for c in inner):
            raise role.syntax()  # bytes that were not UTF-8
        if not smtputf8:
            raise role.not_ascii()
    mailbox = _strip_source_route(inner, role)
    return _check_mailbox(mailbox, role), rest


def _strip_source_route(inner: str, role: _Role) -> str:
    """Drop an RFC 5321 A-d-l (``@a,@b:``) in front of the mailbox after
    checking that each at-domain is a domain."""
    if not inner.startswith("@"):
        return inner
    i = 0
    while True:
        if i >= len(inner) or inner[i] != "@":
            raise role.syntax()
        j = i + 1
        if inner.startswith("[", j):
            end = inner.find("]", j)
            if end < 0:
                raise role.syntax()
            j = end + 1
        else:
            while j < len(inner) and inner[j] not in ",:":
                j += 1
        if not is_valid_domain(inner[i + 1 : j], smtputf8=True):
            raise role.syntax()
        if j >= len(inner):
            raise role.syntax()
        if inner[j] == ":":
            return inner[j + 1 :]
        i = j + 1  # after ","


def _check_mailbox(mailbox: str, role: _Role) -> str:
    """Validate ``local-part ["@" domain]`` and return it as written."""
    if mailbox.startswith('"'):
        end = _quoted_end(mailbox)
        if end < 0:
            raise role.syntax()
        local, after = mailbox[:end], mailbox[end:]
        if after and not after.startswith("@"):
            raise role.syntax()
        domain = after[1:] if after else None
    else:
        local, at, dom = mailbox.partition("@")
        domain = dom if at else None
        # Lenient dot-string: atoms may be empty (Postfix accepts a..b@x).
        if not local or any(c != "." and c not in _ATEXT and c.isascii() for c in local):
            raise role.syntax()
        if any(not c.isascii() and not c.isprintable() for c in local):
            raise role.syntax()
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise role.too_long("local part")
    if domain is not None:
        if len(domain.encode("utf-8")) > MAX_DOMAIN:
            raise role.too_long("domain")
        if not is_valid_domain(domain, smtputf8=True):
            raise role.syntax()
    return mailbox


def _quoted_end(text: str) -> int:
    """Index just past the RFC 5321 Quoted-string at the start of ``text``,
    or -1 when it is not one (qtextSMTP / quoted-pairSMTP, RFC 6531 adds
    UTF8-non-ascii to qtextSMTP)."""
    i = 1
    while i < len(text):
        c = text[i]
        if c == '"':
            return i + 1 if i > 1 else -1  # RFC 5321: a local part is not empty
        if c == "\\":
            if i + 1 >= len(text) or not " " <= text[i + 1] <= "~":
                return -1
            i += 2
            continue
        if c.isascii() and not " " <= c <= "~":
            return -1
        if not c.isascii() and not c.isprintable():
            return -1
        i += 1
    return -1


def is_address_literal(domain: str) -> bool:
    """True for a valid ``[1.2.3.4]`` or ``[IPv6:...]`` (RFC 5321 4.1.3)."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return False
    body = domain[1:-1]
    m = _IPV4_RE.match(body)
    if m:
        return all(int(g) <= 255 for g in m.groups())
    tag, colon, addr = body.partition(":")
    if not colon or tag.lower() != "ipv6" or "%" in addr or not addr.isascii():
        return False  # only the IPv6 tag is registered (RFC 5321 4.1.3)
    try:
        ipaddress.IPv6Address(addr)
    except ValueError:
        return False
    return True


def is_valid_domain(domain: str, *, smtputf8: bool = False) -> bool:
    """True for a syntactically valid domain name or address literal.

    Non-ASCII labels (U-labels, RFC 6531 3.3) are accepted only with
    ``smtputf8`` and only when they convert to an A-label.
    """
    if domain.startswith("["):
        return is_address_literal(domain)
    if not domain or len(domain.encode("utf-8", "surrogatepass")) > MAX_DOMAIN:
        return False
    for label in domain.split("."):
        if label.isascii():
            if len(label) > _MAX_LABEL or not _LABEL_RE.match(label):
                return False
        elif not smtputf8 or not _is_u_label(label):
            return False
    return True


def _is_u_label(label: str) -> bool:
    if not all(c.isalnum() or c == "-" or _is_mark(c) for c in label):
        return False
    try:
        a_label = _idna.ToASCII(label)
    except (UnicodeError, ValueError):
        return False
    return 0 < len(a_label) <= _MAX_LABEL


def _is_mark(c: str) -> bool:
    return unicodedata.category(c).startswith("M")


def is_fqdn(domain: str) -> bool:
    """True for a valid domain name with at least two labels (Postfix
    ``reject_non_fqdn_*`` meaning); address literals are not FQDNs."""
    if domain.startswith("["):
        return False
    name = domain[:-1] if domain.endswith(".") else domain
    return "." in name and is_valid_domain(name, smtputf8=True)


def domain_of(address: str) -> str:
    """The domain of ``address``, lower-cased; "" when it has none."""
    return _split(address)[1].lower()


def local_part(address: str) -> str:
    """The local part of ``address`` as written (quotes kept)."""
    return _split(address)[0]


def _split(address: str) -> tuple[str, str]:
    # The domain never holds "@", but a quoted local part may.
    if address.startswith('"'):
        end = _quoted_end(address)
        if end > 0:
            return address[:end], address[end + 1 :]
    local, at, domain = address.rpartition("@")
    if not at:
        return address, ""
    return local, domain
