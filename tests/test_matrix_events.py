"""The Matrix adapter's translation of room events into the core's neutral ChatMessage, and
the inbox rows stored in Matrix's own form before chat was neutral: still read, planned as
before, and a replay of their events through the new intake is the same message."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from adapters.matrix_events import (
    SENDER_DEVICE,
    chat_message,
    legacy_inbox_message,
    user_server,
)
from gateway.domain import Channel, ChatDevice, ChatKind, NewMessage, Plan, chat_key
from gateway.domain_chat import decode_chat, encode_chat
from gateway.plan.pipeline import Settings
from gateway.plan.relay import ChatSettings
from gateway.plan.replies import Sender
from gateway.run.intake import ChatIntake
from gateway.run.worker import InboxWorker
from gateway.store.sqlite import SqliteStore
from rules.book import default_rulebook
from rules.types import Mailbox
from tests.conftest import IN_HOURS


def event(body: Any = "hi", msgtype: str = "m.text", **content: Any) -> dict[str, Any]:
    """An m.room.message event as a sync returns it."""
    return {
        "type": "m.room.message",
        "event_id": "$x",
        "sender": "@T:Tenant.Example",
        "content": {"msgtype": msgtype, "body": body, **content},
    }


def legacy_row(source: dict[str, Any], power: int = 10) -> bytes:
    """An inbox row's raw bytes as the gateway stored a chat event before chat was neutral."""
    return json.dumps(
        {"room_id": "!ask:hs", "sender_power": power, "event": source}, separators=(",", ":")
    ).encode()


def test_threads_replies_rank_server_and_mentions_are_translated() -> None:
    """Thread root, replied-to event, power level, the sender's server (lower-case) and the
    user ids the text names come across; the body is the text as written."""
    relates = {
        "rel_type": "m.thread",
        "event_id": "$root",
        "m.in_reply_to": {"event_id": "$prev"},
    }
    msg = chat_message(
        "!ask:hs", event("!lead @bob:hs.example now", **{"m.relates_to": relates}), 50
    )
    assert (msg.room_id, msg.event_id, msg.sender) == ("!ask:hs", "$x", "@T:Tenant.Example")
    assert (msg.thread_root, msg.reply_to, msg.sender_power) == ("$root", "$prev", 50)
    assert msg.sender_domain == "tenant.example" and msg.mentions == ("@bob:hs.example",)
    assert msg.kind is ChatKind.TEXT and msg.device is None
    assert msg.thread_keys() == (chat_key("$root"), chat_key("$prev"))


def test_notices_edits_and_what_is_not_text_get_their_kinds() -> None:
    """m.notice is a bot's notice (even edited); an edit by either marker is an edit;
    m.emote is text; an image, a redacted event and a non-message are OTHER."""
    edit = {"m.relates_to": {"rel_type": "m.replace", "event_id": "$e"}}
    cases = [
        (event(msgtype="m.notice", **edit), ChatKind.NOTICE),
        (event(**edit), ChatKind.EDIT),
        (event(**{"m.new_content": {"body": "x"}}), ChatKind.EDIT),
        (event(msgtype="m.emote"), ChatKind.TEXT),
        (event(msgtype="m.image"), ChatKind.OTHER),
        ({**event(), "content": {}}, ChatKind.OTHER),
        ({**event(), "type": "m.sticker"}, ChatKind.OTHER),
        (event(body=7), ChatKind.OTHER),
    ]
    for source, kind in cases:
        assert chat_message("!r:hs", source, 0).kind is kind, source


def test_a_matrix_user_id_names_its_server_and_nothing_else_does() -> None:
    """Only @localpart:server has a server; an email address or a bare word has none."""
    assert user_server("@ops:HS.example") == "hs.example"
    assert user_server("alice@tenant.example") is None
    assert user_server("@nocolon") is None


def test_the_neutral_stored_form_round_trips_and_is_not_a_legacy_row() -> None:
    """What the intake stores decodes to the same message; the two stored forms never pass
    for each other, and junk is neither."""
    device = {SENDER_DEVICE: {"device_id": "D1", "trusted": True}}
    msg = chat_message("!ask:hs", {**event("!lead @a:hs"), **device}, 3)
    assert msg.device == ChatDevice("D1", trusted=True) and msg.mentions == ("@a:hs",)
    assert decode_chat(encode_chat(msg)) == msg
    assert decode_chat(encode_chat(chat_message("!ask:hs", event(), 0))) is not None
    assert legacy_inbox_message(encode_chat(msg)) is None
    assert decode_chat(legacy_row(event())) is None
    for junk in (b"not json", b"[]", b'{"event": {}}', b'{"chat": 1}', b'{"chat": 1, "x": 2}'):
        assert decode_chat(junk) is None and legacy_inbox_message(junk) is None


def test_a_legacy_row_reads_as_the_same_message_the_adapter_makes_now() -> None:
    """A Matrix event stored before chat was neutral gives the message the sync loop would
    hand the core for that event today; an event without a text body gives none."""
    relates = {"m.relates_to": {"rel_type": "m.thread", "event_id": "$root"}}
    source = event("Our site is down", **relates)
    assert legacy_inbox_message(legacy_row(source, 10)) == chat_message("!ask:hs", source, 10)
    assert legacy_inbox_message(legacy_row({**event(), "content": {}})) is None
    assert legacy_inbox_message(legacy_row({**event(), "type": "m.room.member"})) is None
    no_sender = {k: v for k, v in event().items() if k != "sender"}
    assert legacy_inbox_message(legacy_row(no_sender)) is None


CHAT = ChatSettings("@bot:hs", "!inc:hs", {"!ask:hs": "support"}, frozenset({"@eng:hs"}), 50)
SETTINGS = Settings(
    sender=Sender("support@gw.example", "Platform support", "gw.example", "loop"),
    pager_source="gw",
    signature="Platform support",
    chat=CHAT,
)


async def test_a_row_stored_before_chat_was_neutral_is_planned_and_not_doubled(
    tmp_path: Path,
) -> None:
    """A report stored in the earlier form (Matrix JSON, channel "matrix", key "mx:$x") and
    still pending at an upgrade opens its incident through the adapter's reader; the same
    event replayed through today's intake is the same message, not a second one."""
    db = tmp_path / "gateway.sqlite3"
    store = SqliteStore(db)
    await store.open()
    planned: list[Plan] = []
    worker = InboxWorker(
        store, default_rulebook(), SETTINGS, planned.extend, clock=lambda: IN_HOURS
    )
    worker.legacy_chat = legacy_inbox_message
    try:
        source = event("Our site is down, every request gives 502")
        await store.accept(  # exactly what the earlier intake wrote
            NewMessage(
                Channel.CHAT,
                Mailbox.SUPPORT,
                "@T:Tenant.Example",
                ("!ask:hs",),
                legacy_row(source, 0),
                "mx:$x",
                IN_HOURS,
            )
        )
        intake = ChatIntake(store, CHAT.report_rooms, worker.wake, lambda: IN_HOURS)
        await intake.accept_all([chat_message("!ask:hs", source, 0)])
        assert await worker.process_pending() == 1
        [plan] = planned
        assert plan.outcome.startswith("opened INC-1")
        assert plan.reporter is not None and plan.reporter.channel is Channel.CHAT
        incident = await store.incident(1)
        assert incident is not None and incident.reporters[0].channel is Channel.CHAT
    finally:
        await worker.close()
        await store.close()
    conn = sqlite3.connect(db)
    try:  # the stored spellings are those earlier versions wrote and read
        assert list(conn.execute("SELECT channel, dedup_key FROM inbox")) == [("matrix", "mx:$x")]
        assert list(conn.execute("SELECT channel FROM reporters")) == [("matrix",)]
        assert ("mx:$x",) in list(conn.execute("SELECT key FROM thread_keys"))
    finally:
        conn.close()


async def test_without_the_adapters_reader_a_legacy_row_is_ignored_not_crashed(
    tmp_path: Path,
) -> None:
    """A core wired without a chat adapter reads no Matrix: the row is ignored, with why."""
    store = SqliteStore(tmp_path / "gateway.sqlite3")
    await store.open()
    planned: list[Plan] = []
    worker = InboxWorker(
        store, default_rulebook(), SETTINGS, planned.extend, clock=lambda: IN_HOURS
    )
    try:
        raw = legacy_row(event("Our site is down"))
        await store.accept(
            NewMessage(Channel.CHAT, None, "@t:hs", ("!ask:hs",), raw, "mx:$x", IN_HOURS)
        )
        assert await worker.process_pending() == 1
        assert [p.outcome for p in planned] == ["ignored: not a text message in a room we watch"]
    finally:
        await worker.close()
        await store.close()
