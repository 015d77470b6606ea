"""Delivery of alarm-room posts (gateway.plan.alarm_rooms): the root post of an incident's alarm
thread, whose event id is kept in the store (`alarm-root:<id>`; its thread key is recorded
like an announcement's, so a command in the thread finds the incident), then the posts in
that thread."""

from __future__ import annotations

from typing import Any

from gateway.deliver.outbox import Handler
from gateway.domain import ChatPost, OutboxEntry
from gateway.ports import ChatSender, Store, TransientError


def alarm_handler(chat: ChatSender, store: Store, prefix: str) -> Handler:
    """Delivers alarm-room posts: the root (remembering its event id), then its thread."""

    async def send(entry: OutboxEntry) -> dict[str, Any]:
        p, iid = entry.payload, entry.incident_id
        key = f"alarm-root:{iid}"
        if p.get("root"):
            # The same txn_id on a retry gives back the same event, so a crash between the
            # send and kv_set is repaired by the retry.
            result = dict(
                await chat.send(ChatPost(p["room_id"], p["body"]), txn_id=f"{prefix}-{entry.id}")
            )
            await store.kv_set(key, str(result["event_id"]))
            return result
        root = await store.kv_get(key)
        if root is None:
            raise TransientError("waiting for the alarm room's root post", 1.0)
        return dict(
            await chat.send(ChatPost(p["room_id"], p["body"], root), txn_id=f"{prefix}-{entry.id}")
        )

    return send
