"""Delivery through real DNS and real SMTP peers on loopback.

Each test builds a main.cf, starts an authoritative DNS server for made-up
domains (named in ``dns_nameservers``) and aiosmtpd peers on 127.0.0.x (and
::1), then runs the daemon's DeliveryAgent with the daemon's Router on real
sockets: MX order and fallback, A fallback, null MX, IPv6, transports,
relayhost and the gateway split, the loop check, maildir delivery.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor

from tests.integration.deliverykit import Peer, Run, config, message_file, relay_of, reply_of
from tests.integration.dnsserver import DNSServer
from tests.integration.harness import free_port

reactor: Any = _reactor
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def port() -> int:
    """One port free on every loopback address the peers use."""
    for _ in range(50):
        p = free_port()
        ok = True
        for host in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"):
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
    yield server
    server.stop()


def start(peers: list[Peer], host: str, port: int, **kw: Any) -> Peer:
    p = Peer(host, port, **kw).start()
    peers.append(p)
    return p


@pytest_twisted.ensureDeferred
async def test_mx_order_fallback_a_records_null_mx_and_nxdomain(
    tmp_path: Path, dns: DNSServer, peers: list[Peer], port: int
) -> None:
    """MX hosts are tried by preference: the best one gets the mail; when
    it refuses connections the next one does; a domain without MX gets it
    at its A record; a null MX bounces with 5.1.10 without a connection;
    NXDOMAIN bounces; SERVFAIL defers."""
    best = start(peers, "127.0.0.2", port)
    backup = start(peers, "127.0.0.3", port)
    plain = start(peers, "127.0.0.4", port)
    for name, rr in {
        "order.test": [("MX", "20 mx-b.order.test."), ("MX", "10 mx-a.order.test.")],
        "mx-a.order.test": [("A", "127.0.0.2")],
        "mx-b.order.test": [("A", "127.0.0.3")],
        "down.test": [("MX", "10 dead.down.test."), ("MX", "20 alive.down.test.")],
        "dead.down.test": [("A", "127.0.0.5")],  # nothing listens there
        "alive.down.test": [("A", "127.0.0.3")],
        "a-only.test": [("A", "127.0.0.4")],
        "nullmx.test": [("MX", "0 .")],
    }.items():
        for rtype, rdata in rr:
            dns.add(name, rtype, rdata)
    dns.servfail.add("broken.test.")
    run = Run(
        reactor,
        config(
            tmp_path / "conf",
            {"dns_nameservers": dns.address, "smtp_tcp_port": str(port)},
        ),
    )
    msg = message_file(tmp_path / "msg")
    results = await run.deliver(
        msg,
        [
            "a@order.test",
            "b@down.test",
            "c@a-only.test",
            "d@nullmx.test",
            "e@nx.test",
            "f@broken.test",
        ],
    )
    run.close()
    assert [g.recipients for g in best.got] == [["a@order.test"]]
    assert relay_of(results, "a@order.test") == f"mx-a.order.test[127.0.0.2]:{port}"
    assert relay_of(results, "b@down.test") == f"alive.down.test[127.0.0.3]:{port}"
    assert [g.recipients for g in backup.got] == [["b@down.test"]]
    assert [g.recipients for g in plain.got] == [["c@a-only.test"]]
    null = reply_of(results, "d@nullmx.test")
    assert (null.code, null.status) == (556, "5.1.10")
    assert "does not accept mail (nullMX)" in null.text
    nx = reply_of(results, "e@nx.test")
    assert (nx.code, nx.status) == (550, "5.1.2")
    sf = reply_of(results, "f@broken.test")
    assert sf.is_transient and sf.status == "4.4.3" and "name=broken.test type=MX" in sf.text
    assert dns.queries[("order.test.", "MX")] == 1


@pytest_twisted.ensureDeferred
async def test_ipv6_delivery_to_loopback(tmp_path: Path, dns: DNSServer, peers: list[Peer]) -> None:
    """A domain whose only MX address is AAAA ::1 is delivered over IPv6;
    with inet_protocols = ipv4 it has no usable address and is deferred."""
    try:
        p6 = free_port("::1")
    except OSError:
        pytest.skip("no IPv6 loopback")
    v6 = start(peers, "::1", p6)
    dns.add("v6.test", "MX", "10 mx.v6.test.")
    dns.add("mx.v6.test", "AAAA", "::1")
    msg = message_file(tmp_path / "msg")
    params = {"dns_nameservers": dns.address, "smtp_tcp_port": str(p6)}
    run = Run(reactor, config(tmp_path / "conf", params))
    results = await run.deliver(msg, ["x@v6.test"])
    run.close()
    assert reply_of(results, "x@v6.test").code == 250
    assert relay_of(results, "x@v6.test") == f"mx.v6.test[::1]:{p6}"
    assert [g.recipients for g in v6.got] == [["x@v6.test"]]
    run4 = Run(reactor, config(tmp_path / "conf4", {**params, "inet_protocols": "ipv4"}))
    results = await run4.deliver(msg, ["y@v6.test"])
    run4.close()
    reply = reply_of(results, "y@v6.test")
    assert reply.is_transient and "no MX host for v6.test has a valid address record" in reply.text


@pytest_twisted.ensureDeferred
async def test_transport_maps_relayhost_and_gateway_split(
    tmp_path: Path, dns: DNSServer, peers: list[Peer], port: int
) -> None:
    """relay_domains mail goes to relay_transport's next hop, other mail to
    relayhost; transport_maps overrides both per domain, per subdomain and
    per address, and error:/discard: answer without a connection."""
    internal = start(peers, "127.0.0.2", port)
    smart = start(peers, "127.0.0.3", port)
    special = start(peers, "127.0.0.4", port)
    table = tmp_path / "conf" / "transport"
    table.parent.mkdir(parents=True)
    table.write_text(
        f"special.test smtp:[127.0.0.4]:{port}\n"
        f".sub.test smtp:[127.0.0.4]:{port}\n"
        "boss@corp.test error:5.7.1 the boss reads no mail\n"
        "void.test discard:silently dropped\n"
    )
    run = Run(
        reactor,
        config(
            tmp_path / "conf",
            {
                "dns_nameservers": dns.address,
                "relay_domains": "corp.test",
                "relay_transport": f"relay:[127.0.0.2]:{port}",
                "relayhost": f"[127.0.0.3]:{port}",
                "transport_maps": "texthash:transport",
            },
        ),
    )
    msg = message_file(tmp_path / "msg")
    results = await run.deliver(
        msg,
        [
            "a@corp.test",
            "b@example.net",
            "c@special.test",
            "d@deep.sub.test",
            "boss@corp.test",
            "e@void.test",
        ],
    )
    run.close()
    assert [g.recipients for g in internal.got] == [["a@corp.test"]]
    assert [g.recipients for g in smart.got] == [["b@example.net"]]
    assert sorted(r for g in special.got for r in g.recipients) == [
        "c@special.test",
        "d@deep.sub.test",
    ]
    assert results["a@corp.test"][0].transport == "relay"
    boss = reply_of(results, "boss@corp.test")
    assert (boss.code, boss.status, boss.text) == (550, "5.7.1", "the boss reads no mail")
    void = reply_of(results, "e@void.test")
    assert (void.code, void.text) == (250, "silently dropped")
    assert results["boss@corp.test"][1].service == "error"


@pytest_twisted.ensureDeferred
async def test_mx_pointing_back_at_this_host_is_a_loop(tmp_path: Path, dns: DNSServer) -> None:
    """An MX on port 25 that is one of our own addresses bounces with
    Postfix's 'mail for X loops back to myself' (5.4.6) and no connection."""
    dns.add("loop.test", "MX", "10 me.loop.test.")
    dns.add("me.loop.test", "A", "127.0.0.1")
    run = Run(reactor, config(tmp_path / "conf", {"dns_nameservers": dns.address}))
    results = await run.deliver(message_file(tmp_path / "msg"), ["x@loop.test"])
    run.close()
    reply = reply_of(results, "x@loop.test")
    assert (reply.code, reply.status) == (550, "5.4.6")
    assert reply.text == "mail for loop.test loops back to myself"


@pytest_twisted.ensureDeferred
async def test_virtual_maildir_delivery(tmp_path: Path) -> None:
    """virtual_mailbox_domains mail lands in the maildir that
    virtual_mailbox_maps names (tmp → new, Delivered-To and Return-Path
    first, LF line ends); an unknown user bounces 5.1.1; an mbox path gets
    an mbox."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "vmailbox").write_text("alice@virt.test alice/\nbob@virt.test bob.mbox\n")
    run = Run(
        reactor,
        config(
            conf,
            {
                "virtual_mailbox_domains": "virt.test",
                "virtual_mailbox_maps": "texthash:vmailbox",
                "virtual_mailbox_base": "mail",
            },
        ),
    )
    msg = message_file(tmp_path / "msg", b"Subject: hi\r\n\r\nline\r\nFrom me\r\n")
    results = await run.deliver(msg, ["alice@virt.test", "bob@virt.test", "carol@virt.test"])
    run.close()
    assert reply_of(results, "alice@virt.test").text == "delivered to maildir"
    [delivered] = list((conf / "mail" / "alice" / "new").iterdir())
    assert list((conf / "mail" / "alice" / "tmp").iterdir()) == []
    assert delivered.read_bytes() == (
        b"Return-Path: <sender@example.org>\nDelivered-To: alice@virt.test\n"
        b"Subject: hi\n\nline\nFrom me\n"
    )
    mbox = (conf / "mail" / "bob.mbox").read_bytes()
    assert mbox.startswith(b"From sender@example.org ")
    assert b"\n>From me\n" in mbox
    unknown = reply_of(results, "carol@virt.test")
    assert (unknown.code, unknown.status) == (550, "5.1.1")
    assert results["alice@virt.test"][1].relay == "virtual"
