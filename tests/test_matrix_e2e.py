"""Matrix end to end against a real Synapse: announcements, engineers' commands, relays back
to email and chat reporters, reopening, refusals, and a restart that replays nothing."""

from __future__ import annotations

import asyncio
import email
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email import policy
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from gateway.app import App
from gateway.store import incidents, schema
from tests.conftest import (
    IN_HOURS,
    THREAD_KEY,
    email_bytes,
    eventually,
    make_config,
    running,
    ticking,
)
from tests.daemon import Daemon
from tests.fakes.smtp_capture import SmtpCapture
from tests.peers.synapse import Synapse

pytestmark = pytest.mark.peer


@dataclass
class World:
    synapse: Synapse
    bot: str
    bot_password: str
    eng: str
    eng_token: str
    tenant: str
    tenant_token: str
    stranger_token: str
    incidents: str
    reports: str


@pytest.fixture
def world(synapse: Synapse) -> World:
    bot, _, _ = synapse.register("gateway", password="bot-password-1")
    eng, eng_token, _ = synapse.register("engineer")
    tenant, tenant_token, _ = synapse.register("tenant")
    stranger, stranger_token, _ = synapse.register("stranger")
    incidents = synapse.create_room(
        eng_token, invite=[bot, stranger], tokens_to_join=[stranger_token], name="incidents"
    )
    reports = synapse.create_room(
        eng_token, invite=[bot, tenant], tokens_to_join=[tenant_token], name="ask-platform"
    )
    return World(
        synapse,
        bot,
        "bot-password-1",
        eng,
        eng_token,
        tenant,
        tenant_token,
        stranger_token,
        incidents,
        reports,
    )


def config_for(w: World, state: Path, relay_port: int) -> Any:
    return make_config(
        state,
        mail_out={
            "mode": "smtp",
            "smtp": {"host": "127.0.0.1", "port": relay_port, "starttls": False},
        },
        matrix={
            "homeserver": w.synapse.url,
            "user_id": w.bot,
            "password": {"value": w.bot_password},
            "incidents_room": w.incidents,
            "report_rooms": [{"room": w.reports}],
            "engineers": [w.eng],
            "sync_timeout_s": 1,
            "backoff_max_s": 1,
        },
        trust={"allow_domains": ["tenant.example"], "allow_addresses": [w.tenant]},
    )


def bot_notices(w: World, room: str, contains: str = "") -> list[dict[str, Any]]:
    return [
        e
        for e in w.synapse.messages(w.eng_token, room, limit=200)
        if e["sender"] == w.bot
        and e.get("content", {}).get("msgtype") == "m.notice"
        and contains in e["content"].get("body", "")
    ]


def thread_of(event: dict[str, Any]) -> str | None:
    relates = event.get("content", {}).get("m.relates_to", {})
    return relates.get("event_id") if relates.get("rel_type") == "m.thread" else None


def incident(state: Path, number: int = 1) -> Any:
    conn = schema.connect(str(state / "gateway.sqlite3"), readonly=True)
    try:
        return incidents.load_incident(conn, number)
    finally:
        conn.close()


@asynccontextmanager
async def connected(config: Any) -> AsyncIterator[App]:
    """The real App, running, with its Matrix link logged in and in its rooms."""
    async with running(config, clock=ticking(IN_HOURS)) as app:
        assert app.matrix is not None
        await eventually(app.matrix.connected.is_set, timeout=20)
        yield app


async def report_by_mail(w: World, app: App, raw: bytes) -> dict[str, Any]:
    """Email a P1 report; returns the incident's announcement (its thread root)."""
    await send_mail(app.smtp_port or 0, raw)
    [root] = await eventually(lambda: bot_notices(w, w.incidents, "INC-1 · P1"))
    return root


async def send_mail(port: int, raw: bytes) -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
        await client.sendmail("alice@tenant.example", ["emergency@localhost"], raw)


@pytest.fixture
async def relay() -> AsyncIterator[SmtpCapture]:
    async with SmtpCapture() as capture:
        yield capture


async def test_email_reporter_full_flow(world: World, relay: SmtpCapture, tmp_path: Path) -> None:
    """P1 email → announcement → !ack, !update → threaded email update → !resolve → resolution
    with reopen instructions → reporter replies → reopened, and the reply shows in the thread."""
    w = world
    async with connected(config_for(w, tmp_path, relay.port)) as app:
        root = await report_by_mail(w, app, email_bytes(message_id="<rep-1@tenant.example>"))
        assert "alice@tenant.example" in root["content"]["body"]

        w.synapse.send_text(w.eng_token, w.incidents, "!ack", thread_root=root["event_id"])
        [acked] = await eventually(lambda: bot_notices(w, w.incidents, "acknowledged by"))
        assert thread_of(acked) == root["event_id"]

        w.synapse.send_text(
            w.eng_token,
            w.incidents,
            "!update The load balancer is back.",
            thread_root=root["event_id"],
        )
        await eventually(lambda: len(relay.messages) >= 2)  # acknowledgement + update
        update = email.message_from_bytes(relay.messages[1].content, policy=policy.default)
        assert update["In-Reply-To"] == "<rep-1@tenant.example>"
        assert "The load balancer is back." in update.get_content()
        ack = email.message_from_bytes(relay.messages[0].content, policy=policy.default)
        # software's mail says so; an engineer's own words do not, but keep the loop guards
        assert ack["Auto-Submitted"] == "auto-replied"
        assert update["Auto-Submitted"] is None and update["X-Chatops-Loop"]

        w.synapse.send_text(
            w.eng_token,
            w.incidents,
            "!resolve Replaced the faulty node.",
            thread_root=root["event_id"],
        )
        await eventually(lambda: len(relay.messages) >= 3)
        resolution = email.message_from_bytes(relay.messages[2].content, policy=policy.default)
        assert "Replaced the faulty node." in resolution.get_content()
        assert "reply to this message" in resolution.get_content()

        quoted = (
            "Still broken for us.\n\nLe lun. 23 nov. 2026 à 10:40, Platform support <\n"
            "emergency@gw.example> a\nécrit :\n\n> INC-1 (Our site is down) is resolved."
        )
        reply = email_bytes(
            subject="Re: [INC-1] Our site is down",
            body=quoted,
            message_id="<rep-2@tenant.example>",
            In_Reply_To=resolution["Message-ID"],
            References=resolution["Message-ID"],
        )
        await send_mail(app.smtp_port or 0, reply)
        [reopened] = await eventually(lambda: bot_notices(w, w.incidents, "INC-1 reopened"))
        assert thread_of(reopened) == root["event_id"]
        assert "Still broken for us." in reopened["content"]["body"]
        assert "is resolved" not in reopened["content"]["body"]  # quoted history stripped
    final = incident(tmp_path)
    assert final.status == "open" and final.pages_sent == 1
    kinds = [e.kind for e in final.timeline]
    assert {"command.ack", "command.update", "command.resolve", "reopened"} <= set(kinds)


async def test_chat_reporter_gets_updates_in_their_thread(
    world: World, relay: SmtpCapture, tmp_path: Path
) -> None:
    """A report in a report room is acknowledged in its thread and receives !update there."""
    w = world
    async with connected(config_for(w, tmp_path, relay.port)):
        report = w.synapse.send_text(
            w.tenant_token, w.reports, "Our site is down, every page gives 502"
        )
        [ack] = await eventually(lambda: bot_notices(w, w.reports, "logged this as INC-1"))
        assert thread_of(ack) == report
        [root] = await eventually(lambda: bot_notices(w, w.incidents, "INC-1 · P1"))
        w.synapse.send_text(
            w.eng_token, w.incidents, "!update Fixed the DNS record.", thread_root=root["event_id"]
        )
        [update] = await eventually(lambda: bot_notices(w, w.reports, "Fixed the DNS record."))
        assert thread_of(update) == report
        w.synapse.send_text(w.tenant_token, w.reports, "Thanks, works again", thread_root=report)
        await eventually(lambda: bot_notices(w, w.incidents, "Thanks, works again"))
    assert incident(tmp_path).reporters[0].address == w.tenant


async def test_stranger_cannot_run_commands(
    world: World, relay: SmtpCapture, tmp_path: Path
) -> None:
    """A room member who is not an engineer gets a refusal and the incident is unchanged."""
    w = world
    async with connected(config_for(w, tmp_path, relay.port)) as app:
        root = await report_by_mail(w, app, email_bytes())
        w.synapse.send_text(
            w.stranger_token, w.incidents, "!resolve nothing to see", thread_root=root["event_id"]
        )
        await eventually(lambda: bot_notices(w, w.incidents, "only the support engineers"))
    assert incident(tmp_path).status == "open"
    assert len(relay.messages) == 1  # the acknowledgement only


async def test_unverified_report_pages_only_when_an_engineer_confirms(
    world: World, relay: SmtpCapture, tmp_path: Path
) -> None:
    """A stranger's P1 pages nobody; the room is asked; a non-engineer's !page is refused;
    the engineer's !page pages exactly once, and a second !page changes nothing."""
    w = world
    async with connected(config_for(w, tmp_path, relay.port)) as app:
        root = await report_by_mail(w, app, email_bytes(sender="mallory@evil.example"))
        await eventually(lambda: bot_notices(w, w.incidents, "!page INC-1"))
        assert incident(tmp_path).pages_sent == 0
        w.synapse.send_text(w.stranger_token, w.incidents, "!page", thread_root=root["event_id"])
        await eventually(lambda: bot_notices(w, w.incidents, "only the support engineers"))
        assert incident(tmp_path).pages_sent == 0
        for _ in range(2):
            w.synapse.send_text(w.eng_token, w.incidents, "!page INC-1")
        await eventually(lambda: bot_notices(w, w.incidents, "already been paged"))
        await eventually(lambda: incident(tmp_path).pages_sent == 1)
    final = incident(tmp_path)
    assert final.pages_sent == 1 and "unverified sender" not in final.flags


async def test_restart_replays_no_history_and_applies_no_command_twice(
    world: World, relay: SmtpCapture, tmp_path: Path
) -> None:
    """After a restart the bot neither replays old commands nor posts its answers again."""
    w = world
    config = config_for(w, tmp_path, relay.port)
    async with connected(config) as app:
        root = await report_by_mail(w, app, email_bytes())
        w.synapse.send_text(
            w.eng_token, w.incidents, "!update First update.", thread_root=root["event_id"]
        )
        await eventually(lambda: len(relay.messages) >= 2)
    async with connected(config) as app:
        w.synapse.send_text(
            w.eng_token, w.incidents, "!note after restart", thread_root=root["event_id"]
        )
        await eventually(lambda: bot_notices(w, w.incidents, "Noted on the timeline"))
    assert len(relay.messages) == 2
    assert len(bot_notices(w, w.incidents, "Update sent to")) == 1
    assert len(bot_notices(w, w.incidents, "INC-1 · P1")) == 1
    assert [e.kind for e in incident(tmp_path).timeline].count("command.update") == 1


async def test_synapse_outage_loses_nothing_and_doubles_nothing(
    world: World, relay: SmtpCapture, tmp_path: Path
) -> None:
    """With Synapse down, a new report's announcement waits; after the restart it is posted
    once, and commands work again."""
    w = world
    async with connected(config_for(w, tmp_path, relay.port)) as app:
        w.synapse.stop()
        try:
            await send_mail(app.smtp_port or 0, email_bytes(subject="Platform API is down"))
            await eventually(lambda: relay.messages)  # mail does not wait for chat
            await eventually(lambda: app.matrix is not None and not app.matrix.connected.is_set())
        finally:
            w.synapse.start()
        [root] = await eventually(lambda: bot_notices(w, w.incidents, "INC-1 · P1"), timeout=30)
        w.synapse.send_text(w.eng_token, w.incidents, "!ack", thread_root=root["event_id"])
        await eventually(lambda: bot_notices(w, w.incidents, "acknowledged by"), timeout=30)
    assert len(bot_notices(w, w.incidents, "INC-1 · P1")) == 1
    assert len(bot_notices(w, w.incidents, "acknowledged by")) == 1


def update_relayed(state: Path) -> bool:
    """The update's email was delivered to the relay and recorded as done."""
    conn = schema.connect(str(state / "gateway.sqlite3"), readonly=True)
    try:
        (done,) = conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE kind = 'mail.send' AND state = 'done'"
            " AND json_extract(payload, '$.purpose') = 'update'"
        ).fetchone()
    finally:
        conn.close()
    return bool(done)


async def test_sigkill_applies_no_command_twice(
    world: World, relay: SmtpCapture, tmp_path: Path
) -> None:
    """The daemon is SIGKILLed right after relaying an update (the relay's 250 recorded);
    after a restart the update is neither applied nor relayed again, and old history is not
    replayed. (A kill between the relay's 250 and that record sends the mail again, with the
    same Message-ID: email delivery is at least once, and the README says so.)"""
    w = world
    extra = (
        f'[mail_out]\nmode = "smtp"\n[mail_out.smtp]\nhost = "127.0.0.1"\n'
        f"port = {relay.port}\nstarttls = false\n"
        f'[matrix]\nhomeserver = "{w.synapse.url}"\nuser_id = "{w.bot}"\n'
        f'password = {{ value = "{w.bot_password}" }}\nincidents_room = "{w.incidents}"\n'
        f'engineers = ["{w.eng}"]\nsync_timeout_s = 1\nbackoff_max_s = 1\n'
        f'[trust]\nallow_domains = ["tenant.example"]\n'
        f'[threading]\nkey = {{ value = "{THREAD_KEY}" }}\n'
    )
    d = Daemon(tmp_path, extra)
    try:
        await asyncio.to_thread(d.start)
        await send_mail(d.port, email_bytes())
        [root] = await eventually(lambda: bot_notices(w, w.incidents, "INC-1 · P1"), timeout=30)
        w.synapse.send_text(
            w.eng_token, w.incidents, "!update Working on it.", thread_root=root["event_id"]
        )
        await eventually(lambda: bot_notices(w, w.incidents, "Update sent to"), timeout=30)
        await eventually(lambda: update_relayed(tmp_path / "state"), timeout=30)
        d.kill()
        await asyncio.to_thread(d.start)
        w.synapse.send_text(
            w.eng_token, w.incidents, "!note after the crash", thread_root=root["event_id"]
        )
        await eventually(lambda: bot_notices(w, w.incidents, "Noted on the timeline"), timeout=30)
        assert await asyncio.to_thread(d.stop) == 0
    finally:
        d.kill()
    updates = [m for m in relay.messages if b"Working on it." in m.content]
    assert len(updates) == 1
    assert len(bot_notices(w, w.incidents, "Update sent to")) == 1
    assert len(bot_notices(w, w.incidents, "INC-1 · P1")) == 1
