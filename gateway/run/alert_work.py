"""Webhook rows of the inbox as work for the store: how each finds its incident and is planned.

An alert notification finds its incident by its group's and alerts' keys (thread keys kept
in the store); a PagerDuty event by the incident reference it carries. Planning is pure
(gateway.plan.alert_plan, gateway.plan.pagerduty_plan) and runs inside the store's transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from gateway.alerts import notification_from_json
from gateway.domain import InboxRow, Plan, PlanContext, ThreadKeys, Work
from gateway.plan.alert_plan import AlertSettings, plan_alert
from gateway.plan.pagerduty_plan import incident_number, plan_pagerduty
from rules.book import Rulebook


@dataclass(frozen=True)
class WebhookSettings:
    """What planning webhooks needs: the alert settings and PagerDuty's resolve policy."""

    alerts: AlertSettings
    pagerduty_on_resolved: str = "resolve"


def prepare_webhook(
    row: InboxRow,
    book: Rulebook,
    settings: WebhookSettings,
    now: datetime,
    fallback: Callable[[str], Plan],
) -> Work:
    """The Work for one webhook row (ValueError/KeyError for a row we cannot read)."""
    kind = json.loads(row.raw).get("type")
    key = f"w{row.id}"
    if kind == "alert":
        n = notification_from_json(row.raw)

        def alert(ctx: PlanContext) -> Plan:
            return plan_alert(n, ctx, book, settings.alerts, now, key)

        return Work(row.id, ThreadKeys(n.thread_keys()), alert, fallback)
    if kind == "pagerduty":
        # pydantic models built at import: loaded when first needed, or after start-up
        from gateway.parse.pagerduty_events import event_from_json  # noqa: PLC0415

        event = event_from_json(row.raw)
        number = incident_number(event)

        def pagerduty(ctx: PlanContext) -> Plan:
            return plan_pagerduty(
                event, ctx.thread, settings.alerts, now, key, settings.pagerduty_on_resolved
            )

        keys = ThreadKeys((), incident_id=number) if number is not None else None
        return Work(row.id, keys, pagerduty, fallback)
    raise ValueError("not a webhook row")
