"""SMTP command lines: one line becomes one typed command.

Input: a command line as bytes, without its line end (RFC 5321 2.3.8).  Output: a
frozen dataclass per command (``Hello``, ``Mail``, ``Rcpt``, ...), or
:class:`CommandError` carrying the 500/501 reply for a line that is not a valid
command.  Only syntax is checked here; whether a command is allowed now, and
which ESMTP parameters are supported, is the server session's business.

Bytes that are not UTF-8 are kept as surrogate escapes (``surrogateescape``) so
that nothing is lost; encode with the same handler to get them back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from mta.address import AddressError, parse_path, split_path_and_params
from mta.reply import Reply


class CommandError(ValueError):
    """A line that is not a valid command; ``reply`` is the answer to send."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.one_line())
        self.reply = reply


@dataclass(frozen=True)
class Hello:
    """HELO, EHLO or LHLO (RFC 5321 4.1.1.1, RFC 2033 4.1).  ``name`` is the
    argument as sent; its syntax is left to smtpd_helo_restrictions, as in
    Postfix, because real clients send all sorts of names."""

    verb: str
    name: str


@dataclass(frozen=True)
class Mail:
    """MAIL FROM:<address> [params] (RFC 5321 4.1.1.2); address "" is <>."""

    verb: ClassVar[str] = "MAIL"
    address: str
    params: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Rcpt:
    """RCPT TO:<address> [params] (RFC 5321 4.1.1.3)."""

    verb: ClassVar[str] = "RCPT"
    address: str
    params: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Data:
    verb: ClassVar[str] = "DATA"


@dataclass(frozen=True)
class Bdat:
    """BDAT size [LAST] (RFC 3030 2)."""

    verb: ClassVar[str] = "BDAT"
    size: int
    last: bool


@dataclass(frozen=True)
class Rset:
    verb: ClassVar[str] = "RSET"


@dataclass(frozen=True)
class Noop:
    verb: ClassVar[str] = "NOOP"
    text: str = ""


@dataclass(frozen=True)
class Quit:
    verb: ClassVar[str] = "QUIT"


@dataclass(frozen=True)
class Vrfy:
    verb: ClassVar[str] = "VRFY"
    argument: str


@dataclass(frozen=True)
class Expn:
    verb: ClassVar[str] = "EXPN"
    argument: str


@dataclass(frozen=True)
class Help:
    verb: ClassVar[str] = "HELP"
    topic: str = ""


@dataclass(frozen=True)
class StartTls:
    """STARTTLS (RFC 3207 4)."""

    verb: ClassVar[str] = "STARTTLS"


@dataclass(frozen=True)
class Auth:
    """AUTH mechanism [initial-response] (RFC 4954 4); the mechanism is
    upper-cased, the response kept as sent ("=" means an empty one)."""

    verb: ClassVar[str] = "AUTH"
    mechanism: str
    initial_response: str | None = None


Command = (
    Hello | Mail | Rcpt | Data | Bdat | Rset | Noop | Quit | Vrfy | Expn | Help | StartTls | Auth
)

# RFC 5321 4.1.2: esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
_KEYWORD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
# RFC 4422 3.1: sasl-mech = 1*20 (UPPER-ALPHA / DIGIT / "-" / "_")
_MECH_RE = re.compile(r"^[A-Za-z0-9_-]{1,20}$")
_DIGITS_RE = re.compile(r"^[0-9]{1,20}$")
# C0 controls other than TAB, and DEL, are never valid in a command line.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

# Words are separated by SP (RFC 5321 4.1.1); TAB is tolerated like Postfix.
_WORD_SEP = re.compile(r"[ \t]+")
_WORD_SEP_BYTES = re.compile(rb"[ \t]+")

_NO_ARGS: dict[str, type[Data | Rset | StartTls]] = {
    "DATA": Data,
    "RSET": Rset,
    "STARTTLS": StartTls,
}


def syntax(text: str) -> CommandError:
    """501 5.5.4 (RFC 3463: invalid command arguments)."""
    return CommandError(Reply(501, "5.4", text))


def parse_command(line: bytes, *, smtputf8: bool = False) -> Command:
    """Parse one command line (no CRLF).

    ``smtputf8`` tells whether the current transaction was started with the
    SMTPUTF8 parameter, which allows non-ASCII in RCPT addresses (RFC 6531
    3.4); for MAIL the command's own SMTPUTF8 parameter decides.
    """
    text = line.decode("utf-8", "surrogateescape")
    if _CONTROL_RE.search(text):
        raise CommandError(Reply(500, "5.2", "Error: bad syntax (control character)"))
    text = text.strip(" \t")  # Postfix tolerates stray white space around a command
    if not text:
        raise CommandError(Reply(500, "5.2", "Error: bad syntax"))
    verb, _, arg = _WORD_SEP.sub(" ", text, count=1).partition(" ")
    verb = verb.upper()
    if verb in ("HELO", "EHLO", "LHLO"):
        if not arg:
            raise syntax(f"Syntax: {verb} hostname")
        return Hello(verb, arg)
    if verb == "MAIL":
        return _parse_mail(arg)
    if verb == "RCPT":
        return _parse_rcpt(arg, smtputf8)
    if verb in _NO_ARGS:
        if arg:
            raise syntax(f"Syntax: {verb}")
        return _NO_ARGS[verb]()
    if verb == "QUIT":
        return Quit()  # arguments ignored: a client must always be able to leave
    if verb == "NOOP":
        return Noop(arg)
    if verb == "HELP":
        return Help(arg)
    if verb in ("VRFY", "EXPN"):
        if not arg:
            raise syntax(f"Syntax: {verb} address")
        return Vrfy(arg) if verb == "VRFY" else Expn(arg)
    if verb == "BDAT":
        return _parse_bdat(arg)
    if verb == "AUTH":
        return _parse_auth(arg)
    raise CommandError(Reply(500, "5.2", "Error: command not recognized"))


def _split_prefix(arg: str, prefix: str, usage: str) -> str:
    """Strip ``FROM:``/``TO:`` (case-insensitive); a space may follow the colon
    (Postfix tolerates ``MAIL FROM: <a@b>``)."""
    if arg[: len(prefix)].upper() != prefix:
        raise syntax(usage)
    rest = arg[len(prefix) :].lstrip(" \t")
    if not rest:
        raise syntax(usage)
    return rest


def _parse_mail(arg: str) -> Mail:
    usage = "Syntax: MAIL FROM:<address>"
    rest = _split_prefix(arg, "FROM:", usage)
    # SMTPUTF8 among the parameters allows a non-ASCII reverse-path
    # (RFC 6531 3.4), so the parameters are read first.
    params = parse_params(split_path_and_params(rest)[1])
    try:
        address, _ = parse_path(rest, allow_null=True, smtputf8="SMTPUTF8" in params)
    except AddressError as e:
        raise CommandError(e.reply)
    return Mail(address, params)


def _parse_rcpt(arg: str, smtputf8: bool) -> Rcpt:
    rest = _split_prefix(arg, "TO:", "Syntax: RCPT TO:<address>")
    try:
        address, param_text = parse_path(rest, allow_null=False, smtputf8=smtputf8)
    except AddressError as e:
        raise CommandError(e.reply)
    return Rcpt(address, parse_params(param_text))


def parse_params(text: str) -> dict[str, str | None]:
    """ESMTP parameters ``KEYWORD[=value] ...`` (RFC 5321 4.1.2 esmtp-param).

    Keywords are upper-cased; values are kept raw (xtext is not decoded).  A
    value may hold "=" (Postfix splits at the first one).  Repeated keywords
    and malformed parameters raise 501 5.5.4.
    """
    params: dict[str, str | None] = {}
    for item in text.split():
        keyword, eq, value = item.partition("=")
        if not _KEYWORD_RE.match(keyword) or (eq and not value):
            raise syntax(f"Error: bad parameter syntax: {item}")
        if any(c.isascii() and not "!" <= c <= "~" for c in value):
            raise syntax(f"Error: bad parameter syntax: {item}")
        keyword = keyword.upper()
        if keyword in params:
            raise syntax(f"Error: duplicate parameter: {keyword}")
        params[keyword] = value if eq else None
    return params


def _parse_bdat(arg: str) -> Bdat:
    words = arg.split()
    if not 1 <= len(words) <= 2 or not _DIGITS_RE.match(words[0]):
        raise syntax("Syntax: BDAT count [LAST]")
    if len(words) == 2 and words[1].upper() != "LAST":
        raise syntax("Syntax: BDAT count [LAST]")
    return Bdat(int(words[0]), len(words) == 2)


def _parse_auth(arg: str) -> Auth:
    words = arg.split()
    if not 1 <= len(words) <= 2 or not _MECH_RE.match(words[0]):
        raise syntax("Syntax: AUTH mechanism")
    return Auth(words[0].upper(), words[1] if len(words) == 2 else None)


def peek_verb(line: bytes) -> str:
    """The upper-cased first word of a command line ("" when blank), read
    before full parsing so that sequence errors win over argument errors as
    in Postfix."""
    word = _WORD_SEP_BYTES.split(line.strip(b" \t"), maxsplit=1)[0]
    return word.decode("utf-8", "surrogateescape").upper()
