"""The real-Synapse harness works: users, rooms, threads, a nio client's sync, a restart."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from nio import AsyncClient, AsyncClientConfig, MatrixRoom, RoomMessageText, SyncResponse

if TYPE_CHECKING:
    from tests.peers.synapse import Synapse

# Registers the `synapse` fixture (a no-op once conftest.py does it). Imported here at runtime
# before that, the module would make pytest warn that it cannot rewrite it (an error here).
pytest_plugins = ["tests.peers.synapse"]
pytestmark = pytest.mark.peer

# A sync filter that delivers every new event (the default timeline limit is 10).
BIG_TIMELINE = {"room": {"timeline": {"limit": 500}}}
# A first sync that skips history: only the token to start from.
NO_HISTORY = {"room": {"timeline": {"limit": 0}}}


def test_registered_users_are_fresh_and_their_tokens_work(synapse: Synapse) -> None:
    alice, alice_token, device = synapse.register("alice")
    other, _, _ = synapse.register("alice")
    assert alice.startswith("@alice-") and alice.endswith(":localhost")
    assert other != alice and device
    assert synapse.whoami(alice_token) == alice
    with pytest.raises(type(synapse).Error) as bad:
        synapse.whoami("not-a-token")
    assert bad.value.status == 401 and bad.value.errcode == "M_UNKNOWN_TOKEN"


def test_room_is_created_and_joined(synapse: Synapse) -> None:
    bot, bot_token, _ = synapse.register("bot")
    eng, eng_token, _ = synapse.register("engineer")
    room = synapse.create_room(
        eng_token, invite=[bot], tokens_to_join=[bot_token], name="incidents"
    )
    members = synapse.api("GET", f"/_matrix/client/v3/rooms/{room}/joined_members", bot_token)
    assert set(members["joined"]) == {bot, eng}


def test_threads_and_replies_carry_spec_relations(synapse: Synapse) -> None:
    _, token, _ = synapse.register("engineer")
    room = synapse.create_room(token)
    root = synapse.send_text(token, room, "INC-1 opened")
    in_thread = synapse.send_text(token, room, "looking", thread_root=root)
    reply = synapse.send_text(token, room, "fixed", thread_root=root, reply_to=in_thread)
    plain_reply = synapse.send_text(token, room, "ack", reply_to=root)
    again = synapse.send_text(token, room, "ack", reply_to=root, txn_id="t1")
    assert synapse.send_text(token, room, "ack", reply_to=root, txn_id="t1") == again

    events = {e["event_id"]: e for e in synapse.messages(token, room)}
    assert list(events)[-5:] == [root, in_thread, reply, plain_reply, again]
    assert events[in_thread]["content"]["m.relates_to"] == {
        "rel_type": "m.thread",
        "event_id": root,
        "is_falling_back": True,
        "m.in_reply_to": {"event_id": root},
    }
    assert events[reply]["content"]["m.relates_to"] == {
        "rel_type": "m.thread",
        "event_id": root,
        "is_falling_back": False,
        "m.in_reply_to": {"event_id": in_thread},
    }
    assert events[plain_reply]["content"]["m.relates_to"] == {"m.in_reply_to": {"event_id": root}}


async def test_nio_client_receives_a_message_by_sync(synapse: Synapse) -> None:
    bot, bot_token, bot_device = synapse.register("bot")
    _, eng_token, _ = synapse.register("engineer")
    room = synapse.create_room(eng_token, invite=[bot], tokens_to_join=[bot_token])

    client = AsyncClient(synapse.url, bot, config=AsyncClientConfig(store_sync_tokens=False))
    client.restore_login(bot, bot_device, bot_token)
    seen: list[tuple[str, str, str]] = []

    async def on_text(r: MatrixRoom, event: RoomMessageText) -> None:
        seen.append((r.room_id, event.sender, event.body))

    client.add_event_callback(on_text, RoomMessageText)
    try:
        first = await client.sync(timeout=0, sync_filter=NO_HISTORY)
        assert isinstance(first, SyncResponse), first
        sent = [synapse.send_text(eng_token, room, f"message {i}") for i in range(15)]
        async with asyncio.timeout(20):
            while len(seen) < len(sent):
                reply = await client.sync(timeout=5_000, sync_filter=BIG_TIMELINE)
                assert isinstance(reply, SyncResponse), reply
    finally:
        await client.close()
    assert [body for _, _, body in seen] == [f"message {i}" for i in range(15)]
    assert {(r, s) for r, s, _ in seen} == {(room, synapse.whoami(eng_token))}


async def test_restart_keeps_users_tokens_and_rooms(synapse: Synapse) -> None:
    user, token, device = synapse.register("engineer", password="correct horse")
    room = synapse.create_room(token, name="before restart")
    before = synapse.send_text(token, room, "before restart", txn_id="keep")
    port = synapse.port

    synapse.restart()

    assert synapse.port == port
    assert synapse.whoami(token) == user
    assert synapse.send_text(token, room, "before restart", txn_id="keep") == before
    _, new_token, same_device = synapse.login(user, "correct horse", device_id=device)
    assert same_device == device
    assert before in [e["event_id"] for e in synapse.messages(new_token, room)]
