"""The whole start-up check: what ``mta check``, the daemon's start and every
reload run before they accept a configuration.

Input: a configuration directory.  Output: the Config (or None) and every
problem found, in order — syntax and values (:mod:`mta.config`), then what
only building the runtime settings finds (restriction names, lookup tables,
listener addresses), then paths the daemon needs.  A problem of severity
"error" stops the daemon, or makes a reload keep the old configuration.
"""

from __future__ import annotations

import os
from pathlib import Path

from mta import settings
from mta.config import Config, Problem, check
from mta.config.properties import check_volumes, read_properties
from mta.milter.config import milter_settings
from mta.stats.options import check as stats_check


def full_check(confdir: Path) -> tuple[Config | None, list[Problem]]:
    cfg, problems = check(confdir)
    if cfg is None:
        return None, problems
    main_cf = str(cfg.main_cf)
    errors: list[Problem] = []

    def error(message: str) -> None:
        errors.append(Problem(main_cf, None, "error", message))

    try:
        settings.manager(cfg)
        settings.delivery(cfg)  # TLS files, SASL and virtual tables
        settings.delivery_by_transport(cfg)
    except (ValueError, KeyError) as e:
        error(str(e))
    try:
        if milter_settings(cfg, "non_smtpd_milters").active:
            errors.append(
                Problem(
                    main_cf,
                    None,
                    "warning",
                    "non_smtpd_milters: mta sendmail does not run milters yet; ignored",
                )
            )
    except ValueError as e:
        error(f"non_smtpd_milters: {e}")
    for svc in cfg.listeners():
        scfg = cfg.for_service(svc)
        where = f"master.cf service {svc.name}" if svc.line else "smtpd"
        try:
            smtpd = settings.smtpd(scfg, svc)
        except (ValueError, KeyError) as e:
            # Restrictions and policy tables: each problem at its own line.
            located = [p for p in settings.policy_problems(scfg) if p not in errors]
            errors.extend(located)
            if not located:
                error(f"{where}: {e}")
        else:
            for text in settings.smtpd_warnings(smtpd):
                errors.append(Problem(main_cf, None, "warning", f"{where}: {text}"))
        try:
            svc.listen_address()
        except ValueError as e:
            error(f"master.cf service {svc.name}: {e}")
    qdir = settings.queue_directory(cfg)
    probe = qdir if qdir.exists() else _existing_parent(qdir)
    if probe is not None and not probe.is_dir():
        error(f"queue_directory {qdir}: {probe} is not a directory")
    elif probe is None or not os.access(probe, os.W_OK | os.X_OK):
        error(f"queue_directory {qdir}: not writable by this user (uid {os.getuid()})")
    log = settings.maillog_path(cfg)
    if log is not None:
        parent = _existing_parent(log)
        writable = parent is not None and (
            os.access(parent, os.W_OK)
            if parent == log
            else parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)
        )
        if log.is_dir():
            error(f"maillog_file {log}: is a directory")
        elif not writable:
            error(f"maillog_file {log}: cannot be created (directory not writable)")
    # The statistics service and the appliance's volumes (properties.yaml).
    errors.extend(stats_check(cfg))
    props, _ = read_properties(cfg.confdir)
    if props is not None:
        errors.extend(
            check_volumes(
                props,
                cfg.path(cfg.str("appliance_log_directory")),
                cfg.path(cfg.str("appliance_key_directory")),
            )
        )
    problems = problems + errors
    return (cfg if not any(p.severity == "error" for p in problems) else None), problems


def _existing_parent(path: Path) -> Path | None:
    for p in (path, *path.parents):
        if p.exists():
            return p
    return None
