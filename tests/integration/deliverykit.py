"""Real peers for delivery tests: aiosmtpd servers (with STARTTLS and AUTH
when asked) on chosen loopback addresses, a test CA, and a driver that runs
the daemon's DeliveryAgent in-process on a Config built from main.cf text,
routing each recipient with the daemon's own Router."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mta import settings
from mta.config import load
from mta.delivery.agent import DeliveryAgent
from mta.delivery.route import Route
from mta.envelope import Envelope, Recipient
from mta.queue.manager import Attempt

# -- certificates ------------------------------------------------------------------


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path
    key_path: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(directory: Path, stem: str, cert: x509.Certificate, key: Any) -> Issued:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / f"{stem}.pem"
    key_path = directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Issued(cert, key, cert_path, key_path)


def make_ca(directory: Path, cn: str = "mta test CA") -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return _write(directory, "ca", cert, key)


def issue(
    directory: Path, names: Iterable[str], ca: Issued | None = None, stem: str = ""
) -> Issued:
    """A server certificate for ``names``, signed by ``ca`` (None: self-signed)."""
    names = list(names)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = []
    for n in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt.append(x509.DNSName(n))
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca.cert.subject if ca else _name(names[0]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
    )
    cert = builder.sign(ca.key if ca else key, hashes.SHA256())
    return _write(directory, stem or names[0], cert, key)


def server_context(issued: Issued) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(issued.cert_path), str(issued.key_path))
    return ctx


# -- an SMTP peer ------------------------------------------------------------------


@dataclass
class Got:
    sender: str
    recipients: list[str]
    data: bytes
    tls: bool
    auth: str
    mail_options: list[str] = field(default_factory=list)


class Peer:
    """aiosmtpd on ``host``:``port``; records what it got, with whether
    the session was encrypted and who authenticated."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        users: dict[str, str] | None = None,
        auth_require_tls: bool = True,
        eightbit: bool = True,
    ) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

        self.host, self.port = host, port
        self.got: list[Got] = []
        self.connections = 0
        self._lock = threading.Lock()
        peer = self

        class Handler:
            async def handle_EHLO(self, server, session, envelope, hostname, responses):  # type: ignore[no-untyped-def]
                session.host_name = hostname
                if not eightbit:
                    responses = [r for r in responses if "8BITMIME" not in r]
                    if responses and not responses[-1].startswith("250 "):
                        responses[-1] = "250 " + responses[-1][4:]
                return responses

            async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
                with peer._lock:
                    peer.got.append(
                        Got(
                            envelope.mail_from,
                            list(envelope.rcpt_tos),
                            envelope.original_content or envelope.content,
                            session.ssl is not None,
                            str(session.auth_data or ""),
                            list(envelope.mail_options),
                        )
                    )
                return "250 2.0.0 OK captured"

        def authenticator(server, session, envelope, mechanism, data):  # type: ignore[no-untyped-def]
            if isinstance(data, LoginPassword) and users is not None:
                user = data.login.decode()
                if users.get(user) == data.password.decode():
                    return AuthResult(success=True, auth_data=user)
            return AuthResult(success=False, handled=False)

        class Counting(Controller):
            def factory(self) -> SMTP:  # type: ignore[override]
                with peer._lock:
                    peer.connections += 1
                return SMTP(
                    self.handler,
                    hostname="peer.test",
                    tls_context=tls,
                    authenticator=authenticator if users is not None else None,
                    auth_require_tls=auth_require_tls,
                    data_size_limit=10_000_000,
                )

        self.controller = Counting(Handler(), hostname=host, port=port)

    def start(self) -> Peer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


# -- the agent ---------------------------------------------------------------------

BASE = {
    "myhostname": "mta.test.example",
    "queue_directory": "queue",
    "inet_interfaces": "loopback-only",
}


def config(confdir: Path, params: dict[str, str], master_cf: str = "") -> Any:
    confdir.mkdir(parents=True, exist_ok=True)
    merged = {**BASE, **params}
    (confdir / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in merged.items()))
    (confdir / "master.cf").write_text(master_cf)
    return load(confdir)


class Run:
    """The DeliveryAgent of a configuration, with its mail log lines."""

    def __init__(self, reactor: Any, cfg: Any) -> None:
        self.cfg = cfg
        self.lines: list[str] = []
        self.agent = DeliveryAgent(reactor, cfg, log=lambda svc, text: self.lines.append(text))
        self.router = settings.router(cfg)

    def route(self, address: str) -> Route:
        return self.router.route(address)

    async def deliver(
        self,
        message: Path,
        recipients: list[str],
        sender: str = "sender@example.org",
        **envelope: Any,
    ) -> dict[str, tuple[Route, Attempt, int]]:
        """Deliver to each recipient grouped by route; address → (route,
        attempt, index of its reply)."""
        env = Envelope("TESTID", sender, [Recipient(r) for r in recipients], 0.0, **envelope)
        groups: dict[Route, list[Recipient]] = {}
        for r in env.recipients:
            groups.setdefault(self.route(r.address), []).append(r)
        out: dict[str, tuple[Route, Attempt, int]] = {}
        for route, rcpts in groups.items():
            attempt = await self.agent(route, env, rcpts, message)
            for i, r in enumerate(rcpts):
                out[r.address] = (route, attempt, i)
        return out

    def close(self) -> None:
        self.agent.cache.close_all()


def reply_of(results: dict[str, tuple[Route, Attempt, int]], address: str) -> Any:
    _, attempt, i = results[address]
    return attempt.replies[i]


def relay_of(results: dict[str, tuple[Route, Attempt, int]], address: str) -> str:
    return results[address][1].relay


def message_file(path: Path, body: bytes = b"") -> Path:
    path.write_bytes(body or b"Subject: test\r\nFrom: <sender@example.org>\r\n\r\nhello\r\n")
    return path
