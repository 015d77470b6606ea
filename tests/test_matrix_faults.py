"""Matrix sends through a faulty path to the real Synapse: 5xx, 429 (M_LIMIT_EXCEEDED with
retry_after_ms), resets before and after Synapse stored the event. Every chat message is in
the room exactly once; a dead-lettered page is announced once in the incidents room."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from tests.conftest import IN_HOURS, email_bytes, eventually, make_config, running, ticking
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.synapse_proxy import SynapseProxy
from tests.peers.synapse import Synapse

pytestmark = pytest.mark.peer
SUBJECTS = ("Website is down", "Database unreachable", "Payments failing")  # 3 incidents
ROUTING_KEY = "MatrixFaultKey0123456789abcdefAB"


def chat_rows(state: Path) -> list[tuple[int, str, str, str | None]]:
    conn = sqlite3.connect(state / "gateway.sqlite3")
    try:
        return list(
            conn.execute(
                "SELECT id, kind, state, json_extract(result, '$.event_id') FROM outbox"
                " WHERE kind LIKE 'chat.%' ORDER BY id"
            )
        )
    finally:
        conn.close()


def settled(state: Path) -> bool:
    conn = sqlite3.connect(state / "gateway.sqlite3")
    try:
        (pending,) = conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()
        (total,) = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()
        return bool(total) and not pending
    finally:
        conn.close()


async def test_send_faults_never_duplicate_an_event(synapse: Synapse, tmp_path: Path) -> None:
    """Three incidents announced through 500, 429, resets before and after forwarding, and a
    page PagerDuty refuses: each chat entry is one event in the room, the dead-letter alert
    is posted once, and no alert is raised about the alert."""
    bot, _, _ = synapse.register("gateway", password="bot-password-2")
    eng, eng_token, _ = synapse.register("engineer")
    room = synapse.create_room(eng_token, invite=[bot], name="incidents")
    async with SynapseProxy(synapse.url) as proxy, FakePagerDuty(routing_keys={ROUTING_KEY}) as pd:
        for fault in (
            {"reset_after": True},
            {"status": 500},
            {"status": 429, "retry_after_ms": 300},
            {"reset": True},
            {"reset_after": True},
            {"reset_after": True},
        ):
            proxy.fail_next_send(**fault)
        pd.fail_next(status=400)
        cfg = make_config(
            tmp_path,
            pagerduty={"routing_key": {"value": ROUTING_KEY}, "url": pd.url},
            matrix={
                "homeserver": proxy.url,
                "user_id": bot,
                "password": {"value": "bot-password-2"},
                "incidents_room": room,
                "engineers": [eng],
                "sync_timeout_s": 1,
                "backoff_max_s": 1,
            },
        )
        async with running(cfg, ticking(IN_HOURS)) as app:
            assert app.smtp_port is not None
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=app.smtp_port) as smtp:
                for subject in SUBJECTS:
                    await smtp.sendmail(
                        "alice@tenant.example",
                        ["emergency@localhost"],
                        email_bytes(subject=subject, body=subject),
                    )
            await eventually(lambda: proxy.pending_faults == 0 and settled(tmp_path), timeout=40)
    rows = chat_rows(tmp_path)
    events: list[dict[str, Any]] = [
        e
        for e in synapse.messages(eng_token, room, limit=500)
        if e["sender"] == bot and e["type"] == "m.room.message"
    ]
    in_room = [e["event_id"] for e in events]
    recorded = [r[3] for r in rows if r[2] == "done"]
    alerts = [e for e in events if "Gave up on the page" in e["content"]["body"]]
    print(
        f"\nFIGURE matrix faults: send_requests={proxy.sends} "
        f"forwarded={proxy.forwarded_sends} chat_entries={len(rows)} "
        f"events_in_room={len(in_room)} duplicates={len(in_room) - len(set(in_room))} "
        f"dead_letter_alerts={len(alerts)}"
    )
    assert all(r[2] == "done" for r in rows)
    assert sorted(in_room) == sorted(recorded) and len(set(in_room)) == len(in_room)
    for subject in SUBJECTS:
        assert (
            sum(
                subject in e["content"]["body"]
                for e in events
                if "m.relates_to" not in e["content"]
            )
            == 1
        )
    assert len(alerts) == 1 and "outbox retry" in alerts[0]["content"]["body"]
    assert proxy.forwarded_sends > len(in_room)  # Synapse saw retries and de-duplicated them
