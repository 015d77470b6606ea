"""Alerts meet the people who report them: tenants' reports and alerts about one component
join one incident, trusted senders only, and unrelated traffic stays apart."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib

from tests.conftest import OVERNIGHT, email_bytes, eventually, make_config, running, ticking
from tests.fakes.monitoring import pingdom_body, post
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.smtp_capture import SmtpCapture
from tests.test_alerts_intake import incidents

ROUTING_KEY = "R" * 32
PINGDOM_TOKEN = "pingdom-url-token-0123456789ab"
PD_SECRET = "pd-webhook-secret-0123456789abc"


def config(tmp_path: Path, pd: FakePagerDuty, relay: SmtpCapture) -> Any:
    return make_config(
        tmp_path,
        alerts={
            "port": 0,
            "source": [
                {
                    "name": "pingdom",
                    "kind": "pingdom",
                    "auth": "url_token",
                    "secret": {"value": PINGDOM_TOKEN},
                }
            ],
        },
        pagerduty={
            "routing_key": {"value": ROUTING_KEY},
            "url": pd.url,
            "webhook": {"secrets": [{"value": PD_SECRET}]},
        },
        mail_out={
            "mode": "smtp",
            "smtp": {"host": "127.0.0.1", "port": relay.port, "starttls": False},
        },
    )


async def send(port: int, raw: bytes, sender: str) -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
        await client.sendmail(sender, ["emergency@localhost"], raw)


def mail_to(relay: SmtpCapture, address: str) -> list[str]:
    return [
        email.message_from_bytes(m.content, policy=policy.default).get_content()
        for m in relay.messages
        if address in m.rcpt_tos
    ]


async def test_pingdom_down_then_tenants_write_in_and_pagerduty_ack_reaches_them(
    tmp_path: Path,
) -> None:
    """A Pingdom check down out of hours pages; a trusted tenant writing about the site being
    down joins that incident and is told "we already know", then hears of the acknowledgement
    on PagerDuty; a stranger naming the same thing and an unrelated question stay apart."""
    clock = ticking(OVERNIGHT)
    async with FakePagerDuty() as pd, SmtpCapture() as relay:
        pd.clock = clock
        async with (
            running(config(tmp_path, pd, relay), clock=clock) as app,
            aiohttp.ClientSession() as session,
        ):
            url = f"http://127.0.0.1:{app.alerts_port}/alerts/pingdom?token={PINGDOM_TOKEN}"
            assert (await post(session, url, pingdom_body(9, "Apps: healthcheck")))[0] == 200
            await eventually(lambda: pd.events, timeout=30)
            port = app.smtp_port or 0
            await send(port, email_bytes(), "alice@tenant.example")
            await send(port, email_bytes(sender="mallory@evil.example"), "mallory@evil.example")
            await send(
                port,
                email_bytes(
                    subject="Question about custom domains",
                    body="How do I set up a custom domain?",
                    sender="bob@tenant.example",
                ),
                "bob@tenant.example",
            )
            await eventually(lambda: len(incidents(tmp_path)) == 3, timeout=30)
            await eventually(lambda: mail_to(relay, "alice@tenant.example"), timeout=30)
            pd.subscribe(f"http://127.0.0.1:{app.alerts_port}/pagerduty", PD_SECRET)
            assert await pd.acknowledge_on_app("INC-1") == 200
            await eventually(lambda: len(mail_to(relay, "alice@tenant.example")) == 2, timeout=30)
    alert, *others = sorted(incidents(tmp_path), key=lambda i: i.id)
    assert alert.priority == "P1" and alert.status == "acknowledged"
    assert [r.address for r in alert.reporters] == ["alice@tenant.example"]
    assert alert.pages_sent == 1 and len(pd.events) == 1  # the tenant did not page again
    ack, update = mail_to(relay, "alice@tenant.example")
    assert "We already know about this problem from our monitoring" in ack
    assert "An engineer is on it" in update
    stranger, question = others
    assert [r.address for r in stranger.reporters] == ["mallory@evil.example"]
    assert "unverified sender" in stranger.flags and stranger.pages_sent == 0
    assert [r.address for r in question.reporters] == ["bob@tenant.example"]


async def test_alert_joins_an_open_trusted_report_but_not_an_unverified_one(tmp_path: Path) -> None:
    """An alert about a component joins the open report from a trusted tenant that names it
    (and pages for it); a report held as unverified never receives an alert."""
    clock = ticking(OVERNIGHT)
    async with (
        FakePagerDuty() as pd,
        SmtpCapture() as relay,
        running(config(tmp_path, pd, relay), clock=clock) as app,
        aiohttp.ClientSession() as session,
    ):
        port = app.smtp_port or 0
        await send(
            port,
            email_bytes(
                subject="Router errors",
                body="We see 502 from the router on every app",
                sender="mallory@evil.example",
            ),
            "mallory@evil.example",
        )
        await eventually(lambda: len(incidents(tmp_path)) == 1, timeout=30)
        url = f"http://127.0.0.1:{app.alerts_port}/alerts/pingdom?token={PINGDOM_TOKEN}"
        assert (await post(session, url, pingdom_body(1, "Apps: healthcheck")))[0] == 200
        await eventually(lambda: len(incidents(tmp_path)) == 2, timeout=30)
        await send(
            port,
            email_bytes(
                subject="Logs missing",
                body="Our log drain has stopped since 02:00",
                sender="carol@tenant.example",
            ),
            "carol@tenant.example",
        )
        await eventually(lambda: len(incidents(tmp_path)) == 3, timeout=30)
        body = pingdom_body(2, "Log drain check")
        body["check_params"]["hostname"] = "logs.example"
        body["tags"] = ["live"]
        assert (await post(session, url, body))[0] == 200
        await eventually(
            lambda: any("alert" in i.flags for i in incidents(tmp_path) if i.id == 3), timeout=10
        )
    by_id = {i.id: i for i in incidents(tmp_path)}
    assert "alert" not in by_id[1].flags  # the unverified report got no alert
    assert "alert" in by_id[2].flags and by_id[2].pages_sent == 1
    assert by_id[3].pages_sent == 1 and "component:logs" in by_id[3].flags
    assert len(by_id) == 3
