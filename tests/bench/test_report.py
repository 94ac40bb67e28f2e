"""Medians and tables of the benchmark report (bench/report.py)."""

from __future__ import annotations

from bench.report import medians, ratio, table
from bench.scenarios import SCENARIOS


def test_medians_skip_runs_that_did_not_measure_a_figure() -> None:
    """A run with an error (None) does not drag the median; strings are no figures."""
    runs = [
        {"accepted_per_s": 100.0, "error": "x"},
        {"accepted_per_s": 300.0},
        {"accepted_per_s": None},
        {"accepted_per_s": 200.0, "note": "y"},
    ]
    assert medians(runs) == {"accepted_per_s": 200.0}


def test_ratio_is_mta_over_postfix_and_dash_when_unknown() -> None:
    """The ratio column divides mta's figure by Postfix's."""
    assert ratio(300.0, 150.0) == "2.00x"
    assert ratio(None, 150.0) == "-"
    assert ratio(1.0, 0.0) == "-"


def test_table_shows_both_servers_the_ratio_and_errors() -> None:
    """One line per figure with both medians and the ratio; a failed run is listed."""
    sc = SCENARIOS["relay-1k-s20-conn"]
    results = {
        "postfix": [{"accepted_per_s": 400.0, "end_to_end_per_s": 380.0, "cpu_ms_per_msg": 2.0}],
        "mta": [{"accepted_per_s": 600.0, "cpu_ms_per_msg": 1.0, "error": "sink got 5 of 10"}],
    }
    text = table(sc, results, 2000)
    lines = text.splitlines()
    assert lines[0].startswith("== relay-1k-s20-conn:") and "2000 messages" in lines[0]
    accepted = next(line for line in lines if line.strip().startswith("accepted messages/s"))
    assert accepted.split()[-3:] == ["400.0", "600.0", "1.50x"]
    e2e = next(line for line in lines if line.strip().startswith("end-to-end"))
    assert e2e.split()[-3:] == ["380.0", "-", "-"]
    cpu = next(line for line in lines if line.strip().startswith("CPU ms"))
    assert cpu.split()[-3:] == ["2.00", "1.00", "0.50x"]
    assert "  error: mta run 1: sink got 5 of 10" in lines


def test_every_default_scenario_is_bounded_and_has_figures() -> None:
    """Each scenario run by default names its figures and a finite message count,
    and the quick one is among the load scenarios."""
    for sc in SCENARIOS.values():
        assert sc.figures, sc.name
        assert 0 < sc.messages <= 10_000, sc.name
        if sc.size >= 1_000_000:
            assert sc.messages * sc.size <= 400_000_000, sc.name
    assert SCENARIOS["relay-1k-s20-conn"].kind == "load"


def test_table_warns_when_other_processes_disturbed_a_run() -> None:
    """A run during which other processes used much of the machine is flagged,
    a quiet one is not."""
    sc = SCENARIOS["accept-1k-s20-conn"]
    results = {
        "postfix": [{"accepted_per_s": 400.0, "other_cpu_pct": 2.0}],
        "mta": [{"accepted_per_s": 300.0, "other_cpu_pct": 35.0}],
    }
    text = table(sc, results, 2000)
    assert "warning: mta run 1: other processes used 35% of the machine" in text
    assert "warning: postfix" not in text
