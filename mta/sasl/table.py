"""The built-in SASL backend: user names and password hashes in lookup tables.

Input: ``smtpd_sasl_password_maps`` tables whose values are password hashes
as ``doveadm pw`` writes them (``{SHA512-CRYPT}$6$...``, ``{BLF-CRYPT}$2y$...``,
``{ARGON2ID}$argon2id$...``, ``{SSHA256}...``; no scheme means ``{CRYPT}``), and
the client's PLAIN or LOGIN exchange.  Output: :class:`mta.sasl.Success` with
the user name, or a failure.

Hashes are verified with libpass (the maintained fork of passlib), in a
thread because bcrypt and Argon2 are slow on purpose.  A password is never
compared in plain text: ``{PLAIN}`` and other schemes that are not hashes are
refused (and logged) like a wrong password.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from passlib import hash as _hash
from passlib.context import CryptContext
from twisted.internet.threads import deferToThreadPool

from mta.sasl import (
    ClientInfo,
    Failure,
    SecurityOptions,
    Step,
    Success,
    TempFailure,
    acceptable,
)
from mta.sasl.mechanisms import MECHANISMS, Credentials, Mechanism
from mta.tables import LookupTable

log = logging.getLogger(__name__)

# CRYPT: whatever crypt(3) format the hash is in (Dovecot's default scheme).
_CRYPT = CryptContext(schemes=["sha512_crypt", "sha256_crypt", "md5_crypt", "bcrypt", "des_crypt"])

#: Dovecot scheme -> (handler, whether the hash keeps "{SCHEME}").  Handlers,
#: not bound methods: passlib loads the bcrypt/argon2 backends lazily.
_SCHEMES: dict[str, tuple[Any, bool]] = {
    "CRYPT": (_CRYPT, False),
    "SHA512-CRYPT": (_hash.sha512_crypt, False),
    "SHA256-CRYPT": (_hash.sha256_crypt, False),
    "MD5-CRYPT": (_hash.md5_crypt, False),
    "BLF-CRYPT": (_hash.bcrypt, False),
    "ARGON2I": (_hash.argon2, False),
    "ARGON2ID": (_hash.argon2, False),
    "SSHA": (_hash.ldap_salted_sha1, True),
    "SSHA256": (_hash.ldap_salted_sha256, True),
    "SSHA512": (_hash.ldap_salted_sha512, True),
}


class UnsupportedScheme(ValueError):
    pass


def split_scheme(stored: str) -> tuple[str, str]:
    """``{SCHEME}rest`` -> (SCHEME, rest); no braces -> CRYPT (Dovecot)."""
    stored = stored.strip()
    if stored.startswith("{") and "}" in stored:
        scheme, _, rest = stored[1:].partition("}")
        return scheme.upper(), rest
    return "CRYPT", stored


def verify_password(stored: str, password: str) -> bool:
    """Whether ``password`` matches the stored hash; UnsupportedScheme for a
    scheme that is not a supported hash (never a plain-text compare)."""
    scheme, rest = split_scheme(stored)
    entry = _SCHEMES.get(scheme)
    if entry is None:
        raise UnsupportedScheme(f"unsupported password scheme {{{scheme}}}")
    handler, keep_prefix = entry
    value = f"{{{scheme}}}{rest}" if keep_prefix else rest
    try:
        return bool(handler.verify(password, value))
    except (ValueError, TypeError) as e:
        raise UnsupportedScheme(f"malformed {{{scheme}}} hash: {e}") from e


class TableBackend:
    """``smtpd_sasl_type = table``."""

    def __init__(
        self,
        reactor: Any,
        tables: Sequence[LookupTable],
        security: SecurityOptions,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.reactor = reactor
        self.tables = tuple(tables)
        self.security = security
        self.warn = warn or (lambda text: log.warning("%s", text))

    async def mechanisms(self, tls: bool) -> tuple[str, ...]:
        options = self.security.select(tls)
        return tuple(m for m, props in MECHANISMS.items() if acceptable(props, options))

    def start(self, mechanism: str, client: ClientInfo) -> _TableExchange:
        return _TableExchange(self, Mechanism(mechanism))

    def lookup(self, username: str) -> str | None:
        for table in self.tables:
            value = table.lookup(username)
            if value is not None:
                return value
        return None

    async def check(self, credentials: Credentials) -> Step:
        if credentials.authzid and credentials.authzid != credentials.username:
            return Failure("authorization identity differs from the user")
        stored = self.lookup(credentials.username)
        if stored is None:
            # Spend the time a real check would, so that timing does not
            # tell which user names exist.
            stored = _DUMMY
        pool = self.reactor.getThreadPool()
        try:
            ok = await deferToThreadPool(
                self.reactor, pool, verify_password, stored, credentials.password
            )
        except UnsupportedScheme as e:
            self.warn(f"SASL table: user {credentials.username}: {e}")
            return Failure("authentication failure")
        except Exception as e:  # a broken hash library must not kill the session
            self.warn(f"SASL table: cannot verify {credentials.username}: {e}")
            return TempFailure(str(e))
        if ok and stored is not _DUMMY:
            return Success(credentials.username)
        return Failure("authentication failure")


# A SHA512-CRYPT hash of a random password nobody knows.
_DUMMY = _hash.sha512_crypt.using(rounds=5000).hash(os.urandom(24).hex())


class _TableExchange:
    def __init__(self, backend: TableBackend, mechanism: Mechanism) -> None:
        self.backend = backend
        self.mechanism = mechanism

    async def step(self, response: str | None) -> Step:
        result = self.mechanism.feed(response)
        if isinstance(result, Credentials):
            return await self.backend.check(result)
        return result

    def cancel(self) -> None:
        pass
