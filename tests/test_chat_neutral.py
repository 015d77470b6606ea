"""Chat in the core is neutral: a second chat system, a tiny fake written here (not a product
feature), drives a report, !ack, !update and !resolve through the unchanged core (intake,
inbox, worker, Plans, outbox, egress) on a real SQLite store, with no Matrix anywhere."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import gateway
from gateway.deliver.egress import LocalPager, make_handlers
from gateway.deliver.outbox import OutboxWorker, RetryPolicy
from gateway.domain import Channel, ChatKind, ChatMessage, ChatPost, Plan, Status
from gateway.plan.pipeline import Settings
from gateway.plan.relay import ChatSettings
from gateway.plan.replies import Sender
from gateway.run.intake import ChatIntake
from gateway.run.worker import InboxWorker
from gateway.store.sqlite import SqliteStore
from rules.book import default_rulebook
from tests.conftest import IN_HOURS


@dataclass(frozen=True)
class Line:
    """The fake system's wire format: a line said in a channel, maybe answering another."""

    channel: str  # "#help"
    nick: str  # "ana"
    line_id: str  # "L1"
    text: str
    answers: str | None = None  # the line that starts the conversation it belongs to
    op: bool = False  # a channel operator


class LineChat:
    """The fake adapter: its lines become the core's ChatMessage at the boundary, and the
    core's ChatPost becomes a line; a retried send (same txn_id) is said once."""

    def __init__(self) -> None:
        self.said: list[Line] = []
        self._by_txn: dict[str, str] = {}

    @staticmethod
    def translate(line: Line) -> ChatMessage:
        """One of its lines as the core's neutral value."""
        return ChatMessage(
            room_id=line.channel,
            event_id=line.line_id,
            sender=line.nick,
            body=line.text,
            kind=ChatKind.TEXT,
            thread_root=line.answers,
            sender_power=100 if line.op else 0,
        )

    async def send(self, post: ChatPost, txn_id: str) -> Mapping[str, Any]:
        """The core's ChatSender port."""
        if txn_id not in self._by_txn:
            line = Line(
                post.room_id, "gatewaybot", f"B{len(self.said)}", post.body, post.thread_root
            )
            self.said.append(line)
            self._by_txn[txn_id] = line.line_id
        return {"event_id": self._by_txn[txn_id]}

    def lines_in(self, channel: str, answers: str | None) -> list[str]:
        """What the bot said in a channel's conversation."""
        return [x.text for x in self.said if x.channel == channel and x.answers == answers]


CHAT = ChatSettings(
    bot_user_id="gatewaybot",
    incidents_room="#ops",
    report_rooms={"#help": "support"},
    engineers=frozenset({"eng"}),
    min_power_level=50,
)
SETTINGS = Settings(
    sender=Sender("support@gw.example", "Platform support", "gw.example", "loop"),
    pager_source="gw",
    signature="Platform support",
    chat=CHAT,
)


@dataclass
class World:
    """The core wired to the fake chat: intake, inbox worker and outbox on one store."""

    store: SqliteStore
    chat: LineChat
    intake: ChatIntake
    worker: InboxWorker
    outbox: OutboxWorker
    planned: list[Plan]

    async def say(self, line: Line) -> Plan:
        """The fake adapter hands a line to the core; the core processes and delivers."""
        await self.intake.accept_all([self.chat.translate(line)])
        assert await self.worker.process_pending() == 1
        while await self.outbox.deliver_due():
            pass
        return self.planned[-1]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """A real SQLite store, the real worker and outbox, and the fake chat as the chat link."""
    store = SqliteStore(tmp_path / "gateway.sqlite3")
    await store.open()
    chat = LineChat()
    planned: list[Plan] = []
    worker = InboxWorker(
        store, default_rulebook(), SETTINGS, planned.extend, clock=lambda: IN_HOURS
    )
    handlers = make_handlers(LocalPager(), _NoMail(), "local", chat=chat, store=store)
    outbox = OutboxWorker(store, handlers, RetryPolicy(), clock=lambda: IN_HOURS)
    intake = ChatIntake(store, CHAT.report_rooms, worker.wake, lambda: IN_HOURS)
    yield World(store, chat, intake, worker, outbox, planned)
    await worker.close()
    await store.close()


class _NoMail:
    async def send(self, message: bytes, mail_from: str, rcpt_to: str) -> Mapping[str, Any]:
        raise AssertionError("nobody here is reached by email")


async def test_a_second_chat_system_reports_and_runs_ack_update_resolve(world: World) -> None:
    """A report in #help opens INC-1 (announced in #ops, answered in its conversation);
    !ack, !update and !resolve in the announcement's conversation change the incident, and
    the reporter hears the update and the resolution where they reported."""
    opened = await world.say(Line("#help", "ana", "L1", "Our site is down, every request 502"))
    assert opened.outcome.startswith("opened INC-1")
    assert opened.reporter is not None and opened.reporter.channel is Channel.CHAT
    [announcement] = [x for x in world.chat.said if x.channel == "#ops" and x.answers is None]
    assert announcement.text.startswith("INC-1")
    assert any(
        t.startswith("Thanks, we have logged this as INC-1")
        for t in world.chat.lines_in("#help", "L1")
    )
    root = announcement.line_id

    acked = await world.say(Line("#ops", "eng", "L2", "!ack", answers=root))
    assert acked.outcome == "acknowledged INC-1"
    assert "INC-1 acknowledged by eng." in world.chat.lines_in("#ops", root)

    await world.say(Line("#ops", "eng", "L3", "!update Restarting the routers", answers=root))
    [update] = [t for t in world.chat.lines_in("#help", "L1") if t.startswith("Update on INC-1")]
    assert "Restarting the routers" in update

    resolved = await world.say(Line("#ops", "eng", "L4", "!resolve Routers replaced", answers=root))
    assert resolved.outcome == "resolved INC-1"
    told = [t for t in world.chat.lines_in("#help", "L1") if "is resolved" in t]
    assert len(told) == 1 and "Routers replaced" in told[0]
    incident = await world.store.incident(1)
    assert incident is not None and incident.status is Status.RESOLVED
    assert [r.address for r in incident.reporters] == ["ana"]


async def test_the_fake_systems_operators_are_authorised_by_rank(world: World) -> None:
    """A channel operator (rank from the chat system) may run commands when a minimum rank
    is configured; anyone else in the room is refused."""
    await world.say(Line("#help", "ana", "L1", "Our site is down, every request 502"))
    root = next(x.line_id for x in world.chat.said if x.channel == "#ops" and x.answers is None)
    refused = await world.say(Line("#ops", "visitor", "L2", "!ack", answers=root))
    assert refused.outcome == "refused: not authorised"
    incident = await world.store.incident(1)
    assert incident is not None and incident.status is Status.OPEN
    acked = await world.say(Line("#ops", "oper", "L3", "!ack", answers=root, op=True))
    assert acked.outcome == "acknowledged INC-1"


# Matrix's wire format: event types, content fields, message types, the relation keys.
_MATRIX_WIRE = re.compile(
    r"\bm\.(room\.|relates_to|notice|text|emote|thread|replace|in_reply_to)|msgtype"
)


def test_the_core_knows_no_matrix_wire_format() -> None:
    """Planning, parsing and the domain name no Matrix event field (import-linter keeps nio
    and the adapters out; this keeps the strings out): only adapters/matrix*.py read them."""
    root = Path(gateway.__file__).parent
    files = [*root.glob("plan/*.py"), *root.glob("parse/*.py"), *root.glob("domain*.py")]
    assert len(files) > 20
    found = [
        f"{path.relative_to(root)}:{n}: {line.strip()}"
        for path in files
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if _MATRIX_WIRE.search(line)
    ]
    assert found == []
