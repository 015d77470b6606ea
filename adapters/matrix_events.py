"""Matrix events in, the core's neutral chat values out: the one place that reads Matrix
message JSON (`m.room.message`, `msgtype`, `m.relates_to`, user ids) for the core.

`chat_message` translates a room event as the sync loop sees it (with the sender's power
level and, for a decrypted event, the device record `with_sender_device` put on it) into a
`ChatMessage`; `legacy_inbox_message` reads the inbox rows the gateway stored before chat
was neutral (the event JSON itself), so a row still pending at an upgrade is planned as
before. Pure: no nio, no I/O (the inbox worker calls it in a thread).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from gateway.domain import ChatDevice, ChatKind, ChatMessage

# The key under which the adapter records, in a decrypted event's source, which device sent
# it and whether that device is trusted. Only the adapter writes it: it overwrites it on
# every decrypted event and removes it from every plaintext one
# (adapters.matrix_crypto.with_sender_device), so a sender cannot put it there.
SENDER_DEVICE = "gateway.sender_device"
_TEXT_TYPES = ("m.text", "m.emote")
# A Matrix user id: @localpart:server (the server authenticated the user).
_USER = re.compile(r"^@[^:\s]+:(\S+)$")


def sync_filter(rooms: list[str], limit: int) -> dict[str, Any]:
    """The sync filter: our rooms' timelines only, up to `limit` events each."""
    return {
        "presence": {"not_types": ["*"]},
        "account_data": {"not_types": ["*"]},
        "room": {
            "rooms": rooms,
            # A large limit so a busy room is not cut short ("limited"); backfill covers the rest.
            # m.room.encrypted too: what we cannot read is never dropped in silence.
            "timeline": {
                "limit": limit,
                "types": ["m.room.message", "m.room.encrypted", "m.room.encryption"],
            },
            "state": {"lazy_load_members": True},
            "ephemeral": {"not_types": ["*"]},
            "account_data": {"not_types": ["*"]},
        },
    }


def chat_message(room_id: str, event: Mapping[str, Any], sender_power: int) -> ChatMessage:
    """An `m.room.message` event as the core's ChatMessage. A message without a text body
    (redacted, or not a message at all) is kind OTHER: kept in the inbox, never acted on."""
    content = event.get("content")
    content = content if isinstance(content, Mapping) else {}
    relates = content.get("m.relates_to")
    relates = relates if isinstance(relates, Mapping) else {}
    body = content.get("body")
    text = body if isinstance(body, str) and event.get("type") == "m.room.message" else None
    in_reply = relates.get("m.in_reply_to")
    reply_to = in_reply.get("event_id") if isinstance(in_reply, Mapping) else None
    root = relates.get("event_id") if relates.get("rel_type") == "m.thread" else None
    sender = str(event.get("sender", ""))
    return ChatMessage(
        room_id=room_id,
        event_id=str(event.get("event_id", "")),
        sender=sender,
        body=text or "",
        kind=_kind(content, relates) if text is not None else ChatKind.OTHER,
        thread_root=root if isinstance(root, str) else None,
        reply_to=reply_to if isinstance(reply_to, str) else None,
        sender_power=sender_power,
        sender_domain=user_server(sender),
        mentions=tuple(word for word in (text or "").split() if _USER.match(word)),
        device=_device(event),
    )


def _kind(content: Mapping[str, Any], relates: Mapping[str, Any]) -> ChatKind:
    msgtype = content.get("msgtype")
    if msgtype == "m.notice":  # bots speak in notices, edited or not
        return ChatKind.NOTICE
    if relates.get("rel_type") == "m.replace" or "m.new_content" in content:
        return ChatKind.EDIT
    return ChatKind.TEXT if msgtype in _TEXT_TYPES else ChatKind.OTHER


def user_server(user_id: str) -> str | None:
    """The server part of a Matrix user id (lower-case), or None for anything else."""
    match = _USER.match(user_id.strip().lower())
    return match.group(1) if match else None


def _device(event: Mapping[str, Any]) -> ChatDevice | None:
    """The adapter's record of the sending device; None for a plaintext event."""
    found = event.get(SENDER_DEVICE)
    if not isinstance(found, Mapping):
        return None
    return ChatDevice(str(found.get("device_id") or "?"), found.get("trusted") is True)


def legacy_inbox_message(raw: bytes) -> ChatMessage | None:
    """An inbox row stored before chat was neutral ({"room_id", "sender_power", "event"}):
    the message it holds, or None when it is not a usable text message (as it was then)."""
    try:
        stored = json.loads(raw)
        event = stored["event"]
        if not isinstance(event, dict) or event.get("type") != "m.room.message":
            return None
        content = event.get("content") or {}
        if not isinstance(content.get("body"), str) or not {"event_id", "sender"} <= set(event):
            return None
        return chat_message(str(stored["room_id"]), event, int(stored.get("sender_power", 0)))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
