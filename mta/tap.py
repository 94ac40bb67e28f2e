"""twistd options and service maker: ``twistd -n mta -c CONFDIR``.

Input: the command line.  Output: the :class:`mta.service.MTAService`, built
only after the configuration passed the whole start-up check — a bad
configuration stops the start with every problem on standard error and a
non-zero exit, in the same words ``mta check`` prints.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from twisted.python import usage


def default_confdir() -> Path:
    """The checkout's ``conf/`` when run from a checkout, else /etc/mta."""
    checkout = Path(__file__).resolve().parent.parent / "conf"
    if (checkout / "main.cf").is_file():
        return checkout
    cwd = Path.cwd() / "conf"
    if (cwd / "main.cf").is_file() and (Path.cwd() / "mta" / "__init__.py").is_file():
        return cwd
    return Path("/etc/mta")


class Options(usage.Options):
    synopsis = "[-c CONFDIR]"
    longdesc = "Run the mta mail transfer agent with CONFDIR/main.cf and master.cf."
    optParameters = [
        ["config-dir", "c", None, "directory holding main.cf and master.cf"],
    ]


def makeService(options: dict[str, Any]) -> Any:
    from twisted.internet import reactor

    from mta.check import full_check
    from mta.service import MTAService

    confdir = Path(options["config-dir"]) if options.get("config-dir") else default_confdir()
    cfg, problems = full_check(confdir)
    for p in problems:
        print(f"mta: {p}", file=sys.stderr)
    if cfg is None:
        print(f"mta: fatal: configuration {confdir} has errors; not starting", file=sys.stderr)
        raise SystemExit(1)
    return MTAService(confdir, cfg, reactor)
