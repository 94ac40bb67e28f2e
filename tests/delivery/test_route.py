"""Tests for mta.delivery.route and mta.delivery.transport: address
classes, relayhost, *_transport, transport_maps search order, master.cf
transports."""

from __future__ import annotations

from pathlib import Path

from mta.config.master import parse_master_cf
from mta.delivery.route import Route, Router
from mta.delivery.transport import TransportMap, Transports, split_transport
from mta.tables import open_table
from mta.tables.matchlist import DomainList


def domains(*names: str) -> DomainList:
    return DomainList(names, parent_matches_subdomains=False, base_dir=Path("."))


def inline(text: str) -> TransportMap:
    return TransportMap((open_table(f"inline:{{{text}}}", base_dir=Path(".")),))


def texthash(tmp_path: Path, text: str) -> TransportMap:
    (tmp_path / "transport").write_text(text)
    return TransportMap((open_table("texthash:transport", base_dir=tmp_path),))


def test_default_is_mx_to_the_recipient_domain() -> None:
    """Without relayhost a remote recipient goes by smtp to its domain's MX."""
    assert Router().route("u@Example.NET") == Route(
        "smtp", "example.net", 25, True, "smtp", "example.net"
    )


def test_relayhost_brackets_and_ports() -> None:
    """[host]:port suppresses MX lookup; host:port keeps it (Postfix meaning)."""
    r = Router(relayhost="[smart.example]:587").route("u@example.net")
    assert (r.host, r.port, r.use_mx, r.transport) == ("smart.example", 587, False, "smtp")
    r = Router(relayhost="isp.example:2525").route("u@example.net")
    assert (r.host, r.port, r.use_mx) == ("isp.example", 2525, True)


def test_gateway_split_relay_domains_and_default() -> None:
    """relay_domains mail goes to relay_transport's own next hop, the rest
    to relayhost; the route keys differ, so concurrency is counted apart."""
    router = Router(
        relayhost="[out.example]",
        relay_domains=domains("corp.example"),
        relay_transport="relay:[in.corp.example]",
    )
    inside, outside = router.route("a@corp.example"), router.route("b@else.example")
    assert (inside.transport, inside.host, inside.use_mx) == ("relay", "in.corp.example", False)
    assert (outside.transport, outside.host) == ("smtp", "out.example")
    assert inside.key != outside.key


def test_relay_domains_without_own_next_hop_use_relayhost() -> None:
    """relay_transport = relay (no next hop): relayhost applies to it too."""
    router = Router(relayhost="[out.example]", relay_domains=domains("corp.example"))
    r = router.route("a@corp.example")
    assert (r.transport, r.host) == ("relay", "out.example")


def test_virtual_and_local_classes() -> None:
    """virtual_mailbox_domains use virtual_transport; mydestination uses
    local_transport (which mta only knows as a deferral)."""
    router = Router(
        mydestination=domains("host.example"), virtual_mailbox_domains=domains("v.example")
    )
    assert router.route("a@v.example").command == "virtual"
    local = router.route("a@host.example")
    assert (local.transport, local.command) == ("local", "local")


def test_transport_maps_search_order(tmp_path: Path) -> None:
    """Full address beats domain beats .parent beats *; an empty transport
    or next hop keeps the address class's."""
    table = texthash(
        tmp_path,
        "a@x.example error:5.1.1 gone\nx.example smtp:[x-relay]:26\n"
        ".y.example lmtp:inet:store:24\n* :[catchall]\nz.example relay:\n",
    )
    router = Router(transport_maps=table, relayhost="[rh]")
    assert router.route("a@x.example") == Route("error", "", 0, False, "error", "5.1.1 gone")
    r = router.route("b@x.example")
    assert (r.host, r.port, r.use_mx) == ("x-relay", 26, False)
    r = router.route("c@deep.y.example")
    assert (r.command, r.host, r.port) == ("lmtp", "store", 24)
    assert router.route("d@y.example").host == "catchall"  # .y.example: subdomains only
    r = router.route("e@z.example")
    assert (r.transport, r.host) == ("relay", "rh")


def test_lmtp_unix_next_hop_and_bad_next_hop() -> None:
    """lmtp:unix:/path connects to a socket; a bad next hop is a route
    that defers with the reason, not an exception in the queue manager."""
    router = Router(transport_maps=inline("s.example=lmtp:unix:/run/lmtp, b.example=smtp:[x"))
    r = router.route("u@s.example")
    assert (r.command, r.host, r.unix) == ("lmtp", "/run/lmtp", True)
    bad = router.route("u@b.example")
    assert bad.command == "invalid" and "missing ']'" in bad.nexthop


def test_master_cf_transports_and_unknown_transport() -> None:
    """A master.cf unix service running smtp is a transport of its own;
    an unknown transport name has no agent."""
    services, problems = parse_master_cf(
        "fast unix - - n - - smtp -o smtp_connect_timeout=5s\n", "master.cf"
    )
    assert not [p for p in problems if p.severity == "error"]
    transports = Transports.from_master(services)
    assert transports.command("fast") == "smtp"
    assert transports.command("relay") == "smtp"
    assert transports.command("nosuch") is None
    assert (
        Router(transports=transports, default_transport="nosuch").route("a@b.example").command == ""
    )


def test_split_transport() -> None:
    """transport:nexthop with either side empty; the next hop keeps colons."""
    assert split_transport("smtp:[h]:25") == ("smtp", "[h]:25")
    assert split_transport(":[h]") == ("", "[h]")
    assert split_transport("relay") == ("relay", "")
