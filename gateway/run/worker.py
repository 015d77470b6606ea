"""The inbox worker: takes accepted messages in order, parses and triages them off the event
loop and off the store thread (emails in the parse sandbox, a child process with a time
budget: gateway.parse.sandbox), then has the store apply the pipeline's Plans for the whole batch
in one transaction; then wakes the outbox."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial

import structlog

from gateway.domain import (
    Channel,
    ChatMessage,
    InboxRow,
    Outcome,
    Plan,
    PlanContext,
    ThreadKeys,
    Work,
)
from gateway.domain_chat import decode_chat
from gateway.parse.mail import ParsedMail
from gateway.parse.sandbox import MailJob, ParseSandbox, Prepared
from gateway.plan import mirror
from gateway.plan.alert_join import known_outage_in_chat
from gateway.plan.alert_plan import AlertSettings
from gateway.plan.chat import plan_report_room, should_ignore
from gateway.plan.commands import CommandEnv, parse_command
from gateway.plan.escalation import command_planner
from gateway.plan.mirror import MirrorSettings
from gateway.plan.pipeline import Settings, mail_thread_keys, plan_email, plan_unreadable
from gateway.plan.relay import ChatSettings
from gateway.plan.trust import Verdict, judge_email
from gateway.plan.unreadable import judge_unreadable, plan_unreadable_emergency
from gateway.ports import Store
from gateway.run import metrics
from gateway.run.alert_work import WebhookSettings, prepare_webhook
from gateway.run.arrivals import Arrivals
from gateway.run.supervise import rounds
from rules.book import Rulebook
from rules.types import Mailbox, TriageDecision

log = structlog.get_logger("gateway.run.worker")
_STORM_POLL_S = 0.02
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The real clock."""
    return datetime.now(UTC)


class InboxWorker:
    """Processes the durable inbox in arrival order, a batch per transaction."""

    def __init__(
        self,
        store: Store,
        rulebook: Rulebook,
        settings: Settings,
        on_planned: Callable[[Sequence[Plan]], None],
        clock: Clock = utcnow,
        retry_delay_s: float = 1.0,
        batch: int = 64,
        storm_per_s: float = 300.0,
        max_defer_s: float = 1.0,
        mirror: MirrorSettings | None = None,
        sandbox: ParseSandbox | None = None,
        poll_s: float = 2.0,
        webhooks: WebhookSettings | None = None,
    ) -> None:
        self._store = store
        self.rulebook = rulebook
        self._settings = settings
        self._on_planned = on_planned
        self._clock = clock
        self._wake = asyncio.Event()
        self._stopping = False
        self._retry_delay_s = retry_delay_s
        self._batch = batch
        self._max_defer_s = max_defer_s
        self._arrivals = Arrivals(storm_per_s)
        self._mirror = mirror or MirrorSettings()
        self._next_rulebook: Rulebook | None = None
        self.sandbox = sandbox or ParseSandbox(rulebook)
        self._poll_s = poll_s  # an idle worker looks for mail released by `held release`
        self.batch_bytes = 32 * 1024 * 1024  # raw mail loaded per batch (at least one)
        # The self-test's recogniser (gateway.run.canary): a row carrying our signed canary
        # token is planned as a canary only, never as a report. Pure and thread-safe.
        self.canary: Callable[[InboxRow], Plan | None] | None = None
        # The chat adapter's reader for chat rows it stored in its own form before chat was
        # neutral (gateway.domain_chat); set by the composition root. Pure and thread-safe.
        self.legacy_chat: Callable[[bytes], ChatMessage | None] | None = None
        self._webhooks = webhooks or WebhookSettings(
            AlertSettings(settings.sender, settings.pager_source, settings.chat)
        )

    def replace_rulebook(self, rulebook: Rulebook) -> None:
        """Use `rulebook` from the next batch on (a batch never mixes two rulebooks)."""
        self._next_rulebook = rulebook

    def wake(self) -> None:
        """New messages were accepted."""
        self._arrivals.arrived()
        self._wake.set()

    def stop(self) -> None:
        """Finish the batch in flight, then return from run()."""
        self._stopping = True
        self._wake.set()

    async def start(self) -> None:
        """Start the parse sandbox's child process (run() also does, if not yet started)."""
        await self.sandbox.start()

    async def close(self) -> None:
        """End the parse sandbox (after run() returned and the inbox was drained)."""
        await self.sandbox.close()

    async def run(self) -> None:
        """Process until stopped; a store failure backs off and tries again."""
        await self.sandbox.start()
        await rounds(
            self._round,
            wake=self._wake,
            stopping=lambda: self._stopping,
            failed="inbox.process_failed",
            retry_s=self._retry_delay_s,
            retry_on_wake=False,
            before=self._let_intake_finish,
            logger=log,
        )

    async def _round(self) -> float | None:
        # Another batch at once while there was work; else sleep until woken, or until the
        # poll looks for mail an operator released (`held release`).
        return 0 if await self.process_pending() else self._poll_s

    def in_storm(self) -> bool:
        """Intake is in a storm (gateway.run.arrivals)."""
        return self._arrivals.storm()

    async def _let_intake_finish(self) -> None:
        # Intake has priority during a storm (`in_storm`): the messages are already durable,
        # so let them in first and process in the
        # lulls, and at the latest every max_defer_s. At ordinary rates nothing is deferred.
        for _ in range(int(self._max_defer_s / _STORM_POLL_S)):
            if self._stopping or not self.in_storm():
                return
            await asyncio.sleep(_STORM_POLL_S)

    async def process_pending(self) -> int:
        """Process what is pending now; returns how many messages were handled."""
        if self._next_rulebook is not None:
            self.rulebook, self._next_rulebook = self._next_rulebook, None
            self.sandbox.replace_rulebook(self.rulebook)
        rows = await self._store.pending_inbox(self._batch, max_bytes=self.batch_bytes)
        if not rows:
            return 0
        now, started = self._clock(), time.perf_counter()
        # Parsing and triage are CPU work on untrusted input: emails go to the sandbox
        # process, chat events (JSON of bounded size) to a thread; never on the event loop,
        # and outside the store's transaction.
        mail_rows = [r for r in rows if r.channel is Channel.EMAIL]
        prepared = await self.sandbox.prepare_all(
            [MailJob(r.raw, r.mail_from, r.mailbox or Mailbox.SUPPORT) for r in mail_rows], now
        )
        ready = dict(zip((r.id for r in mail_rows), prepared, strict=True))
        batch = await asyncio.to_thread(self._prepare_all, rows, ready, now)
        plans = await self._store.process(batch, now)
        for row, plan in zip(rows, plans, strict=True):
            if plan.held:  # nobody hears of it otherwise without Matrix: a warning
                log.warning("inbox.held", inbox_id=row.id, client=row.client, outcome=plan.outcome)
                continue
            failed = plan.kind() is Outcome.PLANNING_FAILED
            event = "inbox.plan_failed" if failed else "inbox.processed"
            (log.error if event == "inbox.plan_failed" else log.info)(
                event, inbox_id=row.id, channel=row.channel, outcome=plan.outcome
            )
        metrics.triaged(plans)
        metrics.pages_planned(zip((row.received_at for row in rows), plans, strict=True))
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        self._on_planned(plans)
        return len(rows)

    def _prepare_all(
        self, rows: list[InboxRow], ready: dict[int, Prepared], now: datetime
    ) -> list[Work]:
        return [self._prepare(row, ready.get(row.id), now) for row in rows]

    def _prepare(self, row: InboxRow, prepared: Prepared | None, now: datetime) -> Work:
        fallback = partial(_unreadable, row, now)
        # Emergency mail whose planning fails still reaches a person (gateway.plan.unreadable).
        rescue = (
            None
            if prepared is None or row.mailbox is not Mailbox.EMERGENCY
            else (partial(self._rescue, row, now))
        )
        try:
            canary = None if self.canary is None or prepared is None else self.canary(row)
            if canary is not None:
                return Work(row.id, None, _fixed(canary), fallback)
            if row.channel is Channel.WEBHOOK:  # alerts, PagerDuty (gateway.run.alert_work)
                work = prepare_webhook(row, self.rulebook, self._webhooks, now, fallback)
            elif prepared is None:
                work = self._prepare_chat(row, now, fallback)
            else:
                work = self._prepare_mail(row, prepared, now, fallback)
            # Tickets, security contacts and the status page hear of what the plan records.
            return replace(
                work, make_plan=partial(_mirrored, work.make_plan, self._mirror, now), rescue=rescue
            )
        except Exception as exc:  # a bug must not lose the message: a ticket for a human
            log.exception("inbox.prepare_failed", inbox_id=row.id)
            problem = f"processing failed: {type(exc).__name__}"
            make_plan = _fixed(fallback(problem)) if rescue is None else partial(rescue, problem)
            return Work(row.id, None, make_plan, fallback)

    def _rescue(self, row: InboxRow, now: datetime, problem: str, ctx: PlanContext) -> Plan:
        return _mirrored(partial(self._plan_unreadable, row, now, problem), self._mirror, now, ctx)

    def _plan_unreadable(
        self, row: InboxRow, now: datetime, problem: str, ctx: PlanContext
    ) -> Plan:
        sender, verdict = judge_unreadable(row.raw, row.mail_from, self._settings)
        return plan_unreadable_emergency(
            row, problem, self.rulebook, self._settings, now, sender, verdict, ctx
        )

    def _prepare_mail(
        self, row: InboxRow, prepared: Prepared, now: datetime, fallback: Callable[[str], Plan]
    ) -> Work:
        mail, decision = prepared.mail, prepared.decision
        if mail is None or decision is None:
            if prepared.bug is not None:
                log.error("inbox.prepare_failed", inbox_id=row.id, traceback=prepared.bug)
            problem = prepared.problem or "unparseable"
            if row.mailbox is Mailbox.EMERGENCY:  # fails towards a person (gateway.plan.unreadable)
                return Work(
                    row.id, None, partial(self._plan_unreadable, row, now, problem), fallback
                )
            return Work(row.id, None, _fixed(fallback(problem)), fallback)
        verdict = judge_email(row.raw, mail.from_addr, self._settings.trust)
        keys = mail_thread_keys(mail, self._settings, verdict)
        return Work(
            row.id, keys, partial(self._plan_mail, row, mail, decision, verdict, now), fallback
        )

    def _plan_mail(
        self,
        row: InboxRow,
        mail: ParsedMail,
        decision: TriageDecision,
        verdict: Verdict,
        now: datetime,
        ctx: PlanContext,
    ) -> Plan:
        return plan_email(
            row,
            mail,
            ctx.thread,
            ctx.next_id,
            self.rulebook,
            self._settings,
            now,
            decision,
            verdict=verdict,
            context=ctx,
        )

    def _prepare_chat(self, row: InboxRow, now: datetime, fallback: Callable[[str], Plan]) -> Work:
        chat = self._settings.chat
        msg = decode_chat(row.raw)
        if msg is None and self.legacy_chat is not None:
            msg = self.legacy_chat(row.raw)
        if msg is None or chat is None:
            return _ignored(row, "not a text message in a room we watch", fallback)
        why = should_ignore(msg, chat)
        if why is not None:
            return _ignored(row, why, fallback)
        # Alarm rooms (gateway.plan.alarm_rooms) take commands, like the incidents room.
        commands = msg.room_id == chat.incidents_room or (
            msg.room_id in self._webhooks.alerts.alarms.rooms()
        )
        if not commands and msg.room_id not in chat.report_rooms:
            return _ignored(row, "a room that takes no reports nor commands", fallback)
        if not commands:
            return Work(
                row.id,
                ThreadKeys(msg.thread_keys()),
                partial(self._plan_report, msg, chat, now),
                fallback,
            )
        command = parse_command(msg.body)
        if command is None:
            return _ignored(row, "conversation", fallback)
        env = CommandEnv(
            chat,
            self.rulebook,
            self._settings.sender,
            self._settings.pager_source,
            f"c{row.id}",
            now,
        )
        keys = ThreadKeys(msg.thread_keys(), incident_id=command.ref)
        return Work(row.id, keys, command_planner(msg, command, env, self._mirror), fallback)

    def _plan_report(
        self, msg: ChatMessage, chat: ChatSettings, now: datetime, ctx: PlanContext
    ) -> Plan:
        known = known_outage_in_chat(msg, ctx, self.rulebook, chat, self._settings.trust, now)
        if known is not None:  # monitoring found it first (gateway.plan.alert_join)
            return known
        return plan_report_room(
            msg,
            ctx.thread,
            ctx.next_id,
            self.rulebook,
            chat,
            self._settings.pager_source,
            now,
            self._settings.trust,
        )


def _mirrored(
    make_plan: Callable[[PlanContext], Plan],
    settings: MirrorSettings,
    now: datetime,
    ctx: PlanContext,
) -> Plan:
    return mirror.extend(make_plan(ctx), ctx, settings, now)


def _unreadable(row: InboxRow, now: datetime, problem: str) -> Plan:
    return plan_unreadable(row, problem, now)


def _ignored(row: InboxRow, why: str, fallback: Callable[[str], Plan]) -> Work:
    return Work(row.id, None, _fixed(Plan(outcome=f"ignored: {why}")), fallback)


def _fixed(plan: Plan) -> Callable[[PlanContext], Plan]:
    return lambda _ctx: plan
