"""PagerDuty both ways: v3 webhooks from the PagerDuty fake change the incidents we paged."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiosmtplib
from structlog.testing import capture_logs

from tests.conftest import OVERNIGHT, email_bytes, eventually, make_config, running, ticking
from tests.fakes.pagerduty import FakePagerDuty, sign, v3_event
from tests.fakes.smtp_capture import SmtpCapture
from tests.test_alerts_intake import incidents, rows

ROUTING_KEY = "R" * 32
OLD_SECRET = "pd-webhook-secret-old-0123456789"
NEW_SECRET = "pd-webhook-secret-new-0123456789"


def pd_config(
    tmp_path: Path, pd: FakePagerDuty, relay: SmtpCapture, on_resolved: str = "resolve"
) -> Any:
    return make_config(
        tmp_path,
        alerts={"port": 0},
        pagerduty={
            "routing_key": {"value": ROUTING_KEY},
            "url": pd.url,
            "webhook": {
                "secrets": [{"value": OLD_SECRET}, {"value": NEW_SECRET}],
                "on_resolved": on_resolved,
            },
        },
        mail_out={
            "mode": "smtp",
            "smtp": {"host": "127.0.0.1", "port": relay.port, "starttls": False},
        },
    )


async def report(port: int) -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
        await client.sendmail("alice@tenant.example", ["emergency@localhost"], email_bytes())


def incident(tmp_path: Path) -> Any:
    [found] = incidents(tmp_path)
    return found


async def test_acknowledge_reassign_and_resolve_on_pagerduty_reach_the_incident(
    tmp_path: Path,
) -> None:
    """An acknowledgement on the PagerDuty app acknowledges ours (timeline, reporter told an
    engineer is on it, nothing sent back to PagerDuty); a reassignment goes on the timeline;
    a replayed event is processed once; a resolve resolves ours and tells the reporter."""
    clock = ticking(OVERNIGHT)
    async with FakePagerDuty() as pd, SmtpCapture() as relay:
        pd.clock = clock
        async with running(pd_config(tmp_path, pd, relay), clock=clock) as app:
            await report(app.smtp_port or 0)
            await eventually(lambda: pd.events and relay.messages)
            pd.subscribe(f"http://127.0.0.1:{app.alerts_port}/pagerduty", NEW_SECRET)
            assert await pd.acknowledge_on_app("INC-1") == 200
            await eventually(lambda: incident(tmp_path).status == "acknowledged")
            await eventually(lambda: len(relay.messages) == 2)
            assert await pd.reassign("INC-1", "Ben Oncall") == 200
            assert await pd.replay_last() == 200
            assert await pd.resolve_on_app("INC-1") == 200
            await eventually(lambda: incident(tmp_path).status == "resolved")
            await eventually(lambda: len(relay.messages) == 3)
    inc = incident(tmp_path)
    kinds = [e.kind for e in inc.timeline]
    assert kinds.count("pagerduty.acknowledged") == 1
    assert kinds.count("pagerduty.reassigned") == 1  # the replay was processed once
    assert "pagerduty.resolved" in kinds
    reassigned = next(e for e in inc.timeline if e.kind == "pagerduty.reassigned")
    assert reassigned.text == "Reassigned on PagerDuty by Ana Engineer to Ben Oncall"
    assert [e["event_action"] for e in pd.events] == ["trigger"]  # nothing echoed back
    told = relay.messages[1].content.decode()
    assert "An engineer is on it" in told and "Re: [INC-1]" in told
    assert "is resolved" in relay.messages[2].content.decode()


async def test_pagerduty_webhooks_refuse_bad_signatures_replays_and_strangers(
    tmp_path: Path,
) -> None:
    """A wrong or missing signature is 401, an event outside the time window 422, and a
    signed event about an incident we did not open changes nothing; either configured
    secret may sign (rotation); no secret is logged."""
    clock = ticking(OVERNIGHT)
    async with FakePagerDuty() as pd, SmtpCapture() as relay:
        pd.clock = clock
        async with running(pd_config(tmp_path, pd, relay), clock=clock) as app:
            await report(app.smtp_port or 0)
            await eventually(lambda: pd.events)
            pd.subscribe(f"http://127.0.0.1:{app.alerts_port}/pagerduty", OLD_SECRET)
            body = json.dumps(
                v3_event("incident.acknowledged", "INC-1", occurred_at=clock())
            ).encode()
            with capture_logs() as logs:
                statuses = {
                    "wrong": await pd.deliver(body, sign(body, ["not-the-secret"])),
                    "missing": await pd.deliver(body, ""),
                    "tampered": await pd.deliver(
                        body.replace(b"Ana", b"Eve"), sign(body, [OLD_SECRET])
                    ),
                    "stale": await pd.deliver(
                        v3_event(
                            "incident.acknowledged",
                            "INC-1",
                            occurred_at=clock() - timedelta(hours=2),
                        )
                    ),
                    "future": await pd.deliver(
                        v3_event(
                            "incident.acknowledged",
                            "INC-1",
                            occurred_at=clock() + timedelta(hours=2),
                        )
                    ),
                    "not_v3": await pd.deliver({"messages": [{"event": "incident.ack"}]}),
                    "stranger": await pd.deliver(
                        v3_event(
                            "incident.acknowledged",
                            "d3640fbd41094207a1c11e58e46b1662",
                            occurred_at=clock(),
                        )
                    ),
                }
            assert incident(tmp_path).status == "open"
            statuses["rotated"] = await pd.deliver(body, sign(body, [OLD_SECRET, NEW_SECRET]))
            await eventually(lambda: incident(tmp_path).status == "acknowledged")
    assert statuses == {
        "wrong": 401,
        "missing": 401,
        "tampered": 401,
        "stale": 422,
        "future": 422,
        "not_v3": 422,
        "stranger": 200,
        "rotated": 200,
    }
    outcomes = [
        r[0]
        for r in rows(
            tmp_path, "SELECT outcome FROM inbox WHERE mail_from = 'pagerduty' ORDER BY id"
        )
    ]
    assert outcomes[0] == "ignored: PagerDuty event about an incident we did not open"
    assert len(outcomes) == 2
    for secret in (OLD_SECRET, NEW_SECRET):
        assert secret not in repr(logs)
    assert sum(e.get("reason") == "signature" for e in logs) == 3


async def test_acknowledgement_on_pagerduty_stops_reminders_and_escalation(tmp_path: Path) -> None:
    """After an acknowledgement on PagerDuty nothing more is due for that incident: past its
    respond-by time it gets no overdue reminder and no escalation page, while an incident
    nobody acknowledged gets both."""
    from tests.test_sla_e2e import ESCALATION_KEY, JumpingClock  # noqa: PLC0415

    clock = JumpingClock(OVERNIGHT)
    async with FakePagerDuty() as pd, SmtpCapture() as relay:
        pd.clock = clock
        config = make_config(
            tmp_path,
            alerts={"port": 0},
            sla={"digest": False},
            escalation=[{"kind": "page", "routing_key": {"value": ESCALATION_KEY}}],
            pagerduty={
                "routing_key": {"value": ROUTING_KEY},
                "url": pd.url,
                "webhook": {"secrets": [{"value": NEW_SECRET}]},
            },
            mail_out={
                "mode": "smtp",
                "smtp": {"host": "127.0.0.1", "port": relay.port, "starttls": False},
            },
        )
        async with running(config, clock=clock) as app:
            await report(app.smtp_port or 0)
            async with aiosmtplib.SMTP(
                hostname="127.0.0.1", port=app.smtp_port or 0, start_tls=False
            ) as client:
                await client.sendmail(
                    "bob@tenant.example",
                    ["emergency@localhost"],
                    email_bytes(subject="Platform API is down", sender="bob@tenant.example"),
                )
            await eventually(lambda: len(pd.events) == 2)
            pd.subscribe(f"http://127.0.0.1:{app.alerts_port}/pagerduty", NEW_SECRET)
            assert await pd.acknowledge_on_app("INC-1") == 200
            await eventually(lambda: incidents_by_ref(tmp_path)["INC-1"].status == "acknowledged")
            clock.jump(app, minutes=45)  # past both respond-by times (40 min out of hours)
            await eventually(lambda: any(e.get("routing_key") == ESCALATION_KEY for e in pd.events))
            await eventually(lambda: "sla.respond.overdue" in kinds_of(tmp_path, "INC-2"))
    assert [e["dedup_key"] for e in pd.events if e.get("routing_key") == ESCALATION_KEY] == [
        "INC-2-escalation-1"
    ]
    assert not any(k.startswith("sla.") for k in kinds_of(tmp_path, "INC-1"))


def incidents_by_ref(state: Path) -> dict[str, Any]:
    return {i.ref: i for i in incidents(state)}


def kinds_of(state: Path, ref: str) -> list[str]:
    return [e.kind for e in incidents_by_ref(state)[ref].timeline]
