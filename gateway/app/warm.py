"""What is loaded right after READY=1, off the event loop: the first message of a kind must
not pay for it.

Owns the list of large things start-up leaves out (gateway.app): the rulebook's compiled
conditions where this process triages itself (Matrix reports; mail is triaged in the parse
child, which compiles its own copy), dkimpy where configured forwarders' ARC chains are
verified, and the PagerDuty webhook models where that webhook is served. Each is loaded in
a worker thread, so intake keeps being served meanwhile.
"""

from __future__ import annotations

import asyncio
import importlib

from gateway.config.model import Config
from rules.book import Rulebook


def _load(config: Config, rulebook: Rulebook) -> None:
    if config.matrix is not None:
        for rule in rulebook.rules:
            rule.matcher  # noqa: B018  (compiled on first use: now)
    if config.trust.forwarders:
        importlib.import_module("dkim")
    hook = config.pagerduty.webhook if config.pagerduty else None
    if hook is not None and config.alerts is not None and config.alerts.enabled:
        importlib.import_module("gateway.parse.pagerduty_events")


async def warm_up(config: Config, rulebook: Rulebook) -> None:
    """Load, in a worker thread, what the configured links will need on their first use."""
    await asyncio.to_thread(_load, config, rulebook)
