"""A fleet on loopback: Debian's haproxy in front of two mta nodes that
share address verification in a real redis-server.

Shows, through HAProxy (PROXY v2, smtpchk health checks with the PROXY
header): each node logs and decides on the real client address
(mynetworks, an access table, a DNSBL); a client's message rate is counted across
both nodes in Redis; a connection that skips the proxy gets no greeting; a
result verified by one node is answered from Redis by the other; a node
told to stop mid-transaction finishes it while ``mta status`` says
"draining" and new sessions go to the other node; a node stopped under
load loses no accepted message while the health check moves traffic to the
other; a hung Redis stalls no session.  The /metrics of each node carries
its node label.
"""

from __future__ import annotations

import re
import smtplib
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from email.parser import BytesParser
from pathlib import Path

import pytest

from tests.integration.dnsserver import DNSServer
from tests.integration.fleetkit import HAProxy, ProbeTarget, RedisServer
from tests.integration.harness import CaptureSink, Daemon, free_port, smtp_send, wait_for

pytestmark = pytest.mark.timeout(120)


def message(msgid: str) -> bytes:
    return (
        f"From: a@client.test\r\nTo: b@example.net\r\nSubject: fleet\r\n"
        f"Message-ID: <{msgid}@fleet.test>\r\n\r\nbody {msgid}\r\n"
    ).encode()


class Fleet:
    def __init__(self, tmp: Path, make_daemon: Callable[..., Daemon], capture: CaptureSink):
        self.capture = capture
        self.probe = ProbeTarget()
        self.probe.start()
        self.dns = DNSServer({"77.0.0.127.rbl.test": [("A", "127.0.0.2")]}).start()
        self.redis = RedisServer(tmp / "redis")
        self.redis.start()
        cf = self.redis.cf(tmp / "redis.cf", timeout="300ms", retry_after="2s")
        (tmp / "clients.cidr").write_text("127.0.0.66/32 REJECT blocked by fleet test\n")
        self.nodes: list[Daemon] = []
        self.stats_ports: list[int] = []
        for i in (1, 2):
            port, stats = free_port(), free_port()
            self.stats_ports.append(stats)
            master = (
                f"127.0.0.1:{port} inet n - n - - smtpd\n"
                "  -o smtpd_upstream_proxy_protocol=haproxy\n"
            )
            params = {
                "myhostname": f"node{i}.fleet.test",
                "mynetworks": "127.0.0.1/32",
                "relay_domains": "example.net",
                "relayhost": f"[127.0.0.1]:{capture.port}",
                "address_verify_relayhost": f"[127.0.0.1]:{self.probe.port}",
                "address_verify_map": f"redis:{cf}",
                "address_verify_poll_delay": "1s",
                "unverified_recipient_reject_code": "550",
                "smtpd_client_restrictions": (
                    f"check_client_access cidr:{tmp / 'clients.cidr'}, reject_rbl_client rbl.test"
                ),
                "dns_nameservers": self.dns.address,
                "smtpd_recipient_restrictions": "permit_mynetworks, reject_unverified_recipient",
                "stats_listen": f"127.0.0.1:{stats}",
                "stats_node_name": f"node{i}",
                "anvil_rate_map": f"redis:{cf}",
                "anvil_rate_time_unit": "3600s",
                "smtpd_client_message_rate_limit": "7",
            }
            node = make_daemon(params, master)
            node.port = port
            node.start()
            self.nodes.append(node)
        self.haproxy = HAProxy(tmp / "haproxy", [n.port for n in self.nodes])
        self.haproxy.start()
        wait_for(
            lambda: set(self.haproxy.status().values()) == {"UP"}, 10, "both nodes UP in haproxy"
        )

    def send(self, source: str, rcpt: str, msgid: str) -> tuple[int, bytes]:
        return smtp_send(self.haproxy.port, "a@client.test", [rcpt], message(msgid), source=source)

    def close(self) -> None:
        self.haproxy.stop()
        for n in self.nodes:
            n.stop()
        if self.redis.proc is not None and self.redis.proc.poll() is None:
            self.redis.resume()
        self.redis.stop()
        self.probe.stop()
        self.dns.stop()


@pytest.fixture
def fleet(
    tmp_path: Path, make_daemon: Callable[..., Daemon], capture: CaptureSink
) -> Iterator[Fleet]:
    f = Fleet(tmp_path, make_daemon, capture)
    yield f
    f.close()


def clients_in(node: Daemon) -> set[str]:
    return set(re.findall(r"client=\S*\[([0-9.]+)\]", node.log_text()))


def captured_ids(capture: CaptureSink) -> set[str]:
    out = set()
    for m in capture.messages:
        msgid = BytesParser().parsebytes(m.data)["Message-ID"] or ""
        out.add(msgid.strip("<>").split("@")[0])
    return out


def test_fleet(fleet: Fleet) -> None:
    """The whole fleet story, in phases that share one set-up."""
    node1, node2 = fleet.nodes

    # 1. Real client addresses, round robin over both nodes.
    sources = [f"127.0.0.{i}" for i in range(2, 8)]
    for n, src in enumerate(sources):
        code, _ = fleet.send(src, "ok@example.net", f"real{n}")
        assert code == 250
    seen1, seen2 = clients_in(node1), clients_in(node2)
    assert seen1 and seen2 and seen1 | seen2 == set(sources)
    assert "127.0.0.1" not in seen1 | seen2  # never haproxy's own address

    # 2. Decisions on the real address: the access table and mynetworks.
    code, text = fleet.send("127.0.0.66", "ok@example.net", "blocked")
    assert code == 554 and b"blocked by fleet test" in text
    code, _ = fleet.send("127.0.0.1", "x@elsewhere.test", "trusted")  # in mynetworks
    assert code == 250
    code, text = fleet.send("127.0.0.8", "x@elsewhere.test", "untrusted")
    assert code == 554 and b"Relay access denied" in text
    code, text = fleet.send("127.0.0.77", "ok@example.net", "listed")  # in the DNSBL
    assert code == 554 and b"[127.0.0.77] blocked using rbl.test" in text
    logs = node1.log_text() + node2.log_text()
    assert "[127.0.0.66]: 554" in logs and "[127.0.0.8]: 554" in logs
    assert "[127.0.0.77]: 554" in logs

    # 2b. The message rate limit counts the client on both nodes together.
    codes = []
    for _n in range(9):
        with smtplib.SMTP("127.0.0.1", fleet.haproxy.port, source_address=("127.0.0.40", 0)) as c:
            c.ehlo("rate.test")
            codes.append(c.mail("a@client.test"))
    # Alternating nodes each see 4-5 alone; the fleet's count (as each node
    # learnt it at its previous event) passes 7 at the ninth MAIL.
    assert [code for code, _ in codes] == [250] * 8 + [450]
    assert b"too much mail from 127.0.0.40" in codes[-1][1]

    # 3. A connection that skips the proxy gets no SMTP at all.
    with socket.create_connection(("127.0.0.1", node1.port), timeout=10) as s:
        s.sendall(b"EHLO direct.test\r\n")
        assert s.recv(1024) == b""

    # 4. Verified by one node, answered from Redis by the other.
    for n in range(3):  # round robin: three sessions in a row reach both nodes
        assert fleet.send("127.0.0.9", "shared@example.net", f"shared{n}")[0] == 250
    for n in range(3):
        assert fleet.send("127.0.0.9", "reject-shared@example.net", f"rs{n}")[0] == 550
    assert fleet.probe.rcpts["shared@example.net"] == 1
    assert fleet.probe.rcpts["reject-shared@example.net"] == 1
    for node in (node1, node2):
        wait_for(lambda n=node: "to=<shared@example.net>" in n.log_text(), 15, "delivery")
        assert "550 5.1.1 <reject-shared@example.net>" in node.log_text()
    stored = fleet.redis.get("test:verify:shared@example.net")
    assert stored is not None and stored.startswith("ok:")

    # 5a. Drain: node2 told to stop mid-transaction finishes it; new sessions
    # go to node1 meanwhile; `mta status` says it is draining.
    with socket.create_connection(("127.0.0.1", node2.port), timeout=15) as s:
        f = s.makefile("rwb")
        f.write(b"PROXY TCP4 127.0.0.30 127.0.0.1 40000 25\r\n")
        f.flush()
        assert f.readline().startswith(b"220 ")
        for line, code in (
            (b"EHLO drain.test", b"250 "),
            (b"MAIL FROM:<a@client.test>", b"250"),
            (b"RCPT TO:<ok@example.net>", b"250"),
            (b"DATA", b"354"),
        ):
            f.write(line + b"\r\n")
            f.flush()
            reply = f.readline()
            while reply[3:4] == b"-":
                reply = f.readline()
            assert reply.startswith(code), (line, reply)
        f.write(message("drained").split(b"\r\n\r\n")[0] + b"\r\n\r\n")
        f.flush()
        node2.signal(15)
        wait_for(lambda: node2.mta("status").returncode == 2, 10, "node2 draining")
        assert "draining" in node2.mta("status").stdout
        wait_for(lambda: fleet.haproxy.status().get("node2") == "DOWN", 10, "node2 DOWN")
        before = clients_in(node1)
        assert fleet.send("127.0.0.31", "ok@example.net", "during-drain")[0] == 250
        assert "127.0.0.31" in clients_in(node1) - before
        f.write(b"the end\r\n.\r\n")
        f.flush()
        assert f.readline().startswith(b"250 ")
    assert node2.proc is not None
    node2.proc.wait(15)
    assert node2.mta("status").returncode == 1
    node2.proc = None
    node2.start()
    wait_for(lambda: fleet.haproxy.status().get("node2") == "UP", 10, "node2 UP again")
    wait_for(lambda: {"drained", "during-drain"} <= captured_ids(fleet.capture), 20, "drained")

    # 5. Stop node2 mid-load: nothing accepted is lost; haproxy moves traffic.
    accepted: list[str] = []
    lock = threading.Lock()

    def client(src: str, count: int) -> None:
        for k in range(count):
            msgid = f"load-{src}-{k}"
            for _attempt in range(5):
                try:  # one source address per message: under the rate limit
                    code, _ = fleet.send(f"{src}.{k + 1}", "ok@example.net", msgid)
                except (OSError, AssertionError):
                    code = 0
                if code == 250:
                    with lock:
                        accepted.append(msgid)
                    break
                time.sleep(0.3)

    threads = [threading.Thread(target=client, args=(f"127.0.{20 + i}", 12)) for i in range(3)]
    for t in threads:
        t.start()
    wait_for(lambda: len(accepted) >= 8, 30, "load under way")
    node2.stop()
    wait_for(lambda: fleet.haproxy.status().get("node2") == "DOWN", 10, "node2 DOWN in haproxy")
    for t in threads:
        t.join(60)
    assert len(accepted) == 36  # every message was accepted by some node
    node2.start()  # its queue is delivered after the restart
    wait_for(lambda: set(accepted) <= captured_ids(fleet.capture), 30, "every accepted message")
    assert "terminating on signal 15" in node2.log_text()

    # 6. Redis hung mid-load: sessions finish in bounded time from local state.
    fleet.redis.pause()
    for n in range(3):
        started = time.monotonic()
        code, _ = fleet.send("127.0.0.10", f"fresh{n}@example.net", f"fresh{n}")
        assert code == 250 and time.monotonic() - started < 5
    assert "using local state" in node1.log_text() + node2.log_text()

    # 7. Metrics carry the node label.
    for i, port in enumerate(fleet.stats_ports, start=1):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            body = r.read().decode()
        assert f'mta_mqueue_messages{{node="node{i}"}}' in body
