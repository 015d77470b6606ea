"""Events the bot could not decrypt: never silent, never guessed at, noticed once.

An `m.room.encrypted` event that does not decrypt is recorded (in the key-value store, so a
restart neither forgets nor repeats it) while the link asks for its room key. Every sync it is
tried again; decrypted, it goes to the core like any other message. Still unreadable after
`wait_s`, the room gets a notice naming the sender and time, and the record says so.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from gateway.plan.e2ee import undecryptable_notice
from gateway.run import metrics

log = structlog.get_logger("adapters.matrix")

_PENDING = "matrix.e2ee.pending"


@dataclass(frozen=True)
class Pending:
    """One undecrypted event waiting for its key."""

    room_id: str
    source: dict[str, Any]
    seen_at: float

    @property
    def event_id(self) -> str:
        return str(self.source.get("event_id", ""))


class Undecryptable:
    """The durable list of events waiting for a key, and who was told about which."""

    def __init__(self, kv: Any, wait_s: float, now: Callable[[], float] = time.time) -> None:
        self._kv = kv
        self._wait_s = wait_s
        self._now = now
        self._pending: dict[str, Pending] | None = None

    async def _load(self) -> dict[str, Pending]:
        if self._pending is None:
            raw = await self._kv.kv_get(_PENDING)
            items = json.loads(raw) if raw else []
            self._pending = {
                p["source"]["event_id"]: Pending(p["room_id"], p["source"], p["seen_at"])
                for p in items
            }
        return self._pending

    async def _save(self) -> None:
        items = [
            {"room_id": p.room_id, "source": p.source, "seen_at": p.seen_at}
            for p in (await self._load()).values()
        ]
        await self._kv.kv_set(_PENDING, json.dumps(items))

    async def add(self, room_id: str, source: dict[str, Any]) -> bool:
        """Record an event that did not decrypt; False if it is known already."""
        event_id = str(source.get("event_id", ""))
        pending = await self._load()
        if not event_id or event_id in pending or await self._kv.kv_get(_done(event_id)):
            return False
        pending[event_id] = Pending(room_id, dict(source), self._now())
        await self._save()
        metrics.UNDECRYPTABLE.inc()
        log.warning(
            "matrix.undecryptable", room_id=room_id, event_id=event_id, sender=source.get("sender")
        )
        return True

    async def waiting(self) -> list[Pending]:
        """Every event still waiting for its key."""
        return list((await self._load()).values())

    def overdue(self, item: Pending) -> bool:
        """Whether the short wait for the key is over."""
        return self._now() - item.seen_at >= self._wait_s

    async def settle(self, item: Pending, outcome: str) -> None:
        """Done with an event: "decrypted" late, or "noticed" in the room."""
        await self._kv.kv_set(_done(item.event_id), outcome)
        (await self._load()).pop(item.event_id, None)
        await self._save()
        log.info(
            "matrix.undecryptable_settled",
            room_id=item.room_id,
            event_id=item.event_id,
            outcome=outcome,
        )


def room_is_encrypted(state: list[dict[str, Any]]) -> bool:
    """Whether a room's state events include encryption (it can never be turned off)."""
    return any(e.get("type") == "m.room.encryption" for e in state)


def _done(event_id: str) -> str:
    return "matrix.e2ee.done." + event_id


def notice_for(item: Pending) -> tuple[dict[str, Any], str]:
    """The notice's content (in the event's thread, if it was in one) and its stable txn id."""
    ts = item.source.get("origin_server_ts")
    at = datetime.fromtimestamp(ts / 1000, UTC) if isinstance(ts, int) else datetime.now(UTC)
    content: dict[str, Any] = {
        "msgtype": "m.notice",
        "body": undecryptable_notice(str(item.source.get("sender")), at),
    }
    relates = item.source.get("content", {}).get("m.relates_to") or {}
    if relates.get("rel_type") == "m.thread" and relates.get("event_id"):
        content["m.relates_to"] = {
            "rel_type": "m.thread",
            "event_id": relates["event_id"],
            "is_falling_back": True,
            "m.in_reply_to": {"event_id": item.event_id},
        }
    digest = hashlib.sha256(item.event_id.encode()).hexdigest()[:32]
    return content, f"undecryptable-{digest}"
