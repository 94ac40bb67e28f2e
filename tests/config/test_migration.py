"""Tests of mta.config.migration: the Postfix migration guide cannot drift from the code."""

from __future__ import annotations

from pathlib import Path

from mta.config.migration import render
from mta.config.parameters import PARAMETERS
from mta.config.postfix_names import POSTFIX_NAMES

DOC = Path(__file__).resolve().parents[2] / "docs" / "migrating-from-postfix.md"


def test_committed_guide_is_up_to_date() -> None:
    """docs/migrating-from-postfix.md is what the code generates; regenerate with
    `python -m mta.config.migration > docs/migrating-from-postfix.md`."""
    assert DOC.read_text(encoding="utf-8") == render(), (
        "out of date: python -m mta.config.migration > docs/migrating-from-postfix.md"
    )


def test_every_postfix_name_is_listed_once_as_supported_or_not() -> None:
    """Each Postfix parameter appears in exactly one of the two lists, and each
    mta parameter in the supported or the extension table."""
    text = render()
    supported = text.split("## Supported Postfix parameters", 1)[1].split("## mta extensions")[0]
    extensions = text.split("## mta extensions", 1)[1].split("## Unsupported")[0]
    unsupported = text.split("## Unsupported Postfix parameters", 1)[1].split("## Appliance")[0]
    for name in POSTFIX_NAMES:
        in_supported = f"| `{name}` |" in supported
        in_unsupported = f"`{name}`" in unsupported
        assert in_supported != in_unsupported, name
        assert in_supported == (name in PARAMETERS and not PARAMETERS[name].extension), name
    for name, parameter in PARAMETERS.items():
        table = extensions if parameter.extension else supported
        assert f"| `{name}` |" in table, name
