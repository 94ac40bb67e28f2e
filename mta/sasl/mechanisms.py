"""PLAIN (RFC 4616) and LOGIN on the server side, without I/O.

Input: the client's base64 responses in order (the initial response first,
None when the client sent none).  Output: a challenge to send, the
credentials (authorization id, user, password) once complete, or a failure.
Used by the table backend; Dovecot runs its own mechanisms.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from mta.sasl import Challenge, Failure

#: The mechanisms implemented here and their properties (Dovecot's words).
MECHANISMS: dict[str, frozenset[str]] = {
    "PLAIN": frozenset({"plaintext"}),
    "LOGIN": frozenset({"plaintext"}),
}

_USERNAME = base64.b64encode(b"Username:").decode()
_PASSWORD = base64.b64encode(b"Password:").decode()
_MAX_FIELD = 1024  # a user name or password longer than this is not one


@dataclass(frozen=True)
class Credentials:
    authzid: str
    username: str
    password: str


class Mechanism:
    """One exchange of ``PLAIN`` or ``LOGIN``."""

    def __init__(self, name: str) -> None:
        if name not in MECHANISMS:
            raise ValueError(f"unsupported mechanism {name}")
        self.name = name
        self._username: str | None = None
        self._started = False

    def feed(self, response: str | None) -> Challenge | Credentials | Failure:
        first = not self._started
        self._started = True
        if response is None:
            if not first:
                return Failure("missing response")
            return Challenge("" if self.name == "PLAIN" else _USERNAME)
        try:
            data = base64.b64decode(response.encode("ascii"), validate=True)
            text = data.decode("utf-8")
        except (binascii.Error, ValueError, UnicodeError):
            return Failure("invalid base64 or UTF-8 in response")
        if self.name == "PLAIN":
            return _plain(text)
        if self._username is None:
            if not text or len(text) > _MAX_FIELD:
                return Failure("invalid user name")
            self._username = text
            return Challenge(_PASSWORD)
        if len(text) > _MAX_FIELD:
            return Failure("invalid password")
        return Credentials("", self._username, text)


def _plain(text: str) -> Credentials | Failure:
    # RFC 4616 2: [authzid] NUL authcid NUL passwd
    parts = text.split("\0")
    if len(parts) != 3 or not parts[1] or any(len(p) > _MAX_FIELD for p in parts):
        return Failure("malformed PLAIN response")
    return Credentials(parts[0], parts[1], parts[2])
