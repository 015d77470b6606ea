"""Wiring of the processing side: the inbox worker, the SLA scheduler and their keys.

Owns how the inbox worker (parse, thread, triage, plan) and the SLA scheduler are built
from the configuration and the rulebook, how both wake the outbox when they plan, and the
two values made once per database: the threading key and the instance id.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from gateway.config.model import Config
from gateway.config.settings import pipeline_settings, sla_settings
from gateway.deliver.external import mirror_settings
from gateway.deliver.outbox import OutboxWorker
from gateway.domain import Plan
from gateway.parse.sandbox import ParseSandbox
from gateway.plan.alarm_rooms import alarm_rooms
from gateway.plan.alert_plan import AlertSettings
from gateway.plan.tokens import new_key
from gateway.ports import Store
from gateway.run.alert_work import WebhookSettings
from gateway.run.scheduler import Scheduler
from gateway.run.service import INSTANCE_KEY
from gateway.run.worker import Clock, InboxWorker
from rules.book import Rulebook


async def thread_key(config: Config, store: Store) -> str:
    """The configured threading key, else one generated once and kept in the store."""
    if config.threading.key is not None:
        return config.read_secret(config.threading.key)
    value = await store.kv_get("threading_key")
    if value is None:
        value = new_key()
        await store.kv_set("threading_key", value)
    return value


async def instance_id(store: Store) -> str:
    """A random id for this database, made once (prefixes chat transaction ids)."""
    value = await store.kv_get(INSTANCE_KEY)
    if value is None:
        value = secrets.token_hex(6)
        await store.kv_set(INSTANCE_KEY, value)
    return value


async def processing(
    config: Config,
    rulebook: Rulebook,
    clock: Clock,
    store: Store,
    outbox: OutboxWorker,
    sandbox: ParseSandbox,
) -> tuple[InboxWorker, Scheduler]:
    """The inbox worker and the SLA scheduler; both wake the outbox when they plan."""
    settings = pipeline_settings(config, await thread_key(config, store))
    scheduler = Scheduler(
        store, rulebook, sla_settings(config, settings), lambda _fired: outbox.wake(), clock
    )

    def planned(plans: Sequence[Plan]) -> None:
        if any(plan.outbox for plan in plans):
            outbox.wake()
        scheduler.changed()  # an incident may have changed: its clocks may have moved

    hook = config.pagerduty.webhook if config.pagerduty else None
    webhooks = WebhookSettings(
        AlertSettings(
            settings.sender, settings.pager_source, settings.chat, alarm_rooms(config.alerts)
        ),
        hook.on_resolved if hook else "resolve",
    )
    worker = InboxWorker(
        store,
        rulebook,
        settings,
        planned,
        clock,
        sandbox=sandbox,
        mirror=mirror_settings(config, rulebook, settings.sender),
        webhooks=webhooks,
    )
    return worker, scheduler
