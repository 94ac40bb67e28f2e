"""Tests of mta.stats.metrics: the Prometheus exposition parses and agrees with JSON."""

from __future__ import annotations

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from mta.stats.metrics import Exposition
from mta.stats.snapshot import take_snapshot
from tests.stats.test_snapshot import sources


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_text_format_parses_with_help_and_values() -> None:
    """The 0.0.4 text parses with prometheus_client's parser; every family has a
    help text; the values are the snapshot's."""
    snap = take_snapshot(sources(), now=5000.0)
    body, content_type = Exposition(lambda: snap).render("")
    assert content_type.startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert 'mta_totals{kind="accepted"} 7.0' in text.splitlines()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {"mta_mqueue_messages", "mta_mqueue_kbytes", "mta_smtp_active_sessions"} <= set(families)
    assert {"mta_queue", "mta_totals", "mta_rejects", "mta_disk_free_percent"} <= set(families)
    assert all(f.documentation for f in families.values())
    assert families["mta_totals"].type == "unknown"  # the contract's sample names
    got = samples(text)
    assert got[("mta_mqueue_messages", ())] == 5
    assert got[("mta_mqueue_kbytes", ())] == 4
    assert got[("mta_smtp_active_sessions", ())] == 2
    assert got[("mta_queue", (("state", "deferred"),))] == 3
    assert got[("mta_totals", (("kind", "accepted"),))] == 7
    assert got[("mta_rejects", (("reason", "reject_unauth_destination"),))] == 2
    assert got[("mta_disk_free_percent", ())] == 3.46
    assert got[("mta_oldest_deferred_age_seconds", ())] == 4000


def test_openmetrics_carries_units() -> None:
    """A scraper that asks for OpenMetrics gets the units as well."""
    snap = take_snapshot(sources(), now=5000.0)
    body, content_type = Exposition(lambda: snap).render(
        "application/openmetrics-text; version=1.0.0"
    )
    assert content_type.startswith("application/openmetrics-text")
    families = {f.name: f for f in openmetrics_families(body.decode())}
    assert families["mta_mqueue_kbytes"].unit == "kbytes"
    assert families["mta_mqueue_bytes"].unit == "bytes"
    assert families["mta_disk_free_percent"].unit == "percent"
    assert families["mta_oldest_deferred_age_seconds"].unit == "seconds"
