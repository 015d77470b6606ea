"""Mirroring an incident's record to the outside: ticket comments and updates, the security
escalation a rule asks for, and the Statuspage resolution.

Pure, like the pipeline: a Plan, the incident as it was and the clock in; the same Plan with
more outbox entries out. It runs on every plan in one place (the inbox worker), so the
commands and the pipeline need no knowledge of trackers: whatever lands on the timeline of
an incident with an external ticket is mirrored there, once (an outbox entry each).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from gateway.domain import (
    Incident,
    OutboxKind,
    OutboxSpec,
    Plan,
    PlanContext,
    Status,
    TimelineEvent,
    dumps,
    incident_ref,
)
from gateway.plan.relay import chat_reply
from gateway.plan.replies import Sender, one_line, render
from rules.types import Priority

SECURITY_FLAG = "security"
_VERBS = {
    "update": "Update sent to the reporters",
    "note": "Note",
    "sev": "Priority changed",
    "ack": "Acknowledged",
    "notincident": "Marked as not an incident",
    "lead": "Incident lead set",
    "comms": "Comms person set",
    "merge": "Merged",
    "reopen": "Reopened",
    "security": "Escalated to the security team",
    "statuspage": "Status page",
}
_NOT_MIRRORED = frozenset(
    {"reported", "triaged", "command.resolve", "command.title", "command.reopen", "reopened"}
)


@dataclass(frozen=True)
class SecurityContacts:
    """Who hears about a suspected security breach at once."""

    email: str | None = None
    room: str | None = None


@dataclass(frozen=True)
class StatuspageSettings:
    """Which components may be named, and from which priority incidents may be published."""

    components: Mapping[str, str]  # name people type -> Statuspage component id
    min_priority: Priority = Priority.P2


@dataclass(frozen=True)
class MirrorSettings:
    """What to mirror where. The defaults mirror nothing (the built-in ticket store)."""

    external_tickets: bool = False
    escalating_rules: frozenset[str] = frozenset()
    security: SecurityContacts | None = None
    statuspage: StatuspageSettings | None = None
    sender: Sender | None = None


def extend(plan: Plan, ctx: PlanContext, s: MirrorSettings, now: datetime) -> Plan:
    """The plan plus its mirror entries."""
    if plan.new_incident is not None:
        return _new_incident(plan, ctx, s, now)
    if plan.incident_id is None:
        return plan
    before = (
        ctx.thread
        if ctx.thread and ctx.thread.id == plan.incident_id
        else ctx.find(plan.incident_id)
    )
    if before is None:
        return plan
    extra: list[OutboxSpec] = []
    if s.external_tickets:
        extra += ticket_mirror(plan, before, now)
    if s.statuspage is not None and plan.changes.get("status") == Status.RESOLVED.value:
        extra.append(
            OutboxSpec(
                OutboxKind.STATUSPAGE_RESOLVE,
                {"body": _resolution_text(plan) or "This incident has been resolved."},
            )
        )
    return replace(plan, outbox=(*plan.outbox, *extra)) if extra else plan


def _new_incident(plan: Plan, ctx: PlanContext, s: MirrorSettings, now: datetime) -> Plan:
    n = plan.new_incident
    if n is None:
        raise RuntimeError("n is set here")
    outbox = [_stamped(spec, plan, now) for spec in plan.outbox]
    if n.rule is None or n.rule not in s.escalating_rules:
        return replace(plan, outbox=tuple(outbox))
    ref = incident_ref(ctx.next_id)
    reporter = plan.reporter.address if plan.reporter else "unknown"
    specs, event = security_escalation(
        ref, n.title, n.priority, reporter, f"rule '{n.rule}'", s, now
    )
    flags = (*n.flags, SECURITY_FLAG) if SECURITY_FLAG not in n.flags else n.flags
    return replace(
        plan,
        new_incident=replace(n, flags=flags),
        outbox=(*outbox, *specs),
        timeline=(*plan.timeline, event),
    )


def _stamped(spec: OutboxSpec, plan: Plan, now: datetime) -> OutboxSpec:
    """A ticket create carries when it was planned (nothing older can be its ticket) and the
    triage reasons, so the record starts with why."""
    if spec.kind is not OutboxKind.TICKET_CREATE:
        return spec
    payload = dict(spec.payload)
    payload.setdefault("at", now.isoformat())
    triage = next((e.text for e in plan.timeline if e.kind == "triaged"), None)
    body = str(payload.get("body", ""))
    if triage and "Triage:" not in body:
        payload["body"] = f"{body}\n\nTriage: {triage}"
    return OutboxSpec(spec.kind, payload)


def ticket_mirror(plan: Plan, before: Incident, now: datetime) -> list[OutboxSpec]:
    """Comments for the plan's timeline events, and the status and title changes."""
    at = now.isoformat()
    specs = [
        OutboxSpec(OutboxKind.TICKET_COMMENT, {"body": text, "at": at})
        for text in map(comment_text, plan.timeline)
        if text
    ]
    actor = next((e.actor for e in plan.timeline if e.kind.startswith("command.")), "gateway")
    title = plan.changes.get("title")
    if title and title != before.title:
        specs.append(
            OutboxSpec(
                OutboxKind.TICKET_UPDATE,
                {
                    "title": f"[{before.ref}] {title}",
                    "at": at,
                    "comment": f'Title changed by {actor} from "{before.title}" to "{title}".',
                },
            )
        )
    if plan.changes.get("status") == Status.RESOLVED.value:
        specs.append(
            OutboxSpec(
                OutboxKind.TICKET_UPDATE,
                {
                    "status": "solved",
                    "at": at,
                    "comment": f"Resolved by {actor}:\n\n{_resolution_text(plan)}".rstrip(),
                },
            )
        )
    elif plan.reopen or any(e.kind == "command.reopen" for e in plan.timeline):
        why = next((e.text for e in plan.timeline if e.kind == "reopened"), f"Reopened by {actor}.")
        specs.append(
            OutboxSpec(OutboxKind.TICKET_UPDATE, {"status": "open", "at": at, "comment": why})
        )
    return specs


def comment_text(event: TimelineEvent) -> str | None:
    """How a timeline event reads as a ticket comment; None for those carried otherwise."""
    if event.kind in _NOT_MIRRORED:
        return None
    if event.kind.startswith("command."):
        name = event.kind.removeprefix("command.")
        rest = event.text.partition(" ")[2].strip()
        verb = _VERBS.get(name, f"!{name}")
        return f"{verb} by {event.actor}" + (f":\n\n{rest}" if rest else ".")
    if event.kind == "reporter.replied":
        return f"{event.actor} wrote:\n\n{event.text}"
    return f"{event.text} ({event.actor})"


def _resolution_text(plan: Plan) -> str:
    event = next((e for e in plan.timeline if e.kind == "command.resolve"), None)
    return event.text.partition(" ")[2].strip() if event else ""


def security_escalation(
    ref: str, title: str, priority: str, reporter: str, why: str, s: MirrorSettings, now: datetime
) -> tuple[list[OutboxSpec], TimelineEvent]:
    """Notices to the security contacts (email and/or room) and the timeline line saying so."""
    contacts = s.security or SecurityContacts()
    body = "\n".join(
        [
            f"Suspected security incident {ref} ({priority}): {one_line(title, 150)}",
            f"Reported by: {reporter}",
            f"Escalated because of {why}.",
            "Its details must not be published. Please contact the incident lead at once.",
        ]
    )
    specs: list[OutboxSpec] = []
    told = []
    if contacts.email and s.sender is not None:
        specs.append(_security_mail(ref, title, body, contacts.email, s.sender, now))
        told.append(contacts.email)
    if contacts.room:
        specs.append(chat_reply(contacts.room, None, body, "security", to="the security room"))
        told.append("the security room")
    text = (
        "Escalated to the security team: " + ", ".join(told)
        if told
        else "Security escalation asked for, but no [security] contacts are configured"
    )
    return specs, TimelineEvent(
        now, "security.escalated", "gateway", f"{text} ({why})", {"contacts": dumps(told)}
    )


def _security_mail(
    ref: str, title: str, body: str, to: str, sender: Sender, now: datetime
) -> OutboxSpec:
    stamp = int(now.timestamp() * 1_000_000)
    message_id = f"<{ref.lower()}.security.{stamp}@{sender.msgid_domain}>"
    out = render(
        sender=sender,
        to=to,
        subject=f"[{ref}] Security escalation: {title}",
        body=body + f"\n\n{sender.name}\n",
        message_id=message_id,
        in_reply_to=None,
        references=(),
        now=now,
    )
    return OutboxSpec(
        OutboxKind.MAIL_SEND,
        {
            "purpose": "security escalation",
            "message_id": out.message_id,
            "mail_from": out.mail_from,
            "rcpt_to": out.rcpt_to,
            "data": out.data.decode("ascii", "surrogateescape"),
        },
    )
