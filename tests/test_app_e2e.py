"""End to end with the real App: SMTP in over loopback → incident → page → threaded reply."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path

import aiosmtplib

from gateway.store import schema
from gateway.store.incidents import list_incidents, load_incident
from tests.conftest import (
    IN_HOURS,
    OVERNIGHT,
    email_bytes,
    eventually,
    make_config,
    running,
    ticking,
)
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.smtp_capture import SmtpCapture

ROUTING_KEY = "R" * 32


async def send(
    port: int, raw: bytes, sender: str = "alice@tenant.example", rcpt: str = "emergency@localhost"
) -> str:
    """Send one message with a real SMTP client; returns the text of the 250 reply to DATA
    (aiosmtplib raises for any other code)."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
        errors, reply = await client.sendmail(sender, [rcpt], raw)
    assert not errors
    return reply


def incidents(state: Path) -> list:
    conn = schema.connect(str(state / "gateway.sqlite3"), readonly=True)
    try:
        return [load_incident(conn, i.id) for i in list_incidents(conn)]
    finally:
        conn.close()


async def test_p1_email_pages_tickets_and_acknowledges_in_thread(tmp_path: Path) -> None:
    """A P1 email to the emergency address opens one incident, pages once and replies in thread."""
    async with FakePagerDuty() as pd, SmtpCapture() as relay:
        config = make_config(
            tmp_path,
            pagerduty={"routing_key": {"value": ROUTING_KEY}, "url": pd.url},
            mail_out={
                "mode": "smtp",
                "smtp": {"host": "127.0.0.1", "port": relay.port, "starttls": False},
            },
        )
        raw = email_bytes(message_id="<report-1@tenant.example>")
        async with running(config, clock=ticking(IN_HOURS)) as app:
            assert app.smtp_port
            await send(app.smtp_port, raw)
            await eventually(lambda: relay.messages and pd.events)
    [incident] = incidents(tmp_path)
    assert incident.priority == "P1" and incident.pages_sent == 1
    assert [e["dedup_key"] for e in pd.events] == [incident.ref]
    [ack] = relay.messages
    assert ack.rcpt_tos == ("alice@tenant.example",)
    reply = email.message_from_bytes(ack.content, policy=policy.default)
    assert reply["In-Reply-To"] == "<report-1@tenant.example>"
    assert "<report-1@tenant.example>" in reply["References"]
    assert reply["Subject"] == f"Re: [{incident.ref}] Our site is down"
    assert reply["Auto-Submitted"] == "auto-replied"
    body = reply.get_content()
    assert incident.ref in body and "paged" in body and "P1" in body
    kinds = [e.kind for e in incident.timeline]
    assert kinds[:2] == ["reported", "triaged"]
    assert {"paged", "ticketed", "replied"} <= set(kinds)


async def test_embedded_defaults_record_page_and_write_eml(tmp_path: Path) -> None:
    """Without PagerDuty or a relay, the page is recorded locally and the reply is an .eml file."""
    config = make_config(tmp_path)
    async with running(config, clock=ticking(OVERNIGHT)) as app:
        await send(app.smtp_port or 0, email_bytes())
        folder = tmp_path / "outgoing-mail"
        await eventually(lambda: folder.exists() and list(folder.glob("*.eml")))
    [incident] = incidents(tmp_path)
    assert incident.priority == "P1" and incident.pages_sent == 1
    [eml] = list((tmp_path / "outgoing-mail").glob("*.eml"))
    reply = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert reply["To"] == "alice@tenant.example"
    assert f"[{incident.ref}]" in reply["Subject"]


async def test_reply_in_thread_joins_the_incident(tmp_path: Path) -> None:
    """A reporter's reply referencing our acknowledgement joins the incident, no new page."""
    config = make_config(tmp_path)
    async with running(config, clock=ticking(IN_HOURS)) as app:
        port = app.smtp_port or 0
        await send(port, email_bytes(message_id="<first@tenant.example>"))
        await eventually(lambda: incidents(tmp_path) and incidents(tmp_path)[0].pages_sent)
        follow = email_bytes(
            subject="Re: Our site is down",
            body="Still down, now 503.",
            message_id="<second@tenant.example>",
            In_Reply_To="<first@tenant.example>",
            References="<first@tenant.example>",
        )
        await send(port, follow)
        await eventually(
            lambda: any(e.kind == "reporter.replied" for e in incidents(tmp_path)[0].timeline)
        )
    [incident] = incidents(tmp_path)
    assert incident.pages_sent == 1
    assert incident.reporters[0].message_ids == (
        "<first@tenant.example>",
        "<second@tenant.example>",
    )


async def test_resent_message_is_processed_once(tmp_path: Path) -> None:
    """The same Message-ID from the same sender, sent twice, is accepted twice, processed once."""
    config = make_config(tmp_path)
    raw = email_bytes(message_id="<same@tenant.example>")
    async with running(config, clock=ticking(IN_HOURS)) as app:
        first = await send(app.smtp_port or 0, raw)
        second = await send(app.smtp_port or 0, raw)
        await eventually(lambda: incidents(tmp_path) and incidents(tmp_path)[0].pages_sent)
    assert first.startswith("2.0.0") and second.startswith("2.0.0")
    assert len(incidents(tmp_path)) == 1


async def test_automatic_mail_is_recorded_and_ignored(tmp_path: Path) -> None:
    """An out-of-office reply to the emergency address opens nothing and is not answered."""
    config = make_config(tmp_path)
    raw = email_bytes(subject="Automatic reply: site down", Auto_Submitted="auto-replied")
    async with running(config, clock=ticking(IN_HOURS)) as app:
        await send(app.smtp_port or 0, raw)
        conn = schema.connect(str(tmp_path / "gateway.sqlite3"), readonly=True)
        try:
            outcome = await eventually(
                lambda: conn.execute("SELECT outcome FROM inbox WHERE state = 'done'").fetchone()
            )
        finally:
            conn.close()
    assert outcome[0].startswith("ignored")
    assert incidents(tmp_path) == []
    assert not (tmp_path / "outgoing-mail").exists() or not list(
        (tmp_path / "outgoing-mail").glob("*.eml")
    )
