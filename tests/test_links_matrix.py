"""Matrix link outages against the real Synapse: chat messages wait for the homeserver (in
order, none lost, none dead-lettered) and /healthz says the link is down meanwhile."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from tests.conftest import IN_HOURS, email_bytes, eventually, make_config, running, ticking
from tests.peers.synapse import Synapse
from tests.test_http_status import get

pytestmark = [pytest.mark.peer, pytest.mark.slow]
OUTAGE_S = 16.0  # longer than the old budget: 12 attempts 1 s apart, dead after ~11 s


def outbox_rows(state: Path) -> list[tuple[int, str, str, int]]:
    """(id, kind, state, attempts) of every outbox entry."""
    conn = sqlite3.connect(f"file:{state / 'gateway.sqlite3'}?mode=ro", uri=True)
    try:
        return list(conn.execute("SELECT id, kind, state, attempts FROM outbox ORDER BY id"))
    finally:
        conn.close()


def settled(state: Path) -> bool:
    rows = outbox_rows(state)
    return bool(rows) and all(row[2] != "pending" for row in rows)


async def report(port: int, subject: str, sender: str) -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as smtp:
        await smtp.sendmail(
            sender,
            ["emergency@localhost"],
            email_bytes(subject=subject, body=subject, sender=sender),
        )


def bot_messages(synapse: Synapse, token: str, room: str, bot: str) -> list[dict[str, Any]]:
    events = synapse.messages(token, room, limit=500)
    return [e for e in events if e["sender"] == bot and e["type"] == "m.room.message"]


@pytest.mark.timeout(180)
async def test_homeserver_outage_longer_than_the_old_budget_loses_nothing(
    synapse: Synapse, tmp_path: Path
) -> None:
    """Synapse stopped for 16 s while two incidents are reported: /healthz turns unhealthy
    naming the Matrix link, no chat entry burns an attempt or dies, and once Synapse is back
    every announcement is in the room exactly once, in the order reported."""
    bot, _, _ = synapse.register("outage-bot", password="outage-bot-pw")
    eng, eng_token, _ = synapse.register("outage-eng")
    room = synapse.create_room(eng_token, invite=[bot], name="incidents")
    cfg = make_config(
        tmp_path,
        health={"down_grace_s": 2},
        matrix={
            "homeserver": synapse.url,
            "user_id": bot,
            "password": {"value": "outage-bot-pw"},
            "incidents_room": room,
            "engineers": [eng],
            "sync_timeout_s": 1,
            "backoff_max_s": 1,
        },
    )
    try:
        async with running(cfg, ticking(IN_HOURS)) as app:
            assert app.matrix is not None and app.smtp_port is not None
            await eventually(
                lambda: app.matrix is not None and app.matrix.state == "connected", timeout=20
            )
            await asyncio.to_thread(synapse.stop)
            await report(app.smtp_port, "First outage report", "alice@tenant.example")
            await report(app.smtp_port, "Database is gone", "bob@t.example")
            await report(app.smtp_port, "More on the first", "alice@tenant.example")
            status, _, body = await eventually(lambda: _unhealthy(app.http_port), timeout=15)
            assert status == 503 and any(p.startswith("matrix:") for p in body["problems"])
            await asyncio.sleep(OUTAGE_S)
            during = outbox_rows(tmp_path)
            await asyncio.to_thread(synapse.start)
            await eventually(lambda: settled(tmp_path), timeout=40)
            status, _, body = await eventually(lambda: _healthy(app.http_port), timeout=15)
    finally:
        await asyncio.to_thread(synapse.start)  # the session's other tests need it
    chat = [r for r in during if r[1].startswith("chat.")]
    print(
        f"\nFIGURE matrix outage: outage_s={OUTAGE_S:.0f} chat_entries={len(chat)} "
        f"attempts_during_outage={sum(r[3] for r in chat)} "
        f"dead={sum(r[2] == 'dead' for r in outbox_rows(tmp_path))}"
    )
    assert chat and all(r[2] == "pending" and r[3] == 0 for r in chat), during
    rows = outbox_rows(tmp_path)
    assert [r for r in rows if r[2] == "dead"] == []
    messages = bot_messages(synapse, eng_token, room, bot)
    bodies = [m["content"]["body"] for m in messages]
    order = [
        next((i for i, b in enumerate(bodies) if text in b), -1)
        for text in (
            "INC-1 · P1 Critical incident: First outage report",
            "INC-2",
            "More on the first",
        )
    ]
    assert -1 not in order and order == sorted(order), bodies
    assert len(bodies) == len(set(bodies)), bodies
    assert len({m["event_id"] for m in messages}) == len(
        [r for r in rows if r[1].startswith("chat.") and r[2] == "done"]
    )


async def _unhealthy(port: int | None) -> tuple[int, Any, Any] | None:
    status, headers, body = await get(port, "/healthz")
    return (status, headers, body) if not body["healthy"] else None


async def _healthy(port: int | None) -> tuple[int, Any, Any] | None:
    status, headers, body = await get(port, "/healthz")
    return (status, headers, body) if body["healthy"] else None


def inbox_bodies(state: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{state / 'gateway.sqlite3'}?mode=ro", uri=True)
    try:
        return [
            row[0].decode()
            for row in conn.execute("SELECT raw FROM inbox WHERE channel = 'matrix'")
        ]
    finally:
        conn.close()


async def test_private_report_room_is_degraded_until_the_bot_is_invited(
    synapse: Synapse, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A configured private report room the bot was not invited to: Matrix is `degraded`,
    /healthz answers 503 naming the room, `status` shows it; once invited, the bot joins
    without a restart, the link is `connected` again and a report there is taken in."""
    from gateway.cli.status import status_command  # noqa: PLC0415

    bot, _, _ = synapse.register("join-bot", password="join-bot-pw")
    eng, eng_token, _ = synapse.register("join-eng")
    incidents = synapse.create_room(eng_token, invite=[bot], name="incidents")
    private = synapse.create_room(eng_token, name="private reports")  # bot not invited
    cfg = make_config(
        tmp_path,
        matrix={
            "homeserver": synapse.url,
            "user_id": bot,
            "password": {"value": "join-bot-pw"},
            "incidents_room": incidents,
            "engineers": [eng],
            "sync_timeout_s": 1,
            "backoff_max_s": 1,
            "report_rooms": [{"room": private, "mailbox": "support"}],
        },
    )
    async with running(cfg, ticking(IN_HOURS)) as app:
        link = app.matrix
        assert link is not None
        await eventually(lambda: link.state == "degraded", timeout=20)
        status, _, body = await get(app.http_port, "/healthz")
        code = await asyncio.to_thread(status_command, cfg)
        shown = capsys.readouterr().out
        assert status == 503 and body["components"]["matrix"] == "degraded"
        assert [p for p in body["problems"] if private in p and "invite the bot" in p], body
        assert code == 1 and private in shown and "degraded" in shown
        await asyncio.to_thread(
            synapse.api,
            "POST",
            f"/_matrix/client/v3/rooms/{private}/invite",
            eng_token,
            {"user_id": bot},
        )
        await eventually(lambda: link.state == "connected", timeout=20)
        status, _, body = await eventually(lambda: _healthy(app.http_port), timeout=10)
        await asyncio.to_thread(synapse.send_text, eng_token, private, "Backups are failing")
        await eventually(lambda: any("Backups are failing" in b for b in inbox_bodies(tmp_path)))
