"""Store contract, chat rows: a chat message keeps the stored spellings of rows written
before chat was neutral (channel "matrix", thread keys "mx:"), so those rows load and an
event replayed across an upgrade is the same message, on every backend."""

from __future__ import annotations

import json
from dataclasses import replace

from gateway.domain import (
    Channel,
    ChatMessage,
    NewMessage,
    Plan,
    PlanContext,
    Reporter,
    ThreadKeys,
    chat_key,
)
from gateway.ports import Store
from gateway.run.intake import ChatIntake
from rules.types import Mailbox
from tests.store_contract.builders import NOW, opened, work


def test_the_stored_spellings_are_those_earlier_versions_wrote() -> None:
    """Channel.CHAT is stored as "matrix" and a chat event's key as "mx:<id>": rows and keys
    already in a database keep their meaning."""
    assert Channel("matrix") is Channel.CHAT and Channel.CHAT.value == "matrix"
    assert chat_key("$x") == "mx:$x"


async def test_a_row_in_the_earlier_form_is_found_by_todays_intake(store: Store) -> None:
    """A chat event accepted in the earlier form (its Matrix JSON) comes back as a chat row;
    the same event offered again through today's intake is a duplicate, not new work."""
    old_raw = json.dumps({"room_id": "!ask:hs", "sender_power": 0, "event": {}}).encode()
    first = await store.accept(_chat_row("mx:$x", old_raw))
    intake = ChatIntake(store, {"!ask:hs": "support"}, lambda: None, lambda: NOW)
    await intake.accept(ChatMessage("!ask:hs", "$x", "@t:hs", "Our site is down"))
    [row] = await store.pending_inbox()
    assert (row.id, row.channel, row.raw) == (first.inbox_id, Channel.CHAT, old_raw)


async def test_a_chat_reporter_and_its_thread_key_round_trip(store: Store) -> None:
    """A chat reporter is read back as a chat reporter, and a reply naming its event's key
    finds the incident."""
    reporter = Reporter(Channel.CHAT, "@t:hs", (chat_key("$r"),), "!ask:hs", "$r")
    plan = replace(opened(outbox=()), reporter=reporter, message_ids=(chat_key("$r"),))
    first = await store.accept(_chat_row(None))
    await store.process([work(first.inbox_id, lambda _ctx: plan)], NOW)
    incident = await store.incident(1)
    assert incident is not None and incident.reporters[0].channel is Channel.CHAT
    seen: list[int | None] = []

    def make(ctx: PlanContext) -> Plan:
        seen.append(ctx.thread.id if ctx.thread else None)
        return Plan(outcome="replied")

    again = await store.accept(_chat_row(None))
    await store.process([work(again.inbox_id, make, ThreadKeys((chat_key("$r"),)))], NOW)
    assert seen == [1]


def _chat_row(key: str | None, raw: bytes = b"{}") -> NewMessage:
    return NewMessage(Channel.CHAT, Mailbox.SUPPORT, "@t:hs", ("!ask:hs",), raw, key, NOW)
