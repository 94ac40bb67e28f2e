"""Server TLS: main.cf's smtpd_tls_* parameters become a pyOpenSSL context.

Input: the certificate and key files, the protocol and cipher settings of one
smtpd service (already with its master.cf ``-o`` overrides).  Output: a
:class:`ServerTls` whose ``context_factory`` Twisted takes for STARTTLS
(``transport.startTLS``) and for implicit TLS (``TLSMemoryBIOFactory``,
``smtpd_tls_wrappermode``); and :func:`describe`, which turns an established
connection into the words Postfix puts in its log and Received: header.

Files are read when the settings are built, so a missing or unreadable
certificate is reported by ``mta check``, refused by a reload and stops the
start, each time with the path and the reason (:class:`TlsError`).

Protocol syntax is Postfix's: ``>=TLSv1.2``, ``<=TLSv1.3``, or exclusions such
as ``!SSLv2, !SSLv3, !TLSv1, !TLSv1.1``.  SSLv2/SSLv3 are never offered.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLContextFactory
from zope.interface import implementer

#: The protocols mta knows, oldest first, with their OpenSSL version numbers.
PROTOCOLS: dict[str, int] = {
    "TLSv1": SSL.TLS1_VERSION,
    "TLSv1.1": SSL.TLS1_1_VERSION,
    "TLSv1.2": SSL.TLS1_2_VERSION,
    "TLSv1.3": SSL.TLS1_3_VERSION,
}
_OBSOLETE = ("SSLv2", "SSLv3")
_BOUND_RE = re.compile(r"^([<>]=)\s*(\S+)$")


class TlsError(ValueError):
    """A TLS setting or file that cannot be used; the message names the
    parameter or file and says why."""


@dataclass(frozen=True)
class TlsInfo:
    """An established TLS session, as Postfix logs it."""

    protocol: str  # "TLSv1.3"
    cipher: str  # "TLS_AES_256_GCM_SHA384"
    bits: int  # secret bits of the cipher
    alg_bits: int

    def summary(self) -> str:
        """``TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)``"""
        return f"{self.protocol} with cipher {self.cipher} ({self.bits}/{self.alg_bits} bits)"


def parse_protocols(value: str, parameter: str) -> tuple[int, int]:
    """The (minimum, maximum) OpenSSL versions that a Postfix protocol list allows."""
    names = list(PROTOCOLS)
    allowed = set(names)
    for item in re.split(r"[\s,:]+", value.strip()):
        if not item:
            continue
        bound = _BOUND_RE.match(item)
        if bound:
            op, name = bound.groups()
            if name not in PROTOCOLS:
                raise TlsError(f'{parameter}: unknown TLS protocol "{name}"')
            i = names.index(name)
            keep = names[i:] if op == ">=" else names[: i + 1]
            allowed &= set(keep)
        elif item.startswith("!"):
            name = item[1:]
            if name not in PROTOCOLS and name not in _OBSOLETE:
                raise TlsError(f'{parameter}: unknown TLS protocol "{name}"')
            allowed.discard(name)
        elif item in PROTOCOLS:
            continue  # Postfix: a plain name is allowed anyway
        elif item in _OBSOLETE:
            raise TlsError(f"{parameter}: {item} is not supported")
        else:
            raise TlsError(f'{parameter}: unknown TLS protocol "{item}"')
    if not allowed:
        raise TlsError(f"{parameter}: every TLS protocol is excluded")
    ordered = [n for n in names if n in allowed]
    return PROTOCOLS[ordered[0]], PROTOCOLS[ordered[-1]]


def cipher_list(grade_list: str, exclude: Sequence[str]) -> str:
    """An OpenSSL cipher string: the grade's list minus the excluded names."""
    return ":".join([grade_list, *(f"!{name}" for name in exclude)])


@implementer(IOpenSSLContextFactory)
@dataclass(frozen=True)
class _ContextFactory:
    """What Twisted's TLS wants: ``getContext()`` (the context is built once
    per configuration and shared by every connection of the service)."""

    context: SSL.Context

    def getContext(self) -> SSL.Context:  # Twisted's camelCase
        return self.context


@dataclass(frozen=True)
class ServerTls:
    """The TLS side of one smtpd service."""

    context_factory: _ContextFactory
    minimum: int
    maximum: int


def server_tls(
    *,
    cert_file: str,
    key_file: str,
    chain_files: Sequence[str],
    protocols: str,
    protocols_parameter: str,
    ciphers: str,
    base_dir: Path,
) -> ServerTls:
    """Build the context; raises :class:`TlsError` naming the file and reason."""
    minimum, maximum = parse_protocols(protocols, protocols_parameter)
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(minimum)
    ctx.set_max_proto_version(maximum)
    ctx.set_options(
        SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE | SSL.OP_NO_RENEGOTIATION
    )
    try:
        ctx.set_cipher_list(ciphers.encode("ascii"))
    except (SSL.Error, UnicodeEncodeError) as e:
        raise TlsError(f'cipher list "{ciphers}": {_reason(e)}') from e
    pairs: list[tuple[Path, Path]] = []
    if chain_files:
        # Postfix 3.4 smtpd_tls_chain_files: each file holds a key and its chain.
        pairs = [(_path(f, base_dir), _path(f, base_dir)) for f in chain_files]
    elif cert_file:
        pairs = [(_path(cert_file, base_dir), _path(key_file or cert_file, base_dir))]
    else:
        raise TlsError("smtpd_tls_cert_file is empty: no server certificate")
    for cert_path, key_path in pairs:
        _load(ctx, cert_path, key_path)
    return ServerTls(_ContextFactory(ctx), minimum, maximum)


def _path(name: str, base_dir: Path) -> Path:
    path = Path(name)
    return path if path.is_absolute() else base_dir / path


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise TlsError(f"{what} {path}: {e.strerror or e}") from e


def _load(ctx: SSL.Context, cert_path: Path, key_path: Path) -> None:
    cert_pem = _read(cert_path, "certificate file")
    key_pem = cert_pem if key_path == cert_path else _read(key_path, "key file")
    if b"-----BEGIN CERTIFICATE-----" not in cert_pem:
        raise TlsError(f"certificate file {cert_path}: no PEM certificate in it")
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as e:
        raise TlsError(f"certificate file {cert_path}: {_reason(e)}") from e
    try:
        key = serialization.load_pem_private_key(_key_block(key_pem), password=None)
    except (ValueError, TypeError) as e:
        raise TlsError(f"key file {key_path}: no usable private key ({_reason(e)})") from e
    try:
        ctx.use_certificate(certs[0])
        for extra in certs[1:]:
            ctx.add_extra_chain_cert(crypto.X509.from_cryptography(extra))
        ctx.use_privatekey(key)  # type: ignore[arg-type]
        ctx.check_privatekey()
    except SSL.Error as e:
        raise TlsError(
            f"key file {key_path}: does not match certificate {cert_path} ({_reason(e)})"
        ) from e


def _key_block(pem: bytes) -> bytes:
    """The private key PEM block of a file that may also hold certificates."""
    m = re.search(
        rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.+?-----END \1PRIVATE KEY-----", pem, re.DOTALL
    )
    return m.group(0) if m else pem


def _reason(error: Exception) -> str:
    args = error.args[0] if error.args else None
    if isinstance(args, list) and args and isinstance(args[0], tuple):
        return "; ".join(str(part[-1]) for part in args)
    return str(error) or type(error).__name__


def describe(connection: object) -> TlsInfo | None:
    """The TLS session of ``transport.getHandle()``, or None before a
    handshake (or for a plain socket)."""
    if not isinstance(connection, SSL.Connection):
        return None
    cipher = connection.get_cipher_name()
    protocol = connection.get_protocol_version_name()
    if not cipher or not protocol or protocol == "Unknown":
        return None
    bits, alg_bits = _cipher_bits(connection)
    return TlsInfo(protocol, cipher, bits, alg_bits)


def _cipher_bits(connection: SSL.Connection) -> tuple[int, int]:
    """SSL_CIPHER_get_bits(): the secret and the algorithm bits, as Postfix
    prints them; pyOpenSSL's public API has only the first."""
    bits = connection.get_cipher_bits() or 0
    try:
        from OpenSSL._util import ffi, lib

        current = lib.SSL_get_current_cipher(connection._ssl)
        if current != ffi.NULL:
            alg = ffi.new("int *")
            bits = int(lib.SSL_CIPHER_get_bits(current, alg))
            return bits, int(alg[0])
    except (ImportError, AttributeError):
        pass
    return bits, bits
