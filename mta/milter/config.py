"""main.cf → the frozen milter settings of a service.

Job: read ``smtpd_milters`` / ``non_smtpd_milters``, the ``milter_*``
timeouts, default action, protocol version and macro lists.
Inputs: a ``Config``.  Outputs: ``MilterSettings``; a bad milter entry
raises ValueError (reported by the start-up check).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mta.config.model import Config
from mta.milter.client import MilterSpec, parse_milters
from mta.milter.protocol import macro_names
from mta.milter.session import MacroLists


@dataclass(frozen=True)
class MilterSettings:
    """The filters of one service, in order, and the macros they get."""

    specs: tuple[MilterSpec, ...] = ()
    macros: MacroLists = field(default_factory=MacroLists)
    daemon_name: str = ""  # milter_macro_daemon_name: {daemon_name}
    v: str = ""  # milter_macro_v: v

    @property
    def active(self) -> bool:
        return bool(self.specs)


def milter_settings(cfg: Config, parameter: str = "smtpd_milters") -> MilterSettings:
    """The milters of ``parameter`` (smtpd_milters or non_smtpd_milters)."""
    specs = parse_milters(
        cfg.str(parameter),
        connect_timeout=float(cfg.time("milter_connect_timeout")),
        command_timeout=float(cfg.time("milter_command_timeout")),
        content_timeout=float(cfg.time("milter_content_timeout")),
        default_action=cfg.str("milter_default_action"),
        protocol=cfg.int("milter_protocol"),
    )
    macros = MacroLists(
        connect=macro_names(cfg.str("milter_connect_macros")),
        helo=macro_names(cfg.str("milter_helo_macros")),
        mail=macro_names(cfg.str("milter_mail_macros")),
        rcpt=macro_names(cfg.str("milter_rcpt_macros")),
        data=macro_names(cfg.str("milter_data_macros")),
        end_of_header=macro_names(cfg.str("milter_end_of_header_macros")),
        end_of_data=macro_names(cfg.str("milter_end_of_data_macros")),
    )
    return MilterSettings(
        specs=tuple(specs),
        macros=macros,
        daemon_name=cfg.str("milter_macro_daemon_name"),
        v=cfg.str("milter_macro_v"),
    )
