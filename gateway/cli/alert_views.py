"""`triage --alert`: the decision for one alert webhook payload, explained, changing nothing."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from gateway.alerts import AlertNotification
from gateway.parse.alert_payloads import BadPayload, decode
from rules.alert_rules import AlertSource
from rules.alerts import triage_alerts
from rules.book import Rulebook


def detect_kind(body: bytes) -> AlertSource:
    """Which kind of payload a body is, by its documented top-level fields."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadPayload("the body is not JSON") from None
    if not isinstance(data, dict):
        raise BadPayload("the body is not a JSON object")
    if "check_id" in data and "current_state" in data:
        return AlertSource.PINGDOM
    if "groupKey" in data and data.get("version") == "4" and "orgId" not in data:
        return AlertSource.ALERTMANAGER
    if "groupKey" in data:
        return AlertSource.GRAFANA
    return AlertSource.GENERIC


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def triage_alert_json(body: bytes, kind: str, at: datetime, book: Rulebook) -> dict[str, Any]:
    """The same keys as a report's triage, plus what the alert payload held."""
    source = detect_kind(body) if kind == "auto" else AlertSource(kind)
    n: AlertNotification = decode(source, "cli", body)
    firing = n.firing()
    alert = {
        "kind": source.value,
        "status": n.status,
        "title": n.title,
        "alerts": len(n.alerts),
        "firing": len(firing),
    }
    if not firing:
        return {
            "priority": None,
            "page": False,
            "ticket": False,
            "reply": False,
            "rule": None,
            "reasons": [
                "every alert in the payload has resolved: it only goes on the "
                "timeline of its incident"
            ],
            "period": book.clock.period_at(at).value,
            "respond_by": None,
            "next_update_by": None,
            "ignored": "resolved",
            "alert": alert,
        }
    result = triage_alerts((a.facts(source) for a in firing), at, book)
    d = result.decision
    return {
        "priority": d.priority.value if d.priority else None,
        "page": d.page,
        "ticket": d.ticket,
        "reply": d.reply,
        "rule": d.rule,
        "reasons": list(d.reasons),
        "period": d.period.value,
        "respond_by": _iso(d.respond_by),
        "next_update_by": _iso(d.next_update_by),
        "ignored": None,
        "alert": {
            **alert,
            "on_resolved": result.on_resolved.value,
            "components": list(result.components),
        },
    }
