"""The fleet's node label: every /metrics sample carries ``node`` when
stats_node_name is set, in both exposition formats, and none when it is empty."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from mta.config import load
from mta.stats.metrics import Exposition
from mta.stats.snapshot import take_snapshot
from tests.stats.test_snapshot import sources


def test_every_sample_has_the_node_label() -> None:
    """node="mx2" on every sample, other labels kept (text and OpenMetrics)."""
    snap = replace(take_snapshot(sources(), now=5000.0), node="mx2")
    body, _ = Exposition(lambda: snap).render("")
    found = [s for f in text_string_to_metric_families(body.decode()) for s in f.samples]
    assert found and all(s.labels.get("node") == "mx2" for s in found)
    assert any(s.labels == {"node": "mx2", "kind": "accepted"} for s in found)
    body, _ = Exposition(lambda: snap).render("application/openmetrics-text")
    found = [s for f in openmetrics_families(body.decode()) for s in f.samples]
    assert found and all(s.labels.get("node") == "mx2" for s in found)


def test_empty_node_name_means_no_label() -> None:
    """stats_node_name = (empty): the series look as before."""
    snap = take_snapshot(sources(), now=5000.0)
    body, _ = Exposition(lambda: snap).render("")
    found = [s for f in text_string_to_metric_families(body.decode()) for s in f.samples]
    assert found and not any("node" in s.labels for s in found)


def test_default_is_off_and_expands(tmp_path: Path) -> None:
    """stats_node_name is empty by default (the contract's bare series);
    $myhostname expands; any name can be given."""
    (tmp_path / "main.cf").write_text("myhostname = mx7.example.com\n")
    assert load(tmp_path).str("stats_node_name") == ""
    text = "myhostname = mx7.example.com\nstats_node_name = $myhostname\n"
    (tmp_path / "main.cf").write_text(text)
    assert load(tmp_path).str("stats_node_name") == "mx7.example.com"
    (tmp_path / "main.cf").write_text("myhostname = mx7.example.com\nstats_node_name = b\n")
    assert load(tmp_path).str("stats_node_name") == "b"
