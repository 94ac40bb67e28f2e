"""Configuration: main.cf and master.cf in Postfix syntax, one parameter table, and the
frozen ``Config`` that the rest of mta reads.

Modules: ``syntax`` (lines, ``$name`` expansion, lists), ``parameters`` (the table),
``postfix_names`` (every Postfix parameter name), ``master`` (services), ``model``
(``load``/``check`` -> ``Config``), ``edit`` (postconf output and ``postconf -e``),
``docs`` (the generated reference). Nothing is read at import time.
"""

from mta.config.edit import EditError, edit_main_cf, postconf_lines
from mta.config.master import MasterService, default_services, parse_master_cf
from mta.config.model import Config, ConfigError, check, load, read
from mta.config.parameters import GROUPS, PARAMETERS, Parameter
from mta.config.syntax import Problem, Setting, expand, split_list, unbrace

__all__ = [
    "GROUPS",
    "PARAMETERS",
    "Config",
    "ConfigError",
    "EditError",
    "MasterService",
    "Parameter",
    "Problem",
    "Setting",
    "check",
    "default_services",
    "edit_main_cf",
    "expand",
    "load",
    "parse_master_cf",
    "postconf_lines",
    "read",
    "split_list",
    "unbrace",
]
