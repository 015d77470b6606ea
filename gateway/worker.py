"""The inbox worker: takes accepted messages in order, parses them off the event loop, and has
the store apply the pipeline's Plan for each in one transaction; then wakes the outbox."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial

import structlog

from gateway.chat import ChatMessage, parse_chat, plan_report_room, should_ignore
from gateway.commands import CommandEnv, parse_command, plan_command
from gateway.db import ThreadKeys
from gateway.domain import Channel, InboxRow, Plan, PlanContext
from gateway.mail import ParsedMail, UnparseableMessage, parse_mail
from gateway.pipeline import Settings, plan_email, plan_unreadable
from gateway.relay import ChatSettings
from gateway.store import Store
from rules.book import Rulebook

log = structlog.get_logger("gateway.worker")
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The real clock."""
    return datetime.now(UTC)


class InboxWorker:
    """Processes the durable inbox, one message at a time, in arrival order."""

    def __init__(
        self,
        store: Store,
        rulebook: Rulebook,
        settings: Settings,
        on_planned: Callable[[Plan], None],
        clock: Clock = utcnow,
        retry_delay_s: float = 1.0,
    ) -> None:
        self._store = store
        self.rulebook = rulebook
        self._settings = settings
        self._on_planned = on_planned
        self._clock = clock
        self._wake = asyncio.Event()
        self._retry_delay_s = retry_delay_s
        self.idle = asyncio.Event()

    def wake(self) -> None:
        """New messages were accepted."""
        self._wake.set()

    async def run(self) -> None:
        """Process until cancelled; a store failure backs off and tries again."""
        while True:
            self._wake.clear()
            try:
                done = await self.process_pending()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("inbox.process_failed")
                await asyncio.sleep(self._retry_delay_s)
                continue
            if not done:
                self.idle.set()
                await self._wake.wait()
                self.idle.clear()

    async def process_pending(self, limit: int = 64) -> int:
        """Process what is pending now; returns how many messages were handled."""
        rows = await self._store.pending_inbox(limit)
        for row in rows:
            await self._process(row)
        return len(rows)

    async def _process(self, row: InboxRow) -> None:
        if row.channel is Channel.MATRIX:
            await self._process_chat(row)
            return
        bound = log.bind(inbox_id=row.id, mailbox=row.mailbox)
        now = self._clock()
        try:
            mail: ParsedMail | None = await asyncio.to_thread(parse_mail, row.raw, row.mail_from)
            problem = ""
        except UnparseableMessage as exc:
            mail, problem = None, str(exc)[:200] or "unparseable"
        if mail is None:
            plan = await self._store.process(row.id, None, _const(plan_unreadable(row, problem,
                                                                                  now)), now)
        else:
            keys = ThreadKeys(mail.in_reply_to + mail.references[::-1], mail.subject,
                              mail.from_addr)
            make = partial(self._plan, row, mail, now)
            try:
                plan = await self._store.process(row.id, keys, make, now)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A bug in parsing or rules must not lose the message: keep it for a human.
                bound.exception("inbox.plan_failed")
                failed = plan_unreadable(row, f"processing failed: {type(exc).__name__}", now)
                plan = await self._store.process(row.id, None, _const(failed), now)
        bound.info("inbox.processed", outcome=plan.outcome)
        self._on_planned(plan)

    async def _process_chat(self, row: InboxRow) -> None:
        now = self._clock()
        chat = self._settings.chat
        msg = parse_chat(row.raw)
        keys: ThreadKeys | None = None
        if msg is None or chat is None:
            make = _const(Plan(outcome="ignored: not a text message in a room we watch"))
        elif (why := should_ignore(msg, chat)) is not None:
            make = _const(Plan(outcome=f"ignored: {why}"))
        elif msg.room_id == chat.incidents_room:
            command = parse_command(msg.body)
            if command is None:
                make = _const(Plan(outcome="ignored: conversation"))
            else:
                keys = ThreadKeys(msg.thread_keys(), incident_id=command.ref)
                env = CommandEnv(chat, self.rulebook, self._settings.sender,
                                 self._settings.pager_source, f"c{row.id}", now)
                make = partial(plan_command, msg, command, env=env)
        else:
            keys = ThreadKeys(msg.thread_keys())
            make = partial(self._plan_report, msg, chat, now)
        plan = await self._store.process(row.id, keys, make, now)
        log.info("inbox.processed", inbox_id=row.id, channel="matrix", outcome=plan.outcome)
        self._on_planned(plan)

    def _plan_report(self, msg: ChatMessage, chat: ChatSettings, now: datetime,
                     ctx: PlanContext) -> Plan:
        return plan_report_room(msg, ctx.thread, ctx.next_id, self.rulebook, chat,
                                self._settings.pager_source, now)

    def _plan(self, row: InboxRow, mail: ParsedMail, now: datetime, ctx: PlanContext) -> Plan:
        return plan_email(row, mail, ctx.thread, ctx.next_id, self.rulebook, self._settings, now)


def _const(plan: Plan) -> Callable[[PlanContext], Plan]:
    return lambda _ctx: plan

