"""A real Alertmanager delivers to the gateway: its grouping, resolve notifications and retries."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import OVERNIGHT, eventually, make_config, running, ticking
from tests.fakes.pagerduty import FakePagerDuty
from tests.peers.alertmanager import Alertmanager
from tests.peers.dovecot import free_port
from tests.test_alerts_intake import incidents, rows

TOKEN = "am-bearer-token-0123456789abcdef"
ROUTING_KEY = "R" * 32


def config_for(tmp_path: Path, port: int, pd_url: str) -> Any:
    return make_config(
        tmp_path,
        pagerduty={"routing_key": {"value": ROUTING_KEY}, "url": pd_url},
        alerts={
            "port": port,
            "source": [{"name": "am", "kind": "alertmanager", "secret": {"value": TOKEN}}],
        },
    )


def timeline_kinds(state: Path, ref: str) -> list[str]:
    [incident] = [i for i in incidents(state) if i.ref == ref]
    return [e.kind for e in incident.timeline]


async def test_alertmanager_group_opens_one_incident_pages_once_and_resolves(
    tmp_path: Path, alertmanager: Callable[..., Alertmanager]
) -> None:
    """Alerts fired with amtool into one Alertmanager group open one incident that pages
    once; a further alert in the group adds to it without paging; resolving them (endsAt in
    the past) puts the resolution on the timeline and asks the engineers (policy "ask")."""
    port = free_port()
    async with FakePagerDuty() as pd:
        am = alertmanager(f"http://127.0.0.1:{port}/alerts/am", TOKEN)
        async with running(config_for(tmp_path, port, pd.url), clock=ticking(OVERNIGHT)):
            labels = {
                "alertname": "SmokeTestFailed",
                "severity": "critical",
                "test": "apps",
                "group": "smoke",
            }
            await am.amtool_add({**labels, "instance": "a"}, {"summary": "push and curl fail"})
            await eventually(lambda: pd.events, timeout=20)
            await am.amtool_add({**labels, "instance": "b"}, {"summary": "push and curl fail"})
            await eventually(
                lambda: timeline_kinds(tmp_path, "INC-1").count("alert.fired") == 2, timeout=20
            )
            await asyncio.to_thread(
                am.post_alerts,
                [Alertmanager.alert({**labels, "instance": i}, resolved=True) for i in "ab"],
            )
            await eventually(
                lambda: "alert.resolved" in timeline_kinds(tmp_path, "INC-1"), timeout=20
            )
    [incident] = incidents(tmp_path)
    assert incident.priority == "P1" and incident.rule == "smoke-test-apps"
    assert incident.pages_sent == 1 and len(pd.events) == 1
    assert incident.status == "open"  # "ask": an engineer closes it
    fired = [e for e in incident.timeline if e.kind == "alert.fired"]
    assert "2 firing" in fired[-1].text  # Alertmanager sent the whole group again


async def test_alertmanager_retries_until_the_gateway_listens(
    tmp_path: Path, alertmanager: Callable[..., Alertmanager]
) -> None:
    """While the gateway is down Alertmanager's delivery fails; its own retry delivers the
    notification once the gateway listens, and it is processed once."""
    port = free_port()
    async with FakePagerDuty() as pd:
        am = alertmanager(f"http://127.0.0.1:{port}/alerts/am", TOKEN)
        await asyncio.to_thread(
            am.post_alerts,
            [
                Alertmanager.alert(
                    {
                        "alertname": "SmokeTestFailed",
                        "severity": "critical",
                        "test": "billing",
                        "group": "billing",
                    },
                    summary="billing smoke test fails",
                )
            ],
        )
        await eventually(lambda: am.log_count("Notify attempt failed") >= 1, timeout=20)
        async with running(config_for(tmp_path, port, pd.url), clock=ticking(OVERNIGHT)):
            await eventually(
                lambda: rows(tmp_path, "SELECT id FROM inbox WHERE state = 'done'"), timeout=30
            )
    [incident] = incidents(tmp_path)
    assert incident.priority == "P4" and incident.rule == "billing-smoke-test"
    assert incident.pages_sent == 0 and not pd.events  # "not in itself an incident"
