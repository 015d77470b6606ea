"""The webhook payloads the gateway accepts, validated, and decoded into neutral alert values.

Owned here: the documented shapes of Prometheus Alertmanager's webhook (version 4), Grafana
Alerting's webhook, Pingdom's check state-change webhook and the gateway's own generic JSON
(docs/alerts.md), and how each becomes an `AlertNotification`. A payload that does not fit
raises `BadPayload` with a short reason that never quotes the input.

Vendors add fields in minor releases, and refusing an alert because of one would silence
monitoring: the vendor shapes ignore fields they do not know. The generic JSON is ours, so
an unknown field there is a mistake and refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.alerts import FIRING, RESOLVED, Alert, AlertNotification
from rules.alert_rules import AlertSource

_ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)  # Alertmanager's "not ended"
MAX_ALERTS = 1000
Str = Annotated[str, Field(max_length=8192)]
Labels = Annotated[dict[Annotated[str, Field(max_length=256)], Str], Field(max_length=256)]


class BadPayload(ValueError):
    """The body is not a payload of the source's kind. `reason` is safe to answer and log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Vendor(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class _Ours(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AmAlert(_Vendor):
    """One alert of an Alertmanager (or Grafana) group."""

    status: Literal["firing", "resolved"]
    labels: Labels
    annotations: Labels = Field(default_factory=dict)
    startsAt: datetime | None = None
    endsAt: datetime | None = None
    generatorURL: Str = ""
    fingerprint: Annotated[str, Field(min_length=1, max_length=256)]


class AlertmanagerPayload(_Vendor):
    """Alertmanager's webhook_config body, version 4."""

    version: Literal["4"]
    groupKey: Annotated[str, Field(min_length=1, max_length=8192)]
    status: Literal["firing", "resolved"]
    receiver: Str = ""
    alerts: Annotated[list[AmAlert], Field(min_length=1, max_length=MAX_ALERTS)]
    groupLabels: Labels = Field(default_factory=dict)
    commonLabels: Labels = Field(default_factory=dict)
    commonAnnotations: Labels = Field(default_factory=dict)
    externalURL: Str = ""
    truncatedAlerts: int = 0


class GrafanaPayload(_Vendor):
    """Grafana Alerting's webhook contact point body (version 1)."""

    version: Str = "1"
    groupKey: Annotated[str, Field(min_length=1, max_length=8192)]
    status: Literal["firing", "resolved"]
    receiver: Str = ""
    orgId: int | None = None
    alerts: Annotated[list[AmAlert], Field(min_length=1, max_length=MAX_ALERTS)]
    groupLabels: Labels = Field(default_factory=dict)
    commonLabels: Labels = Field(default_factory=dict)
    title: Str = ""
    message: Str = ""


class PingdomPayload(_Vendor):
    """Pingdom's check state-change webhook body."""

    check_id: int
    check_name: Str
    check_type: Str = ""
    current_state: Str
    previous_state: Str = ""
    importance_level: Str = ""
    state_changed_timestamp: int | None = None
    description: Str = ""
    long_description: Str = ""
    tags: Annotated[list[Str], Field(max_length=256)] = Field(default_factory=list)
    check_params: dict[str, Any] = Field(default_factory=dict)


class GenericPayload(_Ours):
    """The gateway's own alert JSON (docs/alerts.md): one alert per request."""

    key: Annotated[str, Field(min_length=1, max_length=256)]
    status: Literal["firing", "resolved"]
    name: Annotated[str, Field(min_length=1, max_length=512)]
    severity: Annotated[str, Field(max_length=64)] = ""
    summary: Str = ""
    description: Str = ""
    labels: Labels = Field(default_factory=dict)
    url: Annotated[str, Field(max_length=2048)] | None = None


_PINGDOM_DOWN = frozenset({"DOWN", "FAILING", "UNCONFIRMED_DOWN"})
_PINGDOM_UP = frozenset({"UP", "SUCCESS"})


def decode(kind: AlertSource, source: str, body: bytes) -> AlertNotification:
    """The neutral notification in `body`, sent by `source` (of `kind`); BadPayload if not."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadPayload("the body is not JSON") from None
    if not isinstance(data, dict):
        raise BadPayload("the body is not a JSON object")
    try:
        if kind is AlertSource.ALERTMANAGER:
            return _from_am(source, AlertmanagerPayload.model_validate(data))
        if kind is AlertSource.GRAFANA:
            return _from_grafana(source, GrafanaPayload.model_validate(data))
        if kind is AlertSource.PINGDOM:
            return _from_pingdom(source, PingdomPayload.model_validate(data))
        return _from_generic(source, GenericPayload.model_validate(data))
    except ValidationError as exc:
        raise BadPayload(_reason(exc)) from None


def _reason(exc: ValidationError) -> str:
    """Which fields are wrong, without the values (they are the sender's)."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        what = "unknown field" if err["type"] == "extra_forbidden" else err["type"]
        parts.append(f"{where}: {what}")
    return "invalid payload (" + "; ".join(parts) + ")"


def _ended(value: datetime | None) -> datetime | None:
    return None if value is None or value <= _ZERO_TIME else value


def _am_alert(a: AmAlert) -> Alert:
    labels = dict(a.labels)
    return Alert(
        status=a.status,
        name=labels.get("alertname", "") or "alert",
        fingerprint=a.fingerprint,
        severity=labels.get("severity", ""),
        labels=labels,
        summary=a.annotations.get("summary", "") or a.annotations.get("title", ""),
        description=a.annotations.get("description", ""),
        starts_at=a.startsAt,
        ends_at=_ended(a.endsAt),
        url=a.generatorURL or None,
    )


def _title(alerts: tuple[Alert, ...], common: Mapping[str, str]) -> str:
    first = next((a for a in alerts if a.firing), alerts[0])
    name = common.get("alertname") or first.name
    service = common.get("service") or common.get("job") or ""
    text = f"{name} ({service})" if service else name
    return f"{text}: {first.summary}" if first.summary else text


def _from_am(source: str, p: AlertmanagerPayload) -> AlertNotification:
    alerts = tuple(_am_alert(a) for a in p.alerts)
    return AlertNotification(
        source,
        AlertSource.ALERTMANAGER,
        p.groupKey,
        _status(alerts),
        alerts,
        _title(alerts, p.commonLabels),
        truncated=max(0, p.truncatedAlerts),
    )


def _from_grafana(source: str, p: GrafanaPayload) -> AlertNotification:
    alerts = tuple(_am_alert(a) for a in p.alerts)
    return AlertNotification(
        source,
        AlertSource.GRAFANA,
        p.groupKey,
        _status(alerts),
        alerts,
        _title(alerts, p.commonLabels),
    )


def _status(alerts: tuple[Alert, ...]) -> str:
    # The group's own status says "firing" while any alert fires; recomputed from the alerts
    # so that a payload cannot claim "resolved" over firing alerts.
    return FIRING if any(a.firing for a in alerts) else RESOLVED


def _from_pingdom(source: str, p: PingdomPayload) -> AlertNotification:
    state = p.current_state.upper()
    if state in _PINGDOM_DOWN:
        status = FIRING
    elif state in _PINGDOM_UP:
        status = RESOLVED
    else:
        raise BadPayload("invalid payload (current_state: unknown state)")
    changed = (
        datetime.fromtimestamp(p.state_changed_timestamp, UTC)
        if p.state_changed_timestamp is not None
        else None
    )
    labels = {
        "check_type": p.check_type,
        "tags": " ".join(p.tags),
        "hostname": str(p.check_params.get("hostname", ""))[:256],
    }
    alert = Alert(
        status=status,
        name=p.check_name,
        fingerprint=f"pingdom-check-{p.check_id}",
        severity=p.importance_level.lower(),
        labels=labels,
        summary=p.description,
        description=p.long_description,
        starts_at=changed if status == FIRING else None,
        ends_at=changed if status == RESOLVED else None,
    )
    title = f"Pingdom: {p.check_name} is {state.lower()}"
    return AlertNotification(
        source, AlertSource.PINGDOM, f"check:{p.check_id}", status, (alert,), title
    )


def _from_generic(source: str, p: GenericPayload) -> AlertNotification:
    fingerprint = hashlib.sha256(p.key.encode()).hexdigest()[:16]
    alert = Alert(
        status=p.status,
        name=p.name,
        fingerprint=fingerprint,
        severity=p.severity,
        labels=dict(p.labels),
        summary=p.summary,
        description=p.description,
        url=p.url,
    )
    title = f"{p.name}: {p.summary}" if p.summary else p.name
    return AlertNotification(source, AlertSource.GENERIC, p.key, p.status, (alert,), title)
