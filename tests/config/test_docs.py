"""Tests of mta.config.docs: the generated configuration reference."""

from __future__ import annotations

from pathlib import Path

from mta.config.docs import render
from mta.config.parameters import PARAMETERS

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_committed_reference_is_up_to_date() -> None:
    """docs/configuration.md is exactly what the table generates; regenerate with
    `python -m mta.config.docs > docs/configuration.md`."""
    assert DOC.read_text(encoding="utf-8") == render()


def test_reference_lists_every_parameter_with_its_doc() -> None:
    """Each parameter has a row with its name and its one-line doc."""
    text = render()
    for name, parameter in PARAMETERS.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
        assert parameter.doc.replace("|", "\\|") in row


def test_extensions_are_marked() -> None:
    """mta's own parameters are marked as extensions."""
    row = next(line for line in render().splitlines() if line.startswith("| `stats_listen` |"))
    assert "mta extension" in row
