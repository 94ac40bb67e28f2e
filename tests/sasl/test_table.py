"""Tests for mta.sasl.table: doveadm pw hashes verified with libpass."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import pytest_twisted

from mta.sasl import ClientInfo, Failure, SecurityOptions, Success
from mta.sasl.table import TableBackend, UnsupportedScheme, split_scheme, verify_password
from mta.tables import open_table

# Real `doveadm pw -p secret` output (Dovecot 2.3), one per scheme.
DOVEADM = [
    "{CRYPT}$2y$05$k1j23iZZ.qHX993NKn6MZOsIM8MEAZ57Mcd03osx8P4Z6GicTZgHa",
    "{SHA512-CRYPT}$6$9WxiGDzTTWxwsvs5$cFVpQx8p5D2dEX/bkXHXbPab6Xhp6V5I7gv2epQcr.A9X9pgmmi2k4O6q2X9"
    "Qv0FqSKOKAJQuK7rHdyKVeTWo/",
    "{SSHA256}R3cmZYHk0h0gJJBmIE8pjNoiNBR6XbTt+d7MduBnsdfHm8FE",
    "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$+QlVJ5TY/OghsnNmenOLKQ$0YVWs99GovX3jXCD+PB10mLPfY9uic"
    "Kb+LRm+iuVDcc",
    "{BLF-CRYPT}$2y$05$QD0Yn1yHyyGX0.yqpXY3D.mHTai1jxp2lbDUSehJVI44VYFRi0sQi",
]


@pytest.mark.parametrize("stored", DOVEADM)
def test_doveadm_hashes(stored: str) -> None:
    """Each scheme doveadm writes verifies the right password only."""
    assert verify_password(stored, "secret")
    assert not verify_password(stored, "Secret")


def test_more_schemes_and_no_scheme() -> None:
    """SHA256-CRYPT, MD5-CRYPT, SSHA512; no braces means CRYPT."""
    from passlib import hash as h

    assert verify_password("{SHA256-CRYPT}" + h.sha256_crypt.hash("pw"), "pw")
    assert verify_password("{MD5-CRYPT}" + h.md5_crypt.hash("pw"), "pw")
    assert verify_password(h.ldap_salted_sha512.hash("pw"), "pw")
    assert verify_password(h.sha512_crypt.hash("pw"), "pw")
    assert split_scheme("$6$x") == ("CRYPT", "$6$x")
    assert split_scheme("{ssha}abc") == ("SSHA", "abc")


@pytest.mark.parametrize(
    "stored", ["{PLAIN}secret", "{CLEARTEXT}secret", "{PBKDF2}$1$x", "{SHA512-CRYPT}junk"]
)
def test_plain_text_and_unknown_schemes_are_refused(stored: str) -> None:
    """Never a plain-text compare: such entries raise UnsupportedScheme."""
    with pytest.raises(UnsupportedScheme):
        verify_password(stored, "secret")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest_twisted.ensureDeferred
async def test_backend_exchange(tmp_path: Path) -> None:
    """PLAIN and LOGIN through the backend, in a thread; unknown users and
    {PLAIN} entries fail the same way, with a warning for the latter."""
    from twisted.internet import reactor

    table = tmp_path / "passwd"
    table.write_text(f"alice {DOVEADM[1]}\nbob {{PLAIN}}secret\n")
    warnings: list[str] = []
    backend = TableBackend(
        reactor,
        [open_table(f"texthash:{table}", base_dir=tmp_path)],
        SecurityOptions(),
        warnings.append,
    )
    assert await backend.mechanisms(False) == ("PLAIN", "LOGIN")
    client = ClientInfo("smtp", "192.0.2.1")
    assert await backend.start("PLAIN", client).step(b64(b"\0alice\0secret")) == Success("alice")
    assert isinstance(await backend.start("PLAIN", client).step(b64(b"\0alice\0x")), Failure)
    assert isinstance(await backend.start("PLAIN", client).step(b64(b"\0carol\0secret")), Failure)
    assert isinstance(await backend.start("PLAIN", client).step(b64(b"\0bob\0secret")), Failure)
    assert isinstance(
        await backend.start("PLAIN", client).step(b64(b"eve\0alice\0secret")), Failure
    )
    login = backend.start("LOGIN", client)
    await login.step(None)
    await login.step(b64(b"alice"))
    assert await login.step(b64(b"secret")) == Success("alice")
    assert warnings == ["SASL table: user bob: unsupported password scheme {PLAIN}"]
    strict = TableBackend(reactor, [], SecurityOptions(plain=("noplaintext",)))
    assert await strict.mechanisms(False) == ()
