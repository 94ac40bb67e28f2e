"""A small authoritative DNS server for tests, on loopback UDP (and TCP).

Records are given as ``{name: [(type, rdata text), ...]}``; a name in
``servfail`` answers SERVFAIL; a name in ``secure`` gets the AD flag, as if
a validating resolver had checked it (the daemon trusts AD from the server
named in ``dns_nameservers`` when ``smtp_dns_support_level = dnssec``).
A name with no records is NXDOMAIN; a known name without the asked type is
an empty NOERROR answer.  Started on a free port in a thread; ``stop()``
ends it.  Queries are counted per (name, type) for cache tests.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections import Counter
from collections.abc import Iterable

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

TTL = 60


class DNSServer:
    def __init__(
        self,
        records: dict[str, list[tuple[str, str]]] | None = None,
        *,
        secure: Iterable[str] = (),
        servfail: Iterable[str] = (),
        host: str = "127.0.0.1",
    ) -> None:
        self.records: dict[str, list[tuple[str, str]]] = {}
        for name, rrs in (records or {}).items():
            self.records[_norm(name)] = list(rrs)
        self.secure = {_norm(n) for n in secure}
        self.servfail = {_norm(n) for n in servfail}
        self.queries: Counter[tuple[str, str]] = Counter()
        self.host = host
        server = self

        class UDPHandler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = server.answer(data)
                if reply is not None:
                    sock.sendto(reply, self.client_address)

        self._udp = socketserver.ThreadingUDPServer((host, 0), UDPHandler)
        self._udp.daemon_threads = True
        self.port = int(self._udp.server_address[1])
        self._thread = threading.Thread(target=self._udp.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        """The ``dns_nameservers`` value for this server."""
        return f"{self.host}:{self.port}" if ":" not in self.host else f"[{self.host}]:{self.port}"

    def add(self, name: str, rtype: str, rdata: str) -> None:
        self.records.setdefault(_norm(name), []).append((rtype.upper(), rdata))

    def start(self) -> DNSServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._udp.shutdown()
        self._udp.server_close()

    def answer(self, data: bytes) -> bytes | None:
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        name = _norm(question.name.to_text())
        rtype = dns.rdatatype.to_text(question.rdtype)
        self.queries[(name, rtype)] += 1
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()
        wants_ad = bool(query.flags & dns.flags.AD) or bool(query.ednsflags & dns.flags.DO)
        if name in self.secure and wants_ad:
            response.flags |= dns.flags.AD
        rrs = self.records.get(name)
        if rrs is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response.to_wire()
        matching = [rdata for t, rdata in rrs if t == rtype]
        if matching:
            rrset = dns.rrset.from_text_list(question.name, TTL, dns.rdataclass.IN, rtype, matching)
            response.answer.append(rrset)
        wire = response.to_wire(max_size=65535)
        if len(wire) > 512 and not query.edns >= 0:
            response.flags |= dns.flags.TC
            response.answer = []
            wire = response.to_wire()
        return wire


def _norm(name: str) -> str:
    return name.lower().rstrip(".") + "."


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
