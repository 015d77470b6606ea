"""Local stand-ins for monitoring SaaS that send webhooks: Grafana Alerting and Pingdom.

Each builds the body its vendor documents and posts it the way the vendor does: Grafana's
webhook contact point (JSON with `groupKey`, `alerts[]`, `status`; an Authorization header
or an HMAC signature header), Pingdom's check state-change webhook (JSON with `check_id`,
`current_state`, …; no custom headers, so the credential rides in the URL). The generic
JSON is the gateway's own format (docs/alerts.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import aiohttp


def grafana_body(
    name: str,
    *,
    status: str = "firing",
    labels: dict[str, str] | None = None,
    fingerprint: str = "c6eadffa33fcdf37",
    summary: str = "",
    group_key: str | None = None,
) -> dict[str, Any]:
    """A Grafana Alerting webhook body (version 1) with one alert."""
    labels = {"alertname": name, **(labels or {})}
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {
        "receiver": "chatops-gateway",
        "status": status,
        "orgId": 1,
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": {"summary": summary},
                "startsAt": now,
                "endsAt": now if status == "resolved" else "0001-01-01T00:00:00Z",
                "generatorURL": "http://grafana.example/alerting/grafana/abc/view",
                "fingerprint": fingerprint,
                "silenceURL": "http://grafana.example/alerting/silence",
                "dashboardURL": "",
                "panelURL": "",
                "values": {"B": 44.2, "C": 1},
                "valueString": "[ var='B' labels={} value=44.2 ]",
            }
        ],
        "groupLabels": {"alertname": name},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://grafana.example/",
        "version": "1",
        "groupKey": group_key or f'{{}}:{{alertname="{name}"}}',
        "truncatedAlerts": 0,
        "title": f"[{status.upper()}:1] {name}",
        "state": "alerting" if status == "firing" else "ok",
        "message": summary,
    }


def pingdom_body(
    check_id: int,
    name: str,
    *,
    state: str = "DOWN",
    previous: str = "UP",
    tags: list[str] | None = None,
    importance: str = "HIGH",
    hostname: str = "www.example.com",
) -> dict[str, Any]:
    """A Pingdom check state-change webhook body (HTTP check)."""
    now = datetime.now(UTC)
    return {
        "check_id": check_id,
        "check_name": name,
        "check_type": "HTTP",
        "check_params": {
            "basic_auth": False,
            "encryption": True,
            "full_url": f"https://{hostname}/health",
            "header": "User-Agent:Pingdom",
            "hostname": hostname,
            "ipv6": False,
            "port": 443,
            "url": "/health",
        },
        "tags": tags if tags is not None else ["live"],
        "previous_state": previous,
        "current_state": state,
        "importance_level": importance,
        "state_changed_timestamp": int(now.timestamp()),
        "state_changed_utc_time": now.strftime("%Y-%m-%dT%H:%M:%S"),
        "long_description": "HTTP Server Error 503 Service Unavailable",
        "description": "HTTP Error 503" if state == "DOWN" else "OK",
        "first_probe": {
            "ip": "185.39.146.214",
            "ipv6": "2a02:6ea0:c305::4041",
            "location": "Stockholm, Sweden",
        },
        "second_probe": {
            "ip": "178.255.153.2",
            "ipv6": "",
            "location": "Frankfurt, Germany",
            "version": 1,
        },
    }


def generic_body(
    key: str,
    name: str,
    *,
    status: str = "firing",
    severity: str = "critical",
    labels: dict[str, str] | None = None,
    summary: str = "",
) -> dict[str, Any]:
    """The gateway's generic alert JSON."""
    return {
        "key": key,
        "status": status,
        "name": name,
        "severity": severity,
        "summary": summary,
        "labels": labels or {},
    }


def hmac_header(secret: str, body: bytes) -> str:
    """A hex HMAC-SHA256 signature of `body`, as Grafana's HMAC option sends it."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any] | bytes,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """POST a webhook body; (status, JSON answer)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    async with session.post(url, data=raw, headers=hdrs) as resp:
        try:
            answer = await resp.json(content_type=None)
        except ValueError:
            answer = {}
        return resp.status, answer if isinstance(answer, dict) else {}


def alertmanager_body(
    group: str, alerts: list[tuple[str, dict[str, str], str]], *, receiver: str = "gateway"
) -> dict[str, Any]:
    """An Alertmanager webhook body (version 4): `alerts` are (fingerprint, labels, status).
    For unit tests of the listener; the end-to-end tests use a real Alertmanager."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    items = [
        {
            "status": st,
            "labels": labels,
            "annotations": {"summary": f"{labels} is bad"},
            "startsAt": now,
            "endsAt": now if st == "resolved" else "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example/graph",
            "fingerprint": fp,
        }
        for fp, labels, st in alerts
    ]
    firing = any(st == "firing" for _, _, st in alerts)
    common = dict(alerts[0][1]) if alerts else {}
    return {
        "receiver": receiver,
        "status": "firing" if firing else "resolved",
        "alerts": items,
        "groupLabels": {"alertname": common.get("alertname", "")},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "version": "4",
        "groupKey": group,
        "truncatedAlerts": 0,
    }
