"""The package as installed: every mta package is listed in setup.cfg (it
names them explicitly because twisted_plugins/ installs as twisted/plugins),
and the default conf/ passes the start-up check with the contract's ports."""

from __future__ import annotations

import configparser
from pathlib import Path

from setuptools import find_packages

from mta.check import full_check

REPO = Path(__file__).resolve().parents[1]


def test_every_mta_package_is_in_setup_cfg() -> None:
    """A new subpackage that setup.cfg forgets would be missing from the
    installed daemon."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    listed = {p.strip() for p in cfg["options"]["packages"].split() if p.strip()}
    found = set(find_packages(str(REPO), include=["mta", "mta.*"]))
    assert found - listed == set()
    assert "twisted.plugins" in listed


def test_default_conf_is_valid_and_listens_where_the_contract_says() -> None:
    """conf/ runs unprivileged from a fresh clone: no errors, SMTP on
    127.0.0.1:2525 and submission on 127.0.0.1:2587 (INTERFACE.md)."""
    cfg, problems = full_check(REPO / "conf")
    assert cfg is not None, [str(p) for p in problems]
    assert not [p for p in problems if p.severity == "error"]
    addresses = {svc.listen_address() for svc in cfg.listeners()}
    assert ("127.0.0.1", 2525) in addresses
    assert ("127.0.0.1", 2587) in addresses
    qdir = cfg.path(cfg.str("queue_directory"))
    assert REPO in qdir.resolve().parents  # writable by the user of the checkout
