"""Address verification: the cache file, expiry and refresh, polling, and a
real probe (MAIL, RCPT, RSET, QUIT — never DATA) against an SMTP sink."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from mta.delivery.route import Router
from mta.policy.verify import (
    AddressVerifier,
    Entry,
    VerifyCache,
    VerifySettings,
    parse_map_spec,
)
from mta.tables.base import TableError

pytestmark = pytest.mark.timeout(30)


def test_map_spec() -> None:
    """File types name the cache file; "" keeps it in memory; others are refused."""

    def resolve(name: str) -> Path:
        return Path(name) if name.startswith("/") else Path("/q") / name

    assert parse_map_spec("btree:verify_cache", resolve) == Path("/q/verify_cache")
    assert parse_map_spec("proxy:hash:/x/y", resolve) == Path("/x/y")
    assert parse_map_spec("", resolve) is None
    assert parse_map_spec("redis:redis.cf", resolve) is None  # shared; memory locally
    with pytest.raises(TableError, match="address_verify_map"):
        parse_map_spec("ldap:cache", resolve)


def test_entry_round_trip() -> None:
    """status:probed:updated:text, text may hold colons."""
    e = Entry("bounce", 1700000000.0, "host x said: 550 5.1.1 no: such", 0.0)
    assert Entry.decode(e.encode()) == e
    assert Entry.decode("weird") is None


async def sleep(seconds: float) -> None:
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)  # type: ignore[attr-defined]
    await d


@pytest_twisted.ensureDeferred
async def test_cache_file_survives_and_compacts(tmp_path: Path) -> None:
    """Entries are appended; a new cache (a restart) reads them, later lines
    winning; compaction rewrites the file without dropped entries."""
    path = tmp_path / "verify_cache"
    cache = VerifyCache(reactor, path)
    cache.put("A@Example.org", Entry("defer", 100.0, "later"))
    cache.put("a@example.org", Entry("ok", 200.0, "250 ok"))
    cache.put("b@example.org", Entry("bounce", 150.0, "550 no"))
    await cache.flush()
    assert len(path.read_text().splitlines()) == 3
    again = VerifyCache(reactor, path)
    assert again.get("a@EXAMPLE.org") == Entry("ok", 200.0, "250 ok")
    await again.compact(lambda e: e.status == "ok")
    assert path.read_text().splitlines() == ["a@example.org\tok:0:200:250 ok"]


def verifier(tmp_path: Path, outcomes: dict[str, tuple[str, str]], **kw: Any) -> AddressVerifier:
    options: dict[str, Any] = {"poll_count": 2, "poll_delay": 1.0, **kw}
    settings = VerifySettings(map_path=tmp_path / "cache", **options)
    v = AddressVerifier(reactor, settings)
    v.probes = []  # type: ignore[attr-defined]

    async def conversation(address: str) -> tuple[str, str]:
        v.probes.append(address)  # type: ignore[attr-defined]
        await sleep(0.05)
        return outcomes[address]

    v._conversation = conversation  # type: ignore[method-assign]
    return v


@pytest_twisted.ensureDeferred
async def test_query_probes_once_and_caches(tmp_path: Path) -> None:
    """The first query waits for the probe; the next answer comes from the
    cache; a temporary failure does not replace a positive result."""
    outcomes = {"ok@x.test": ("ok", "250 ok"), "no@x.test": ("bounce", "550 no")}
    v = verifier(tmp_path, outcomes)
    assert (await v.query("ok@x.test")).status == "ok"
    assert (await v.query("no@x.test")).status == "bounce"
    assert (await v.query("ok@x.test")).status == "ok"
    assert v.probes == ["ok@x.test", "no@x.test"]  # type: ignore[attr-defined]
    v._record("ok@x.test", Entry("defer", reactor.seconds(), "451 later"))  # type: ignore[attr-defined]
    assert v.cache.get("ok@x.test").status == "ok"  # type: ignore[union-attr]
    await v.close()


@pytest_twisted.ensureDeferred
async def test_slow_probe_answers_todo_then_result(tmp_path: Path) -> None:
    """A probe slower than (poll_count-1) * poll_delay: "todo" now, the
    result for the client's retry."""
    v = verifier(tmp_path, {"slow@x.test": ("bounce", "550 no")}, poll_delay=0.0)
    v.settings = replace(v.settings, poll_count=1)
    answer = await v.query("slow@x.test")
    assert answer.status == "todo" and "in progress" in answer.text
    await sleep(0.2)
    assert (await v.query("slow@x.test")).status == "bounce"
    await v.close()


@pytest_twisted.ensureDeferred
async def test_expired_and_refreshed_entries(tmp_path: Path) -> None:
    """Past the refresh time the cached answer is used while a new probe
    runs; past the expiry time it is not used."""
    v = verifier(tmp_path, {"a@x.test": ("ok", "250 again")})
    now = reactor.seconds()  # type: ignore[attr-defined]
    s = v.settings
    v.cache.put("a@x.test", Entry("ok", now - s.positive_refresh - 1, "250 old"))
    assert (await v.query("a@x.test")).text == "250 old"
    await sleep(0.2)
    assert v.probes == ["a@x.test"]  # type: ignore[attr-defined]
    assert v.cache.get("a@x.test").text == "250 again"  # type: ignore[union-attr]
    v.cache.put("a@x.test", Entry("bounce", now - s.negative_expire - 1, "550 old"))
    assert (await v.query("a@x.test")).text == "250 again"
    await v.close()


@pytest_twisted.ensureDeferred
async def test_real_probe_never_sends_data(tmp_path: Path) -> None:
    """A probe to an SMTP server: MAIL and RCPT, then RSET and QUIT; the
    RCPT reply decides; no message arrives."""
    from tests.integration.harness import CaptureSink

    sink = CaptureSink()
    sink.start()
    try:
        settings = VerifySettings(
            map_path=None,
            sender="double-bounce@mta.test",
            router=Router(relayhost=f"[127.0.0.1]:{sink.port}"),
        )
        v = AddressVerifier(reactor, settings)
        good = await v.query("someone@example.net")
        bad = await v.query("reject-me@example.net")
        assert good.status == "ok"
        assert bad.status == "bounce"
        assert "550 5.1.1" in bad.text and "(in reply to RCPT TO command)" in bad.text
        assert sink.messages == []
        await v.close()
    finally:
        sink.stop()
