"""Tests of mta.stats.page: the HTML page shows the figures and escapes the network's text."""

from __future__ import annotations

import html.parser

from mta.envelope import Envelope, RcptState, Recipient
from mta.reply import Reply
from mta.stats.counters import Counters
from mta.stats.page import render_page
from mta.stats.snapshot import Sources, take_snapshot
from tests.stats.test_snapshot import FakeManager, sources


class Cards(html.parser.HTMLParser):
    """The text of each element with an id (the counter cards, the sections)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str | None] = []
        self.text: dict[str, str] = {}
        self.meta: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "meta":
            self.meta.append(dict(attrs))
            return
        if tag in ("br",):
            return
        ident = dict(attrs).get("id")
        self.stack.append(ident)
        if ident:
            self.text[ident] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag not in ("meta", "br") and self.stack:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        for ident in self.stack:
            if ident:
                self.text[ident] += data


def parse(page: bytes) -> Cards:
    cards = Cards()
    cards.feed(page.decode("utf-8"))
    return cards


def test_page_shows_counters_sections_and_refreshes() -> None:
    """The three appliance counters and the disk figure are in their cards; the
    queue, destinations, oldest deferred and warnings are on the page; it
    refreshes itself."""
    page = render_page(take_snapshot(sources(), now=5000.0))
    cards = parse(page)
    assert cards.text["mqueue_messages"] == "Mqueue messages5"
    assert cards.text["mqueue_kbytes"] == "Mqueue Kbytes4"
    assert cards.text["smtp_active_sessions"] == "SMTP active sessions2"
    assert cards.text["disk_free_percent"] == "Disk free3.5 %"
    assert "deferred3" in cards.text["queue"].replace(" ", "")
    assert "b.example" in cards.text["destinations"]
    assert "451 4.3.0 try z@a.example later" in cards.text["oldest"]
    assert b"Data volume has less than 5% of free disk space" in page
    assert {"http-equiv": "refresh", "content": "10"} in cards.meta
    assert b"<script" not in page


def test_text_from_the_network_is_escaped() -> None:
    """A sender address or a remote reply cannot inject markup."""
    evil = '<script>alert("x")</script>@evil.example'
    env = Envelope(
        "Q1",
        evil,
        [Recipient("a@b.example", RcptState.DEFERRED, Reply(451, "3.0", "<b>bold</b> & co"))],
        1.0,
    )
    src = Sources(Counters(), manager=FakeManager([env]))
    page = render_page(take_snapshot(src, now=2.0)).decode()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt; &amp; co" in page
