"""Alarm rooms against a real Synapse: alert incidents posted by priority, threaded per
incident, with engineers' commands working in the alarm thread."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import OVERNIGHT, eventually, make_config, running, ticking
from tests.fakes.monitoring import generic_body, pingdom_body, post
from tests.peers.synapse import Synapse
from tests.test_alerts_intake import incidents
from tests.test_matrix_e2e import thread_of

pytestmark = pytest.mark.peer
TOKEN = "generic-token-0123456789abcdef"
PINGDOM_TOKEN = "pingdom-url-token-0123456789ab"


def notices(
    synapse: Synapse, token: str, bot: str, room: str, contains: str = ""
) -> list[dict[str, Any]]:
    return [
        e
        for e in synapse.messages(token, room, limit=200)
        if e["sender"] == bot and contains in e.get("content", {}).get("body", "")
    ]


async def test_alerts_go_to_their_alarm_room_threaded_and_commands_work_there(
    tmp_path: Path, synapse: Synapse
) -> None:
    """A P1 alert is posted in the high-priority room and a P4 in the low-priority one; the
    P1's later notifications arrive in its thread there; !ack in that thread acknowledges."""
    bot, _, _ = synapse.register("gateway", password="bot-password-1")
    eng, eng_token, _ = synapse.register("engineer")
    rooms = {
        name: synapse.create_room(eng_token, invite=[bot], name=name)
        for name in ("incidents", "high-priority-alarms", "low-priority-alarms")
    }
    config = make_config(
        tmp_path,
        matrix={
            "homeserver": synapse.url,
            "user_id": bot,
            "password": {"value": "bot-password-1"},
            "incidents_room": rooms["incidents"],
            "engineers": [eng],
            "sync_timeout_s": 1,
            "backoff_max_s": 1,
        },
        alerts={
            "port": 0,
            "high_priority_room": rooms["high-priority-alarms"],
            "low_priority_room": rooms["low-priority-alarms"],
            "source": [
                {
                    "name": "pingdom",
                    "kind": "pingdom",
                    "auth": "url_token",
                    "secret": {"value": PINGDOM_TOKEN},
                },
                {"name": "gen", "kind": "generic", "secret": {"value": TOKEN}},
            ],
        },
    )
    high, low = rooms["high-priority-alarms"], rooms["low-priority-alarms"]
    async with running(config, clock=ticking(OVERNIGHT)) as app, aiohttp.ClientSession() as session:
        assert app.matrix is not None
        await eventually(app.matrix.connected.is_set, timeout=20)
        base = f"http://127.0.0.1:{app.alerts_port}/alerts"
        ping = f"{base}/pingdom?token={PINGDOM_TOKEN}"
        assert (await post(session, ping, pingdom_body(5, "Apps: healthcheck")))[0] == 200
        assert (
            await post(
                session,
                f"{base}/gen",
                generic_body("billing", "SmokeTestFailed", labels={"test": "billing"}),
                token=TOKEN,
            )
        )[0] == 200
        [root] = await eventually(
            lambda: notices(synapse, eng_token, bot, high, "INC-1 · P1"), timeout=20
        )
        await eventually(lambda: notices(synapse, eng_token, bot, low, "INC-2 · P4"), timeout=20)
        assert not notices(synapse, eng_token, bot, high, "INC-2")
        again = pingdom_body(5, "Apps: healthcheck")
        again["state_changed_timestamp"] += 30
        assert (await post(session, ping, again))[0] == 200
        [note] = await eventually(
            lambda: notices(synapse, eng_token, bot, high, "not paged again"), timeout=20
        )
        assert thread_of(note) == root["event_id"]
        synapse.send_text(eng_token, high, "!ack", thread_root=root["event_id"])
        await eventually(
            lambda: next(i for i in incidents(tmp_path) if i.id == 1).status == "acknowledged",
            timeout=20,
        )
        [answer] = await eventually(
            lambda: notices(synapse, eng_token, bot, high, "INC-1 acknowledged by"), timeout=20
        )
        assert thread_of(answer) == root["event_id"]


async def test_chat_report_about_an_alerted_component_joins_the_alert_incident(
    tmp_path: Path, synapse: Synapse
) -> None:
    """In a report room, an allow-listed tenant writing about the router while the Pingdom
    alert is open joins that incident and is told in their thread that we know; a stranger
    writing the same gets their own incident (held, not joined)."""
    bot, _, _ = synapse.register("gateway", password="bot-password-1")
    eng, eng_token, _ = synapse.register("engineer")
    tenant, tenant_token, _ = synapse.register("tenant")
    stranger, stranger_token, _ = synapse.register("stranger")
    incidents_room = synapse.create_room(eng_token, invite=[bot], name="incidents")
    reports = synapse.create_room(
        eng_token,
        invite=[bot, tenant, stranger],
        tokens_to_join=[tenant_token, stranger_token],
        name="ask",
    )
    config = make_config(
        tmp_path,
        matrix={
            "homeserver": synapse.url,
            "user_id": bot,
            "password": {"value": "bot-password-1"},
            "incidents_room": incidents_room,
            "report_rooms": [{"room": reports, "mailbox": "emergency"}],
            "engineers": [eng],
            "sync_timeout_s": 1,
            "backoff_max_s": 1,
        },
        trust={"allow_addresses": [tenant]},
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
    )
    async with running(config, clock=ticking(OVERNIGHT)) as app, aiohttp.ClientSession() as session:
        assert app.matrix is not None
        await eventually(app.matrix.connected.is_set, timeout=20)
        ping = f"http://127.0.0.1:{app.alerts_port}/alerts/pingdom?token={PINGDOM_TOKEN}"
        assert (await post(session, ping, pingdom_body(5, "Apps: healthcheck")))[0] == 200
        await eventually(lambda: incidents(tmp_path), timeout=20)
        mine = synapse.send_text(tenant_token, reports, "All our apps return 502 since 03:00")
        await eventually(
            lambda: notices(synapse, eng_token, bot, reports, "We already know"), timeout=20
        )
        synapse.send_text(stranger_token, reports, "All our apps return 502 since 03:00")
        await eventually(lambda: len(incidents(tmp_path)) == 2, timeout=20)
    [answer] = notices(synapse, eng_token, bot, reports, "We already know")
    assert thread_of(answer) == mine
    by_id = {i.id: i for i in incidents(tmp_path)}
    assert [r.address for r in by_id[1].reporters] == [tenant]
    assert [r.address for r in by_id[2].reporters] == [stranger]
    assert "unverified sender" in by_id[2].flags
