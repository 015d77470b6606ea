"""Monitoring alerts as the core sees them: neutral values, whichever vendor sent them.

An `AlertNotification` is one accepted webhook request (an Alertmanager or Grafana group, a
Pingdom state change, one generic alert): the source it came from, the group it belongs to
(the key that keeps one incident per group) and its alerts, each firing or resolved, with
a fingerprint that identifies the alert across notifications. It is what the durable inbox
keeps for an alert (as JSON) and what the pure alert planner reads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rules.alert_rules import AlertSource
from rules.alerts import AlertFacts

FIRING = "firing"
RESOLVED = "resolved"
_TEXT = 2000


@dataclass(frozen=True)
class Alert:
    """One alert in a notification."""

    status: str  # firing | resolved
    name: str
    fingerprint: str
    severity: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    summary: str = ""
    description: str = ""
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    url: str | None = None

    @property
    def firing(self) -> bool:
        """Whether the alert is firing (else it resolved)."""
        return self.status == FIRING

    def facts(self, source: AlertSource) -> AlertFacts:
        """What the rules see of it."""
        return AlertFacts(source, self.name, self.severity, dict(self.labels), self.summary)


@dataclass(frozen=True)
class AlertNotification:
    """One webhook request's worth of alerts from one configured source."""

    source: str  # the configured source name
    kind: AlertSource
    group_key: str  # one incident per group: Alertmanager groupKey, Pingdom check id, …
    status: str  # firing when any alert fires, else resolved
    alerts: tuple[Alert, ...]
    title: str = ""
    truncated: int = 0  # alerts the sender left out (Alertmanager's max_alerts)

    def firing(self) -> tuple[Alert, ...]:
        """The alerts that fire."""
        return tuple(a for a in self.alerts if a.firing)

    def thread_keys(self) -> tuple[str, ...]:
        """The keys that find this group's incident: the group, then each alert."""
        return (
            group_key(self.source, self.group_key),
            *(fingerprint_key(self.source, a.fingerprint) for a in self.alerts),
        )

    def to_json(self) -> bytes:
        """The inbox form."""
        return json.dumps(
            {
                "type": "alert",
                "source": self.source,
                "kind": self.kind.value,
                "group_key": self.group_key,
                "status": self.status,
                "title": self.title,
                "truncated": self.truncated,
                "alerts": [_alert_json(a) for a in self.alerts],
            },
            separators=(",", ":"),
            sort_keys=True,
        ).encode()


def group_key(source: str, key: str) -> str:
    """The thread key of an alert group (hashed: vendors' group keys can be long)."""
    return f"alert:{source}:g:{hashlib.sha256(key.encode()).hexdigest()[:32]}"


def fingerprint_key(source: str, fingerprint: str) -> str:
    """The thread key of one alert, by its fingerprint."""
    return f"alert:{source}:a:{hashlib.sha256(fingerprint.encode()).hexdigest()[:32]}"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _alert_json(a: Alert) -> dict[str, Any]:
    return {
        "status": a.status,
        "name": a.name,
        "fingerprint": a.fingerprint,
        "severity": a.severity,
        "labels": dict(a.labels),
        "summary": a.summary,
        "description": a.description,
        "starts_at": _iso(a.starts_at),
        "ends_at": _iso(a.ends_at),
        "url": a.url,
    }


def _dt(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


def notification_from_json(raw: bytes) -> AlertNotification:
    """Read back what `to_json` wrote (ValueError/KeyError for anything else)."""
    data = json.loads(raw)
    alerts = tuple(
        Alert(
            status=str(a["status"]),
            name=str(a["name"]),
            fingerprint=str(a["fingerprint"]),
            severity=str(a["severity"]),
            labels={str(k): str(v) for k, v in a["labels"].items()},
            summary=str(a["summary"]),
            description=str(a["description"]),
            starts_at=_dt(a["starts_at"]),
            ends_at=_dt(a["ends_at"]),
            url=a["url"],
        )
        for a in data["alerts"]
    )
    return AlertNotification(
        source=str(data["source"]),
        kind=AlertSource(data["kind"]),
        group_key=str(data["group_key"]),
        status=str(data["status"]),
        alerts=alerts,
        title=str(data["title"]),
        truncated=int(data.get("truncated", 0)),
    )


def clip(text: str, limit: int = _TEXT) -> str:
    """Text from a webhook, bounded for timelines and chat."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
