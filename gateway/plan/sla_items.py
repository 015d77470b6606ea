"""The SLA items of one incident, and of the out-of-hours digest: response and update
reminders, escalation steps, holding replies to reporters, handover reminders, each a
candidate with its key (subject, kind, due_at) and the Plan it makes when it fires.

Pure. `gateway.plan.sla` decides which candidates are due and when to look again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property

from gateway.domain import (
    Incident,
    OutboxKind,
    OutboxSpec,
    Plan,
    Status,
    TimelineEvent,
)
from gateway.plan.relay import chat_reply, chat_to_incident, to_reporters
from gateway.plan.replies import Sender, local_time, render, zone_name
from rules.book import Rulebook
from rules.engine import label, next_update_due
from rules.sla import closing_before, last_closing, last_opening
from rules.types import Period, Priority

DIGEST = "digest"


@dataclass(frozen=True)
class EscalationTarget:
    """One escalation step: `kind` is "page" (to `route`), "chat" (`room`) or "email"."""

    kind: str
    after: timedelta
    route: str | None = None
    room: str | None = None
    address: str | None = None

    def describe(self) -> str:
        """Where the step goes, for people (never the routing key)."""
        if self.kind == "page":
            return f"the escalation pager ({self.route})"
        return f"room {self.room}" if self.kind == "chat" else str(self.address)


@dataclass(frozen=True)
class SlaSettings:
    """What the planner needs from the configuration."""

    sender: Sender
    pager_source: str
    incidents_room: str | None  # None: no chat; reminders are logged and on the timeline
    respond_warning: timedelta = timedelta(minutes=5)
    update_warning: timedelta = timedelta(minutes=10)
    holding: frozenset[Priority] = frozenset({Priority.P1})
    escalate: frozenset[Priority] = frozenset({Priority.P1})
    escalation: tuple[EscalationTarget, ...] = ()
    handover: frozenset[Priority] = frozenset({Priority.P1, Priority.P2})
    handover_at_close: bool = True
    handover_after: timedelta | None = timedelta(hours=6)
    digest: bool = True


@dataclass(frozen=True)
class Candidate:
    """One item that may fall due: its key (subject, kind, due_at) and how to build it."""

    subject: str
    incident_id: int | None
    kind: str
    due_at: datetime
    build: Callable[[], tuple[str, Plan]]
    until: datetime | None = None  # only worth sending before this instant


@dataclass(frozen=True)
class Ctx:
    """What every item of one round is planned with: the rulebook, settings and `now`."""

    book: Rulebook
    settings: SlaSettings
    now: datetime
    when: Callable[[datetime], str] = field(init=False)

    def __post_init__(self) -> None:
        clock = self.book.clock
        object.__setattr__(self, "when", lambda at: label(clock, at))

    @cached_property
    def last_close(self) -> datetime | None:
        """The latest end of support hours at or before `now` (the same for every incident
        of a round: worked out once)."""
        return last_closing(self.book.clock, self.now)


def is_open(incident: Incident) -> bool:
    """Whether the incident can still have items due (not resolved, not merged away)."""
    return incident.status is not Status.RESOLVED and incident.merged_into is None


def of_incident(incident: Incident, ctx: Ctx) -> list[Candidate]:
    """Every item of one incident, due or not."""
    if not is_open(incident):
        return []
    return _response(incident, ctx) + _updates(incident, ctx) + _handover(incident, ctx)


def _notice(incident: Incident, ctx: Ctx, text: str) -> tuple[OutboxSpec, ...]:
    room = ctx.settings.incidents_room
    # Every incident is announced when chat is configured, except unreadable mail; the
    # notice waits for the announcement that roots the thread if it is not out yet.
    if room is None or (incident.chat_root is None and "unparseable" in incident.flags):
        return ()
    return (chat_to_incident(text, "reminder", room),)


def _reminder(
    incident: Incident,
    kind: str,
    due_at: datetime,
    ctx: Ctx,
    words: Callable[[], str],
    until: datetime | None = None,
) -> Candidate:
    # The words are only put together for what is due: a round looks at every candidate of
    # every open incident, and formatting the times in them was most of its cost.
    def build() -> tuple[str, Plan]:
        text = words()
        return text, Plan(
            outcome=kind,
            incident_id=incident.id,
            timeline=(TimelineEvent(ctx.now, f"sla.{kind}", "gateway", text),),
            outbox=_notice(incident, ctx, text),
        )

    return Candidate(incident.ref, incident.id, kind, due_at, build, until)


def _response(incident: Incident, ctx: Ctx) -> list[Candidate]:
    by = incident.respond_by
    if by is None or incident.status is not Status.OPEN:
        return []
    s, ref, when = ctx.settings, incident.ref, ctx.when
    found = [
        _reminder(
            incident,
            "respond.soon",
            by - s.respond_warning,
            ctx,
            lambda: (
                f"{ref}: a response is due by {when(by)} and nobody has acknowledged "
                "it yet. Reply !ack when you are on it."
            ),
            until=by,
        ),
        _reminder(
            incident,
            "respond.overdue",
            by,
            ctx,
            lambda: (
                f"{ref}: the response was due by {when(by)} and nobody has "
                "acknowledged it. Reply !ack when you are on it."
            ),
        ),
    ]
    if incident.priority in s.escalate:
        found += [
            _escalation(incident, index, step, ctx) for index, step in enumerate(s.escalation)
        ]
    return found


def _escalation(incident: Incident, index: int, step: EscalationTarget, ctx: Ctx) -> Candidate:
    if incident.respond_by is None:
        raise RuntimeError("respond_by is set here")
    due = incident.respond_by + step.after
    kind = f"escalate.{index + 1}"

    def build() -> tuple[str, Plan]:
        ref, when = incident.ref, ctx.when(incident.respond_by or due)
        text = (
            f"{ref} ({incident.priority}) was not acknowledged by {when}: escalated to "
            f"{step.describe()}."
        )
        message = (
            f'Escalation: {ref} {incident.priority} "{incident.title}" has not been '
            f"acknowledged; the response was due by {when}."
        )
        outbox = (
            *_escalation_spec(incident, index, step, message, ctx),
            *_notice(incident, ctx, text),
        )
        return text, Plan(
            outcome=kind,
            incident_id=incident.id,
            outbox=outbox,
            timeline=(TimelineEvent(ctx.now, f"sla.{kind}", "gateway", text),),
        )

    return Candidate(incident.ref, incident.id, kind, due, build)


def _escalation_spec(
    incident: Incident, index: int, step: EscalationTarget, message: str, ctx: Ctx
) -> tuple[OutboxSpec, ...]:
    if step.kind == "page":
        return (
            OutboxSpec(
                OutboxKind.PAGE_TRIGGER,
                {
                    "dedup_key": f"{incident.ref}-escalation-{index + 1}",
                    "route": step.route,
                    "summary": f"[{incident.ref}] {message}"[:1000],
                    "severity": "critical",
                    "source": ctx.settings.pager_source,
                    "details": {
                        "reference": incident.ref,
                        "priority": incident.priority,
                        "escalation_step": index + 1,
                    },
                },
            ),
        )
    if step.kind == "chat":
        if step.room is None:
            raise RuntimeError("room is set here")
        return (chat_reply(step.room, None, message, "escalation", to=step.room),)
    if step.address is None:
        raise RuntimeError("address is set here")
    sender = ctx.settings.sender
    out = render(
        sender=sender,
        to=step.address,
        subject=f"[{incident.ref}] Escalation: {incident.title}"[:200],
        body=message + f"\n\n{sender.name}\n",
        message_id=f"<{incident.ref.lower()}.escalation.{index + 1}@{sender.msgid_domain}>",
        in_reply_to=None,
        references=(),
        now=ctx.now,
    )
    return (
        OutboxSpec(
            OutboxKind.MAIL_SEND,
            {
                "purpose": "escalation",
                "message_id": out.message_id,
                "mail_from": out.mail_from,
                "rcpt_to": out.rcpt_to,
                "data": out.data.decode("ascii", "surrogateescape"),
            },
        ),
    )


def _updates(incident: Incident, ctx: Ctx) -> list[Candidate]:
    by = incident.next_update_by
    if by is None:
        return []
    s, ref, when = ctx.settings, incident.ref, ctx.when
    who = incident.comms or incident.lead
    ask = (
        f"{who}: please post one with !update <text>."
        if who
        else "Nobody is named comms or lead yet (!comms @user); post one with !update <text>."
    )
    soon = _reminder(
        incident,
        "update.soon",
        by - s.update_warning,
        ctx,
        lambda: f"{ref}: the next update to reporters is due by {when(by)}. {ask}",
        until=by,
    )
    if incident.priority not in s.holding or not incident.reporters:
        overdue = _reminder(
            incident,
            "update.overdue",
            by,
            ctx,
            lambda: f"{ref}: the update to reporters due by {when(by)} is overdue. {ask}",
        )
        return [soon, overdue]
    return [
        soon,
        Candidate(ref, incident.id, "update.overdue", by, lambda: _holding(incident, ctx, ask)),
    ]


def _holding(incident: Incident, ctx: Ctx, ask: str) -> tuple[str, Plan]:
    """The update is overdue: reporters get an honest holding reply and a new promise."""
    if incident.next_update_by is None:
        raise RuntimeError("next_update_by is set here")
    tz = ctx.book.hours.timezone
    nxt = next_update_due(incident.priority, ctx.now, ctx.book)
    body = (
        f"Update on {incident.ref} ({incident.title}):\n\nWe are still working on it. "
        f"We will send the next update by {local_time(nxt, tz)} ({zone_name(tz)})."
    )
    key = f"h{int(incident.next_update_by.timestamp())}"
    sent = to_reporters(incident, body, "holding", key, ctx.settings.sender, ctx.now)
    text = (
        f"{incident.ref}: the update to reporters due by {ctx.when(incident.next_update_by)}"
        f" is overdue. A holding reply went to {len(sent)} reporter(s); the next update is "
        f"now promised by {ctx.when(nxt)}. {ask}"
    )
    plan = Plan(
        outcome="update.overdue",
        incident_id=incident.id,
        changes={"next_update_by": nxt},
        timeline=(TimelineEvent(ctx.now, "sla.holding", "gateway", text),),
        outbox=(*sent, *_notice(incident, ctx, text)),
    )
    return text, plan


def _handover(incident: Incident, ctx: Ctx) -> list[Candidate]:
    s = ctx.settings
    if incident.priority not in s.handover:
        return []
    found = []
    ask = "write the handover summary (what is known, what was done, who has it next) as !note."
    if s.handover_after is not None:
        at = incident.created_at + s.handover_after
        hours = s.handover_after.total_seconds() / 3600
        found.append(
            _reminder(
                incident,
                "handover.open_long",
                at,
                ctx,
                lambda: f"{incident.ref} has been open for {hours:g} hours: {ask}",
            )
        )
    close = ctx.last_close if s.handover_at_close else None
    if close is not None and close > incident.created_at:
        found.append(
            _reminder(
                incident,
                "handover.close",
                close,
                ctx,
                lambda: f"{incident.ref} is still open at the end of support hours: {ask}",
            )
        )
    return found


def digest_window(
    now: datetime, book: Rulebook, settings: SlaSettings
) -> tuple[datetime, datetime | None] | None:
    """While a digest is due (from an opening to the end of that in-hours period): the
    opening (its due time) and the closing before it (the out-of-hours stretch it covers
    started there; None: none in reach). None outside that window or with digests off."""
    clock = book.clock
    opening = last_opening(clock, now) if settings.digest else None
    window = clock.in_hours_window(clock.local(opening).date()) if opening else None
    if opening is None or window is None or now >= window[1]:
        return None
    return opening, closing_before(clock, opening)


def digest_candidate(incidents: Sequence[Incident], ctx: Ctx) -> Candidate | None:
    """At the start of in-hours: the tickets that arrived out of hours and are still open."""
    found = digest_window(ctx.now, ctx.book, ctx.settings)
    if found is None:
        return None
    opening, since = found
    waiting = sorted(
        (
            i
            for i in incidents
            if i.status is not Status.RESOLVED
            and i.merged_into is None
            and i.period is not Period.IN_HOURS
            and i.created_at < opening
            and (since is None or i.created_at >= since)
        ),
        key=lambda i: i.id,
    )

    def build() -> tuple[str, Plan]:
        if not waiting:
            return "No tickets arrived out of hours.", Plan(outcome=DIGEST)
        lines = [
            f"Out of hours since {ctx.when(since) if since else 'the last period'}, "
            f"{len(waiting)} ticket(s) arrived and are still open:"
        ]
        lines += [
            f"- {i.ref} {i.priority} {i.status}, reported {ctx.when(i.created_at)}: {i.title}"
            for i in waiting
        ]
        text = "\n".join(lines)
        room = ctx.settings.incidents_room
        outbox = (chat_reply(room, None, text, DIGEST),) if room else ()
        return text, Plan(outcome=DIGEST, outbox=outbox)

    return Candidate(DIGEST, None, DIGEST, opening, build)
