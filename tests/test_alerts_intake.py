"""The alert webhook listener end to end: real App, real HTTP over loopback, the durable inbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
from structlog.testing import capture_logs

from gateway.store import schema
from gateway.store.incidents import list_incidents, load_incident
from tests.conftest import OVERNIGHT, eventually, make_config, running, ticking
from tests.fakes.monitoring import (
    alertmanager_body,
    generic_body,
    grafana_body,
    hmac_header,
    pingdom_body,
    post,
)
from tests.fakes.pagerduty import FakePagerDuty

TOKEN = "am-bearer-token-0123456789abcdef"
HMAC_SECRET = "grafana-hmac-secret-0123456789"
PINGDOM_TOKEN = "pingdom-url-token-0123456789ab"
GENERIC_TOKEN = "generic-token-0123456789abcdef"
ROUTING_KEY = "R" * 32


def alerts_section(**extra: Any) -> dict[str, Any]:
    return {
        "port": 0,
        "max_body_bytes": 4096,
        "source": [
            {"name": "am", "kind": "alertmanager", "secret": {"value": TOKEN}},
            {
                "name": "grafana",
                "kind": "grafana",
                "auth": "hmac",
                "hmac_header": "X-Grafana-Alerting-Signature",
                "secret": {"value": HMAC_SECRET},
            },
            {
                "name": "pingdom",
                "kind": "pingdom",
                "auth": "url_token",
                "secret": {"value": PINGDOM_TOKEN},
            },
            {
                "name": "generic",
                "kind": "generic",
                "secret": {"value": GENERIC_TOKEN},
                "rate_per_minute": 5,
            },
        ],
        **extra,
    }


def rows(state: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = schema.connect(str(state / "gateway.sqlite3"), readonly=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def incidents(state: Path) -> list[Any]:
    conn = schema.connect(str(state / "gateway.sqlite3"), readonly=True)
    try:
        return [load_incident(conn, i.id) for i in list_incidents(conn)]
    finally:
        conn.close()


async def test_pingdom_down_out_of_hours_pages_once_and_retry_is_processed_once(
    tmp_path: Path,
) -> None:
    """A Pingdom 'down' on a live check out of hours opens a P1 and pages; the same request
    sent again is accepted (200) but processed once, and a re-firing alert never pages again."""
    async with FakePagerDuty() as pd:
        config = make_config(
            tmp_path,
            alerts=alerts_section(),
            pagerduty={"routing_key": {"value": ROUTING_KEY}, "url": pd.url},
        )
        async with (
            running(config, clock=ticking(OVERNIGHT)) as app,
            aiohttp.ClientSession() as session,
        ):
            url = f"http://127.0.0.1:{app.alerts_port}/alerts/pingdom?token={PINGDOM_TOKEN}"
            body = json.dumps(pingdom_body(42, "Apps: healthcheck.cloudapps.digital")).encode()
            first = await post(session, url, body)
            again = await post(session, url, body)
            assert first == (200, {"status": "accepted", "duplicate": False})
            assert again == (200, {"status": "accepted", "duplicate": True})
            await eventually(lambda: pd.events)
            other = pingdom_body(42, "Apps: healthcheck.cloudapps.digital")
            other["state_changed_timestamp"] += 60  # a new notification, same check
            assert (await post(session, url, other))[0] == 200
            await eventually(
                lambda: len(rows(tmp_path, "SELECT id FROM inbox WHERE state = 'done'")) == 2
            )
    [incident] = incidents(tmp_path)
    assert incident.priority == "P1" and incident.pages_sent == 1
    assert incident.rule == "pingdom-live-down" and "alert" in incident.flags
    assert [e["event_action"] for e in pd.events] == ["trigger"]
    kinds = [e.kind for e in incident.timeline]
    assert kinds.count("alert.fired") == 2 and "paged" in kinds


async def test_grafana_hmac_and_generic_bearer_are_accepted(tmp_path: Path) -> None:
    """A Grafana webhook signed with the source's HMAC secret and a generic alert with its
    bearer token each open an incident."""
    config = make_config(tmp_path, alerts=alerts_section())
    async with running(config, clock=ticking(OVERNIGHT)) as app, aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{app.alerts_port}/alerts"
        raw = json.dumps(grafana_body("HighMemory", labels={"severity": "warning"})).encode()
        status, _ = await post(
            session,
            f"{base}/grafana",
            raw,
            headers={"X-Grafana-Alerting-Signature": hmac_header(HMAC_SECRET, raw)},
        )
        assert status == 200
        status, _ = await post(
            session,
            f"{base}/generic",
            generic_body("billing-smoke", "SmokeTestFailed", labels={"test": "billing"}),
            token=GENERIC_TOKEN,
        )
        assert status == 200
        await eventually(lambda: len(incidents(tmp_path)) == 2)
    by_title = {i.title: i for i in incidents(tmp_path)}
    assert by_title["HighMemory"].priority == "P3"
    smoke = next(i for t, i in by_title.items() if t.startswith("SmokeTestFailed"))
    assert smoke.priority == "P4" and smoke.rule == "billing-smoke-test"


async def test_bad_input_gets_a_clean_4xx_and_nothing_is_processed(tmp_path: Path) -> None:
    """Malformed JSON, a wrong token or signature, an oversized body, unknown fields, an
    unknown source and a flood each get their 4xx; nothing reaches the inbox and no log line
    holds a secret."""
    config = make_config(tmp_path, alerts=alerts_section())
    async with running(config, clock=ticking(OVERNIGHT)) as app, aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{app.alerts_port}/alerts"
        good = alertmanager_body('{}:{alertname="X"}', [("fp1", {"alertname": "X"}, "firing")])
        raw = json.dumps(grafana_body("X")).encode()
        with capture_logs() as logs:
            answers = {
                "malformed": await post(session, f"{base}/am", b"{not json", token=TOKEN),
                "wrong_token": await post(session, f"{base}/am", good, token="nope" * 8),
                "no_token": await post(session, f"{base}/am", good),
                "wrong_signature": await post(
                    session,
                    f"{base}/grafana",
                    raw,
                    headers={"X-Grafana-Alerting-Signature": hmac_header("other-secret", raw)},
                ),
                "oversized": await post(
                    session, f"{base}/am", b"{" + b" " * 8000 + b"}", token=TOKEN
                ),
                "unknown_fields": await post(
                    session,
                    f"{base}/generic",
                    {**generic_body("k", "n"), "extra": 1},
                    token=GENERIC_TOKEN,
                ),
                "wrong_version": await post(
                    session, f"{base}/am", {**good, "version": "3"}, token=TOKEN
                ),
                "unknown_source": await post(session, f"{base}/nobody", good, token=TOKEN),
                "pingdom_token": await post(
                    session, f"{base}/pingdom?token=x", pingdom_body(1, "c")
                ),
            }
            flood = [
                await post(
                    session, f"{base}/generic", generic_body(f"k{i}", "n"), token=GENERIC_TOKEN
                )
                for i in range(7)
            ]
    status = {name: answer[0] for name, answer in answers.items()}
    assert status == {
        "malformed": 400,
        "wrong_token": 401,
        "no_token": 401,
        "wrong_signature": 401,
        "oversized": 413,
        "unknown_fields": 422,
        "wrong_version": 422,
        "unknown_source": 404,
        "pingdom_token": 401,
    }
    # 5 a minute for this source: the authenticated request with unknown fields took one
    assert [s for s, _ in flood] == [200] * 4 + [429] * 3
    assert answers["unknown_fields"][1]["reason"].endswith("(extra: unknown field)")
    inbox = rows(tmp_path, "SELECT channel FROM inbox")
    assert inbox == [("webhook",)] * 4  # only the generic alerts within the limit
    text = repr(logs)
    for secret in (TOKEN, HMAC_SECRET, PINGDOM_TOKEN, GENERIC_TOKEN, "nope" * 8):
        assert secret not in text
    assert any(e["event"] == "alerts.rejected" and e["reason"] == "credentials" for e in logs)


async def test_strangers_flood_never_sheds_an_authenticated_source(tmp_path: Path) -> None:
    """Past the listener's limit, requests without a good credential get 429 (and are not
    logged one by one), while a source presenting its credential is still accepted."""
    config = make_config(tmp_path, alerts=alerts_section(rate_per_minute=5))
    async with running(config, clock=ticking(OVERNIGHT)) as app, aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{app.alerts_port}/alerts"
        body = generic_body("k", "n")
        with capture_logs() as logs:
            flood = [
                (await post(session, f"{base}/generic", body, token="x" * 32))[0] for _ in range(20)
            ]
        good = await post(session, f"{base}/generic", body, token=GENERIC_TOKEN)
    assert flood[:5] == [401] * 5 and set(flood[5:]) == {429}
    assert good[0] == 200
    assert sum(e["event"] == "alerts.rejected" for e in logs) <= 6


async def test_grafana_hmac_with_a_signed_timestamp_refuses_stale_or_unsigned_times(
    tmp_path: Path,
) -> None:
    """With Grafana's timestamp header configured, the signature covers "<ts>:<body>": a
    fresh one is accepted, one five minutes old or without the timestamp is refused."""
    clock = ticking(OVERNIGHT)
    config = make_config(
        tmp_path,
        alerts={
            "port": 0,
            "source": [
                {
                    "name": "grafana",
                    "kind": "grafana",
                    "auth": "hmac",
                    "hmac_header": "X-Grafana-Alerting-Signature",
                    "hmac_timestamp_header": "X-Grafana-Alerting-Signature-Timestamp",
                    "hmac_max_age_s": 120,
                    "secret": {"value": HMAC_SECRET},
                }
            ],
        },
    )
    raw = json.dumps(grafana_body("HighMemory")).encode()

    def signed(at: int, body: bytes = raw) -> dict[str, str]:
        return {
            "X-Grafana-Alerting-Signature-Timestamp": str(at),
            "X-Grafana-Alerting-Signature": hmac_header(HMAC_SECRET, f"{at}:".encode() + body),
        }

    async with running(config, clock=clock) as app, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{app.alerts_port}/alerts/grafana"
        now = int(clock().timestamp())
        stale = await post(session, url, raw, headers=signed(now - 300))
        bare = await post(
            session,
            url,
            raw,
            headers={"X-Grafana-Alerting-Signature": hmac_header(HMAC_SECRET, raw)},
        )
        fresh = await post(session, url, raw, headers=signed(now))
        await eventually(lambda: incidents(tmp_path))
    assert (stale[0], bare[0], fresh[0]) == (401, 401, 200)
