"""Configurations that are valid but risky: warned about by `check-config` and at start.

Two things are not errors, because a deployment can have good reasons for them, but an
operator must hear about them:

- **An exposed SMTP listener behind a trusted MTA.** With `trusted_authserv_id`, the topmost
  Authentication-Results header with that id is believed. Anyone who can connect to the
  listener directly, without passing through that MTA, writes the topmost header
  themselves. Listening on a non-loopback address is fine only if a firewall lets nothing
  but the MTA reach the port.
- **Secret files others can read or change.** A secret file readable by every user, or
  writable by its group or by everyone, is accepted (systemd's credentials and many
  provisioning tools get modes right; a test box may not) but named, with its mode.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from gateway.config.base import _loopback
from gateway.config.model import Config, secret_paths


def config_warnings(config: Config) -> list[str]:
    """One line per risky setting, each prefixed with its TOML path."""
    warnings = _exposed_listener(config)
    for path, file in secret_paths(config):
        warnings.extend(_loose_mode(path, file))
    return warnings


def _exposed_listener(config: Config) -> list[str]:
    smtp, authserv = config.smtp, config.trust.trusted_authserv_id
    if not smtp.enabled or authserv is None or _loopback(smtp.host):
        return []
    return [
        f"smtp.host: the listener on {smtp.host} can be reached from other machines while "
        f"trust.trusted_authserv_id = {authserv!r} is set: whoever connects directly, "
        f"not through {authserv}, writes the Authentication-Results header that is "
        "believed. Listen on 127.0.0.1 behind the MTA, or firewall the port so that only "
        "the MTA reaches it."
    ]


def _loose_mode(name: str, file: Path) -> list[str]:
    try:
        mode = stat.S_IMODE(os.stat(file).st_mode)
    except OSError:  # unreadable files are errors, reported by the configuration check
        return []
    loose = []
    if mode & stat.S_IROTH:
        loose.append("readable by every user")
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        loose.append("writable by " + ("everyone" if mode & stat.S_IWOTH else "its group"))
    if not loose:
        return []
    return [
        f"{name}.file: {file} is {' and '.join(loose)} (mode {mode:04o}): "
        f"chmod 600 it (or 640 with a group only the gateway is in)"
    ]
