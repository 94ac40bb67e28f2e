"""Outbound TLS, DANE, SASL, the connection cache, BDAT and the 7-bit
downgrade, against aiosmtpd peers on loopback with a self-signed and a
test-CA-signed certificate, and a DNS server that can vouch (AD) for names.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor

from mta.delivery.dane import association
from tests.integration.deliverykit import (
    Issued,
    Peer,
    Run,
    config,
    issue,
    make_ca,
    message_file,
    reply_of,
    server_context,
)
from tests.integration.dnsserver import DNSServer
from tests.integration.harness import free_port

reactor: Any = _reactor
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def port() -> int:
    for _ in range(50):
        p = free_port()
        ok = True
        for host in ("127.0.0.2", "127.0.0.3"):
            with socket.socket() as s:
                try:
                    s.bind((host, p))
                except OSError:
                    ok = False
        if ok:
            return p
    raise RuntimeError("no common free port")


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    for p in started:
        p.stop()


@pytest.fixture
def dns() -> Iterator[DNSServer]:
    server = DNSServer().start()
    server.add("tls.test", "MX", "10 mx.tls.test.")
    server.add("mx.tls.test", "A", "127.0.0.2")
    yield server
    server.stop()


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, Issued]:
    ca = make_ca(tmp_path / "pki")
    return {
        "ca": ca,
        "signed": issue(tmp_path / "pki", ["mx.tls.test"], ca, stem="signed"),
        "self": issue(tmp_path / "pki", ["mx.tls.test"], None, stem="self"),
        "other": issue(tmp_path / "pki", ["elsewhere.example"], ca, stem="other"),
    }


def start(peers: list[Peer], host: str, port: int, **kw: Any) -> Peer:
    p = Peer(host, port, **kw).start()
    peers.append(p)
    return p


async def one(
    run: Run, tmp_path: Path, rcpt: str = "x@tls.test", message: bytes = b"", **env: Any
) -> Any:
    results = await run.deliver(message_file(tmp_path / "msg", message), [rcpt], **env)
    run.close()
    return reply_of(results, rcpt)


@pytest_twisted.ensureDeferred
async def test_tls_levels(
    tmp_path: Path, dns: DNSServer, peers: list[Peer], port: int, certs: dict[str, Issued]
) -> None:
    """may takes any certificate (Untrusted logged), verify needs a chain
    from smtp_tls_CAfile naming the MX host (Verified), a self-signed or
    misnamed certificate defers under verify/secure, encrypt defers when
    STARTTLS is not offered, and smtp_tls_policy_maps overrides the level
    per destination."""
    base = {"dns_nameservers": dns.address, "smtp_tcp_port": str(port)}
    ca = str(certs["ca"].cert_path)

    peer = start(peers, "127.0.0.2", port, tls=server_context(certs["self"]))
    run = Run(reactor, config(tmp_path / "c1", {**base, "smtp_tls_security_level": "may"}))
    assert (await one(run, tmp_path)).code == 250
    assert peer.got[-1].tls
    assert any(
        line.startswith("Untrusted TLS connection established to mx.tls.test") for line in run.lines
    )

    run = Run(
        reactor,
        config(
            tmp_path / "c2", {**base, "smtp_tls_security_level": "verify", "smtp_tls_CAfile": ca}
        ),
    )
    reply = await one(run, tmp_path)
    assert (reply.code, reply.status, reply.text) == (
        454,
        "4.7.5",
        "Server certificate not trusted",
    )
    assert len(peer.got) == 1
    peer.stop()
    peers.remove(peer)

    signed = start(peers, "127.0.0.2", port, tls=server_context(certs["signed"]))
    run = Run(
        reactor,
        config(
            tmp_path / "c3", {**base, "smtp_tls_security_level": "verify", "smtp_tls_CAfile": ca}
        ),
    )
    assert (await one(run, tmp_path)).code == 250
    assert signed.got[-1].tls
    assert any(
        line.startswith("Verified TLS connection established to mx.tls.test[127.0.0.2]")
        for line in run.lines
    )
    # secure checks the next hop (tls.test, .tls.test), not the MX name.
    run = Run(
        reactor,
        config(
            tmp_path / "c4", {**base, "smtp_tls_security_level": "secure", "smtp_tls_CAfile": ca}
        ),
    )
    assert (await one(run, tmp_path)).code == 250
    # A policy that demands another name fails the same server.
    (tmp_path / "c5").mkdir()
    (tmp_path / "c5" / "tls_policy").write_text("tls.test secure match=elsewhere.example\n")
    run = Run(
        reactor,
        config(
            tmp_path / "c5",
            {**base, "smtp_tls_policy_maps": "texthash:tls_policy", "smtp_tls_CAfile": ca},
        ),
    )
    reply = await one(run, tmp_path)
    assert reply.text == "Server certificate not verified"
    signed.stop()
    peers.remove(signed)

    plain = start(peers, "127.0.0.2", port)
    run = Run(reactor, config(tmp_path / "c6", {**base, "smtp_tls_security_level": "encrypt"}))
    reply = await one(run, tmp_path)
    assert reply.is_transient
    assert reply.text == "TLS is required, but was not offered by host mx.tls.test[127.0.0.2]"
    run = Run(reactor, config(tmp_path / "c7", {**base, "smtp_tls_security_level": "may"}))
    assert (await one(run, tmp_path)).code == 250
    assert not plain.got[-1].tls


@pytest_twisted.ensureDeferred
async def test_dane_tlsa(
    tmp_path: Path, dns: DNSServer, peers: list[Peer], port: int, certs: dict[str, Issued]
) -> None:
    """With smtp_dns_support_level = dnssec and level dane, a validated
    TLSA 3 1 1 record that matches the self-signed certificate makes the
    connection Verified; one that does not match defers; without TLSA the
    delivery is opportunistic."""
    start(peers, "127.0.0.2", port, tls=server_context(certs["self"]))
    digest = association(certs["self"].cert, 1, 1).hex()
    dns.secure |= {"tls.test.", "mx.tls.test.", "_25._tcp.mx.tls.test."}
    params = {
        "dns_nameservers": dns.address,
        "smtp_tcp_port": "25",
        "smtp_dns_support_level": "dnssec",
        "smtp_tls_security_level": "dane",
        "inet_interfaces": "127.0.0.1",
    }
    # The TLSA name follows the port; this test's peers use ``port``.
    params["smtp_tcp_port"] = str(port)
    dns.add(f"_{port}._tcp.mx.tls.test", "TLSA", f"3 1 1 {digest}")
    dns.secure.add(f"_{port}._tcp.mx.tls.test.")
    run = Run(reactor, config(tmp_path / "d1", params))
    assert (await one(run, tmp_path)).code == 250
    assert any(line.startswith("Verified TLS connection established") for line in run.lines)

    dns.records[f"_{port}._tcp.mx.tls.test."] = [("TLSA", "3 1 1 " + "00" * 32)]
    run = Run(reactor, config(tmp_path / "d2", params))
    reply = await one(run, tmp_path)
    assert (reply.code, reply.text) == (454, "Server certificate not trusted")

    del dns.records[f"_{port}._tcp.mx.tls.test."]
    run = Run(reactor, config(tmp_path / "d3", params))
    assert (await one(run, tmp_path)).code == 250
    assert any(line.startswith("Untrusted TLS") for line in run.lines)


@pytest_twisted.ensureDeferred
async def test_sasl_to_smart_host(
    tmp_path: Path, peers: list[Peer], port: int, certs: dict[str, Issued]
) -> None:
    """smtp_sasl_password_maps keyed by the relayhost as written gives the
    credentials; PLAIN goes only over TLS (smtp_sasl_security_options =
    noplaintext by default), a wrong password defers with the server's
    words, and a server without TLS gets no password at all."""
    smart = start(
        peers, "127.0.0.2", port, tls=server_context(certs["self"]), users={"joe": "s3cret"}
    )
    conf = tmp_path / "s1"
    conf.mkdir()
    (conf / "sasl_passwd").write_text(f"[127.0.0.2]:{port} joe:s3cret\n[127.0.0.3]:{port} joe:x\n")
    params = {
        "relayhost": f"[127.0.0.2]:{port}",
        "smtp_sasl_auth_enable": "yes",
        "smtp_sasl_password_maps": "texthash:sasl_passwd",
        "smtp_tls_security_level": "may",
    }
    run = Run(reactor, config(conf, params))
    assert (await one(run, tmp_path, "x@example.net")).code == 250
    assert smart.got[-1].auth == "joe" and smart.got[-1].tls

    (conf / "sasl_passwd").write_text(f"[127.0.0.2]:{port} joe:wrong\n")
    run = Run(reactor, config(conf, params))
    reply = await one(run, tmp_path, "x@example.net")
    assert reply.is_transient  # smtp_sasl_auth_soft_bounce
    assert reply.text.startswith(
        "SASL authentication failed; server 127.0.0.2[127.0.0.2] said: 535"
    )
    assert len(smart.got) == 1

    start(peers, "127.0.0.3", port, users={"joe": "x"}, auth_require_tls=False)
    run = Run(reactor, config(conf, {**params, "relayhost": f"[127.0.0.3]:{port}"}))
    (conf / "sasl_passwd").write_text(f"[127.0.0.3]:{port} joe:x\n")
    run = Run(reactor, config(conf, {**params, "relayhost": f"[127.0.0.3]:{port}"}))
    reply = await one(run, tmp_path, "x@example.net")
    assert reply.text.endswith("no mechanism available")


@pytest_twisted.ensureDeferred
async def test_connection_cache_bdat_and_downgrade(
    tmp_path: Path, peers: list[Peer], port: int
) -> None:
    """Messages to one destination in quick succession share a connection
    (smtp_connection_cache_on_demand), and a next hop without 8BITMIME gets
    an 8-bit message as quoted-printable (RFC 6152)."""
    peer = start(peers, "127.0.0.2", port)
    before = peer.connections  # aiosmtpd's controller probes its server once at start
    run = Run(reactor, config(tmp_path / "k1", {"relayhost": f"[127.0.0.2]:{port}"}))
    msg = message_file(tmp_path / "m1")
    for n in range(3):
        results = await run.deliver(msg, [f"r{n}@example.net"])
        assert reply_of(results, f"r{n}@example.net").code == 250
    run.close()
    assert len(peer.got) == 3
    assert peer.connections - before == 1

    old = start(peers, "127.0.0.3", port, eightbit=False)
    run = Run(reactor, config(tmp_path / "k2", {"relayhost": f"[127.0.0.3]:{port}"}))
    body = (
        b"Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n\xc3\x84pfel\r\n"
    )
    reply = await one(run, tmp_path, "x@example.net", message=body, body="8BITMIME")
    assert reply.code == 250
    got = old.got[-1].data
    assert b"Content-Transfer-Encoding: quoted-printable" in got
    assert b"=C3=84pfel" in got and got.isascii()


@pytest_twisted.ensureDeferred
async def test_mta_sts_enforce(
    tmp_path: Path, dns: DNSServer, peers: list[Peer], port: int, certs: dict[str, Issued]
) -> None:
    """A domain with an MTA-STS TXT record and an enforce policy served over
    HTTPS (Twisted's client, certificate from the test CA) gets TLS with a
    verified certificate even at level may: a self-signed MX defers, a
    CA-signed one is Verified, an MX the policy does not list is refused."""
    from twisted.internet.ssl import PrivateCertificate
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    from tests.integration.deliverykit import issue

    policy = {"text": b"version: STSv1\nmode: enforce\nmx: mx.sts.test\nmax_age: 86400\n"}

    class Policy(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:
            request.setHeader(b"content-type", b"text/plain")
            return policy["text"]

    web_cert = issue(tmp_path / "pki", ["mta-sts.sts.test"], certs["ca"], stem="web")
    pem = web_cert.cert_path.read_bytes() + web_cert.key_path.read_bytes()
    site = Site(Resource())
    site.resource.putChild(b".well-known", Resource())
    site.resource.children[b".well-known"].putChild(b"mta-sts.txt", Policy())
    https = reactor.listenSSL(
        0, site, PrivateCertificate.loadPEM(pem).options(), interface="127.0.0.1"
    )
    try:
        for name, rtype, rdata in [
            ("sts.test", "MX", "10 mx.sts.test."),
            ("mx.sts.test", "A", "127.0.0.2"),
            ("_mta-sts.sts.test", "TXT", '"v=STSv1; id=1;"'),
            ("mta-sts.sts.test", "A", "127.0.0.1"),
        ]:
            dns.add(name, rtype, rdata)
        params = {
            "dns_nameservers": dns.address,
            "smtp_tcp_port": str(port),
            "smtp_tls_security_level": "may",
            "smtp_tls_CAfile": str(certs["ca"].cert_path),
        }

        def run_for(directory: str) -> Run:
            run = Run(reactor, config(tmp_path / directory, params))
            run.agent.https_port = https.getHost().port
            run.agent.reconfigure(run.cfg)
            return run

        selfsigned = start(peers, "127.0.0.2", port, tls=server_context(certs["self"]))
        reply = await one(run_for("m1"), tmp_path, "x@sts.test")
        assert (reply.code, reply.text) == (454, "Server certificate not trusted")
        assert selfsigned.got == []
        selfsigned.stop()
        peers.remove(selfsigned)

        signed_cert = issue(tmp_path / "pki", ["mx.sts.test"], certs["ca"], stem="mxsts")
        signed = start(peers, "127.0.0.2", port, tls=server_context(signed_cert))
        run = run_for("m2")
        assert (await one(run, tmp_path, "x@sts.test")).code == 250
        assert signed.got[-1].tls
        assert any(line.startswith("Verified TLS connection established") for line in run.lines)

        policy["text"] = b"version: STSv1\nmode: enforce\nmx: other.example\nmax_age: 86400\n"
        reply = await one(run_for("m3"), tmp_path, "x@sts.test")
        assert reply.is_transient and "MTA-STS policy of sts.test" in reply.text
    finally:
        await https.stopListening()
