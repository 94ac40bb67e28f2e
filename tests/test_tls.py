"""Tests for mta.tls: Postfix protocol lists, certificate loading with
reasons, and what an established session is called."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from OpenSSL import SSL

from mta.tls import (
    PROTOCOLS,
    TlsError,
    cipher_list,
    describe,
    parse_protocols,
    server_tls,
)

MEDIUM = "aNULL:-aNULL:HIGH:MEDIUM:+RC4:@STRENGTH"


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("cert")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=mx.example",
            "-days",
            "2",
            "-keyout",
            str(d / "key.pem"),
            "-out",
            str(d / "cert.pem"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return d / "cert.pem", d / "key.pem"


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        (">=TLSv1.2", "TLSv1.2", "TLSv1.3"),
        ("<=TLSv1.2", "TLSv1", "TLSv1.2"),
        ("!SSLv2, !SSLv3, !TLSv1, !TLSv1.1", "TLSv1.2", "TLSv1.3"),
        ("!SSLv2 !SSLv3", "TLSv1", "TLSv1.3"),
        ("TLSv1.3", "TLSv1", "TLSv1.3"),
        (">=TLSv1.2 <=TLSv1.2", "TLSv1.2", "TLSv1.2"),
        ("", "TLSv1", "TLSv1.3"),
    ],
)
def test_parse_protocols(value: str, low: str, high: str) -> None:
    """Postfix's >=/<= bounds and !exclusions become a min/max version."""
    assert parse_protocols(value, "p") == (PROTOCOLS[low], PROTOCOLS[high])


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (">=TLSv9", 'unknown TLS protocol "TLSv9"'),
        ("!TLSv1, !TLSv1.1, !TLSv1.2, !TLSv1.3", "every TLS protocol is excluded"),
        ("SSLv3", "SSLv3 is not supported"),
        ("!QUIC", 'unknown TLS protocol "QUIC"'),
    ],
)
def test_parse_protocols_errors(value: str, reason: str) -> None:
    """Bad protocol lists are refused with the parameter name and why."""
    with pytest.raises(TlsError, match=f"smtpd_tls_protocols: {reason}"):
        parse_protocols(value, "smtpd_tls_protocols")


def test_cipher_list_excludes() -> None:
    """smtpd_tls_exclude_ciphers become !NAME entries."""
    assert cipher_list("HIGH", ["aNULL", "RC4"]) == "HIGH:!aNULL:!RC4"


def build(cert: Path, key: Path, **kw: object) -> object:
    args: dict[str, object] = dict(
        cert_file=str(cert),
        key_file=str(key),
        chain_files=(),
        protocols=">=TLSv1.2",
        protocols_parameter="smtpd_tls_protocols",
        ciphers=MEDIUM,
        base_dir=cert.parent,
    )
    args.update(kw)
    return server_tls(**args)  # type: ignore[arg-type]


def test_file_errors_name_path_and_reason(cert: tuple[Path, Path], tmp_path: Path) -> None:
    """Missing, garbage and mismatched files: TlsError with path and reason."""
    c, k = cert
    with pytest.raises(TlsError, match=f"certificate file {tmp_path}/nope.pem: No such file"):
        build(tmp_path / "nope.pem", k)
    junk = tmp_path / "junk.pem"
    junk.write_text("junk\n")
    with pytest.raises(TlsError, match="no PEM certificate in it"):
        build(junk, k)
    with pytest.raises(TlsError, match=f"key file {junk}: no usable private key"):
        build(c, junk)
    other = tmp_path / "other"
    subprocess.run(
        [
            "openssl",
            "genpkey",
            "-algorithm",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-out",
            str(other),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    with pytest.raises(TlsError, match="does not match certificate"):
        build(c, other)
    with pytest.raises(TlsError, match="smtpd_tls_cert_file is empty"):
        build(c, k, cert_file="")
    with pytest.raises(TlsError, match="cipher list"):
        build(c, k, ciphers="NO-SUCH-CIPHER-ANYWHERE")


def test_chain_file_holds_key_and_certificate(cert: tuple[Path, Path], tmp_path: Path) -> None:
    """smtpd_tls_chain_files: one file with the key and then the chain."""
    c, k = cert
    both = tmp_path / "both.pem"
    both.write_bytes(k.read_bytes() + c.read_bytes())
    assert build(c, k, cert_file="", chain_files=(str(both),)) is not None


def handshake(server: SSL.Context, client: SSL.Context) -> tuple[SSL.Connection, SSL.Connection]:
    """Run a handshake in memory between two pyOpenSSL connections."""
    s = SSL.Connection(server, None)
    s.set_accept_state()
    c = SSL.Connection(client, None)
    c.set_connect_state()
    for _ in range(20):
        for a, b in ((c, s), (s, c)):
            try:
                a.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                data = a.bio_read(65536)
            except SSL.WantReadError:
                data = b""
            if data:
                b.bio_write(data)
    return s, c


def test_describe_and_minimum_version(cert: tuple[Path, Path]) -> None:
    """An established session is described as Postfix logs it; a client
    limited to TLS 1.1 cannot complete a handshake."""
    c, k = cert
    tls = build(c, k)
    ctx = tls.context_factory.getContext()  # type: ignore[attr-defined]
    client = SSL.Context(SSL.TLS_CLIENT_METHOD)
    s, _ = handshake(ctx, client)
    info = describe(s)
    assert info is not None and info.protocol == "TLSv1.3"
    assert info.summary().startswith("TLSv1.3 with cipher TLS_")
    assert info.bits >= 128 and info.alg_bits >= info.bits
    assert describe(object()) is None
    old = SSL.Context(SSL.TLS_CLIENT_METHOD)
    old.set_max_proto_version(SSL.TLS1_1_VERSION)
    old.set_cipher_list(b"DEFAULT@SECLEVEL=0")
    with pytest.raises(SSL.Error):
        s2 = SSL.Connection(ctx, None)
        s2.set_accept_state()
        c2 = SSL.Connection(old, None)
        c2.set_connect_state()
        for _ in range(10):
            for a, b in ((c2, s2), (s2, c2)):
                try:
                    a.do_handshake()
                except SSL.WantReadError:
                    pass
                try:
                    data = a.bio_read(65536)
                except SSL.WantReadError:
                    data = b""
                if data:
                    b.bio_write(data)
    assert describe(s2) is None
