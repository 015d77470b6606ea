"""The core's chat values, part of gateway.domain (re-exported there): a message someone wrote
in a chat room (`ChatMessage`, what a chat adapter hands the core), a post the gateway makes
(`ChatPost`, what the core hands a chat adapter), the thread key of a chat event, and the
stored form of an accepted message in the inbox.

Neutral: no chat system's wire format. A chat adapter (adapters/matrix*.py) translates its
system's events into these values at the boundary, including what only it can judge (the
sender's rank in the room, the server that authenticated them, the users a message names,
the device an encrypted message came from); the core plans on these values only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# The thread keys of chat events are stored with this prefix (inbox re-send keys, and the
# thread_keys rows that find an incident from a reply), kept apart from email Message-IDs.
# "mx:" is the spelling rows have been stored with since chat meant Matrix; it names no
# chat system now, and changing it would orphan every stored key.
_CHAT_KEY_PREFIX = "mx:"
_STORED_VERSION = 1  # the "chat" field of the stored form


class ChatKind(StrEnum):
    """What sort of message it is, which decides whether the core acts on it at all."""

    TEXT = "text"  # written by a person: a report, a reply, a command
    NOTICE = "notice"  # a bot's message (bots talk in notices): never answered
    EDIT = "edit"  # a correction of an earlier message: never acted on again
    OTHER = "other"  # not text (an image, a file, a redacted message)


@dataclass(frozen=True)
class ChatDevice:
    """The device an end-to-end encrypted message came from, and whether the bot trusts it
    (the chat adapter's verdict: verified by the trust policy, and the message's keys are
    that device's own, not forwarded)."""

    device_id: str
    trusted: bool


@dataclass(frozen=True)
class ChatMessage:
    """One message from a chat room the gateway watches, as the chat adapter translated it.

    `sender_power` is the sender's rank in the room as the chat system grades it (what a
    configured minimum lets run commands); `sender_domain` the server or workspace that
    authenticated the sender, which the tenant allow-list's domains may name (None: none
    the allow-list can name); `mentions` the users the text names, as the chat system
    spells a user; `device` the sending device of an end-to-end encrypted message (None:
    the message was not encrypted)."""

    room_id: str
    event_id: str
    sender: str
    body: str
    kind: ChatKind = ChatKind.TEXT
    thread_root: str | None = None
    reply_to: str | None = None
    sender_power: int = 0
    sender_domain: str | None = None
    mentions: tuple[str, ...] = ()
    device: ChatDevice | None = None

    def thread_keys(self) -> tuple[str, ...]:
        """Keys that may find this message's incident: its thread root, what it replies to."""
        return tuple(chat_key(e) for e in (self.thread_root, self.reply_to) if e)


@dataclass(frozen=True)
class ChatPost:
    """A message the gateway posts in a chat room: plain text, in a thread when a root is
    given (as a reply to `reply_to`, else to the root). The chat adapter decides how its
    system marks a bot's message (the Matrix adapter posts a notice)."""

    room_id: str
    body: str
    thread_root: str | None = None
    reply_to: str | None = None


def chat_key(event_id: str) -> str:
    """The thread key of a chat event (kept apart from email Message-IDs)."""
    return f"{_CHAT_KEY_PREFIX}{event_id}"


def encode_chat(msg: ChatMessage) -> bytes:
    """The stored form of an accepted chat message (the inbox row's raw bytes)."""
    device = msg.device
    record: dict[str, Any] = {
        "chat": _STORED_VERSION,
        "room_id": msg.room_id,
        "event_id": msg.event_id,
        "sender": msg.sender,
        "body": msg.body,
        "kind": msg.kind.value,
        "thread_root": msg.thread_root,
        "reply_to": msg.reply_to,
        "sender_power": msg.sender_power,
        "sender_domain": msg.sender_domain,
        "mentions": list(msg.mentions),
        "device": None if device is None else {"id": device.device_id, "trusted": device.trusted},
    }
    return json.dumps(record, separators=(",", ":"), sort_keys=True).encode()


def decode_chat(raw: bytes) -> ChatMessage | None:
    """A stored chat message back; None when `raw` is not in this stored form (a row a chat
    adapter stored in its own form before chat was neutral: the adapter reads those)."""
    try:
        r = json.loads(raw)
        if not isinstance(r, dict) or r.get("chat") != _STORED_VERSION:
            return None
        device = r.get("device")
        return ChatMessage(
            room_id=_text(r["room_id"]),
            event_id=_text(r["event_id"]),
            sender=_text(r["sender"]),
            body=_text(r["body"]),
            kind=ChatKind(r["kind"]),
            thread_root=_maybe(r.get("thread_root")),
            reply_to=_maybe(r.get("reply_to")),
            sender_power=int(r.get("sender_power") or 0),
            sender_domain=_maybe(r.get("sender_domain")),
            mentions=tuple(_text(m) for m in r.get("mentions") or ()),
            device=None
            if device is None
            else ChatDevice(_text(device["id"]), device["trusted"] is True),
        )
    except (ValueError, KeyError, TypeError):
        return None


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("a text field is not text")
    return value


def _maybe(value: object) -> str | None:
    return None if value is None else _text(value)
