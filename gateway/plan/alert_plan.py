"""The pure alert planner: an alert notification, its incident (if any) and the clock in; a Plan.

One incident per alert group (Alertmanager/Grafana groupKey, Pingdom check, generic key),
found again by the group's key or any of its alerts' fingerprints:
- the first firing notification opens an incident, triaged by the rulebook's alert rules,
  and pages when its priority pages now (as mail would);
- a re-firing or growing group adds to its open incident's timeline and never pages again
  (unless the incident was never paged and the alerts now call for it);
- a group that fires after its incident was resolved reopens it and pages again;
- resolved alerts go on the timeline; when the whole group has resolved, the incident is
  resolved or the engineers are asked to, by the rule's `on_resolved` policy;
- with no incident of its own, a firing group about a component that an open tenant
  report names joins that report's incident (see gateway.plan.alert_join).
No I/O and no logging: reasons travel in the Plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from gateway.alerts import AlertNotification, clip
from gateway.domain import (
    Incident,
    NewIncident,
    OutboxKind,
    OutboxSpec,
    Plan,
    PlanContext,
    Status,
    TimelineEvent,
    dumps,
    incident_ref,
)
from gateway.plan.alarm_rooms import ROOM_FLAG, AlarmRooms, root_post, thread_post
from gateway.plan.alert_join import ALERT_FLAG, COMPONENT_FLAG, report_for_alert
from gateway.plan.relay import ChatSettings, announcement, chat_to_incident, page_spec, to_reporters
from gateway.plan.replies import Sender
from rules.alert_rules import ResolvePolicy
from rules.alerts import AlertDecision, triage_alerts
from rules.book import Rulebook
from rules.types import Mailbox

_RESOLVE_FLAG = "on-resolved:"
# Set with the page an alert asks for: a group's next notification can be planned before
# that page is delivered (and counted in pages_sent), and must not page a second time.
PAGE_PLANNED = "alert paged"


@dataclass(frozen=True)
class AlertSettings:
    """What the alert planner needs to know about this deployment."""

    sender: Sender
    pager_source: str
    chat: ChatSettings | None = None
    alarms: AlarmRooms = field(default_factory=AlarmRooms)


def alert_flags(n: AlertNotification, decision: AlertDecision) -> tuple[str, ...]:
    """The flags an alert incident carries: it is one, its source, policy and components."""
    return (
        ALERT_FLAG,
        f"alert-source:{n.source}",
        f"{_RESOLVE_FLAG}{decision.on_resolved.value}",
        *(f"{COMPONENT_FLAG}{c}" for c in decision.components),
    )


def _policy(incident: Incident) -> ResolvePolicy:
    for flag in incident.flags:
        if flag.startswith(_RESOLVE_FLAG):
            return ResolvePolicy(flag.removeprefix(_RESOLVE_FLAG))
    return ResolvePolicy.ASK


def describe(n: AlertNotification) -> str:
    """'Alertmanager (am-prod): 3 firing (HighLatency, …), 1 resolved (DiskFull)'."""
    firing = [a.name for a in n.alerts if a.firing]
    resolved = [a.name for a in n.alerts if not a.firing]
    parts = []
    for count, names, word in (
        (len(firing), firing, "firing"),
        (len(resolved), resolved, "resolved"),
    ):
        if count:
            shown = ", ".join(dict.fromkeys(names[:5]))
            parts.append(f"{count} {word} ({clip(shown, 200)}{', …' if count > 5 else ''})")
    more = f"; {n.truncated} more left out by the sender" if n.truncated > 0 else ""
    return f"{n.kind.value} ({n.source}): " + ", ".join(parts) + more


def _event(n: AlertNotification, now: datetime, kind: str) -> TimelineEvent:
    return TimelineEvent(
        now,
        kind,
        f"alerts:{n.source}",
        describe(n),
        {
            "source": n.source,
            "kind": n.kind.value,
            "alerts": [
                {"name": clip(a.name, 200), "status": a.status, "fingerprint": a.fingerprint[:64]}
                for a in n.alerts[:50]
            ],
        },
    )


def plan_alert(
    n: AlertNotification,
    ctx: PlanContext,
    book: Rulebook,
    settings: AlertSettings,
    now: datetime,
    key: str,
) -> Plan:
    """Decide what one alert notification changes (`key`: unique per notification)."""
    firing = n.firing()
    decision = triage_alerts((a.facts(n.kind) for a in firing), now, book) if firing else None
    incident = ctx.thread
    if incident is None and decision is not None and book.alerts.join_reports:
        incident = report_for_alert(ctx, decision.components, book, now)
        if incident is not None:
            return _joined(n, incident, decision, settings, now)
    if incident is None:
        if decision is None:
            return Plan(outcome="ignored: resolved alerts with no incident of theirs")
        return _open(n, decision, ctx.next_id, book, settings, now)
    if decision is not None:
        return _fired(n, incident, decision, settings, now, key)
    return _resolved(n, incident, settings, now, key)


def _open(
    n: AlertNotification,
    a: AlertDecision,
    next_id: int,
    book: Rulebook,
    settings: AlertSettings,
    now: datetime,
) -> Plan:
    d = a.decision
    if d.priority is None:
        raise RuntimeError("an alert decision always has a priority")
    ref, title = incident_ref(next_id), clip(n.title, 120) or "Monitoring alert"
    reporter = f"alerts:{n.source}"
    events = (
        _event(n, now, "alert.fired"),
        TimelineEvent(
            now,
            "triaged",
            "rules",
            f"{d.priority}: " + "; ".join(d.reasons),
            {"rule": d.rule, "period": d.period},
        ),
    )
    outbox: list[OutboxSpec] = []
    if settings.chat is not None:
        outbox.append(
            OutboxSpec(
                OutboxKind.CHAT_ANNOUNCE,
                {
                    "room_id": settings.chat.incidents_room,
                    "body": announcement(ref, title, d, reporter, n.kind.value, book),
                },
            )
        )
    if d.page:
        outbox.append(page_spec(ref, title, d, reporter, Mailbox.EMERGENCY, settings.pager_source))
    outbox.append(
        OutboxSpec(
            OutboxKind.TICKET_CREATE,
            {
                "reference": ref,
                "title": f"[{ref}] {title}",
                "priority": d.priority,
                "requester": reporter,
                "body": "\n".join(
                    [
                        f"Raised by monitoring ({n.kind.value}, source {n.source}).",
                        "",
                        *(
                            f"- {clip(al.name, 200)}: {clip(al.summary, 500)}"
                            for al in n.firing()[:20]
                        ),
                        "",
                        "Triage: " + "; ".join(d.reasons),
                    ]
                ),
            },
        )
    )
    room = settings.alarms.room_for(d.priority) if settings.chat is not None else None
    if room is not None:
        outbox.append(root_post(room, _alarm_text(ref, title, a, n, book)))
    incident = NewIncident(
        title=title,
        priority=d.priority,
        mailbox=Mailbox.EMERGENCY,
        rule=d.rule,
        reasons=d.reasons,
        period=d.period,
        respond_by=d.respond_by,
        next_update_by=d.next_update_by,
        flags=alert_flags(n, a)
        + ((PAGE_PLANNED,) if d.page else ())
        + ((f"{ROOM_FLAG}{room}",) if room else ()),
    )
    return Plan(
        outcome=f"opened {ref} ({d.priority}{', paged' if d.page else ''}) from an alert",
        new_incident=incident,
        timeline=events,
        outbox=tuple(outbox),
        message_ids=n.thread_keys(),
    )


def _alarm_text(
    ref: str, title: str, a: AlertDecision, n: AlertNotification, book: Rulebook
) -> str:
    d = a.decision
    if d.priority is None:
        raise RuntimeError("an alert decision always has a priority")
    level = book.priorities.get(d.priority)
    return "\n".join(
        [
            f"{ref} · {d.priority} {level.name}: {title}",
            describe(n),
            f"Paged: {'yes' if d.page else 'no'}",
            f"Reply in this thread with !ack, !note <text>, !resolve <text> or "
            f"!help (or name it: !ack {ref}).",
        ]
    )


def _note(
    settings: AlertSettings, text: str, incident: Incident | None = None
) -> tuple[OutboxSpec, ...]:
    """A note in the incident's thread in the incidents room, and in its alarm thread."""
    chat = settings.chat
    if chat is None:
        return ()
    alarm = thread_post(incident, text) if incident is not None else ()
    return (chat_to_incident(text, "relay", chat.incidents_room), *alarm)


def _page_if_needed(
    incident: Incident, a: AlertDecision, n: AlertNotification, settings: AlertSettings, again: bool
) -> tuple[OutboxSpec, ...]:
    """A page when the alerts call for one and the incident has none open: never paged, or
    `again` (it was resolved and fires anew)."""
    d = a.decision
    if not d.page or ((incident.pages_sent or PAGE_PLANNED in incident.flags) and not again):
        return ()
    return (
        page_spec(
            incident.ref,
            incident.title,
            d,
            f"alerts:{n.source}",
            incident.mailbox,
            settings.pager_source,
        ),
    )


def _raised(incident: Incident, a: AlertDecision) -> dict[str, object]:
    d = a.decision
    if d.priority is None:
        raise RuntimeError("an alert decision always has a priority")
    return {"priority": d.priority.value} if d.priority.rank < incident.priority.rank else {}


def _fired(
    n: AlertNotification,
    incident: Incident,
    a: AlertDecision,
    settings: AlertSettings,
    now: datetime,
    key: str,
) -> Plan:
    again = incident.status is Status.RESOLVED
    pages = _page_if_needed(incident, a, n, settings, again)
    events = [_event(n, now, "alert.fired")]
    changes = _raised(incident, a)
    if pages and PAGE_PLANNED not in incident.flags:
        changes["flags"] = dumps([*incident.flags, PAGE_PLANNED])
    outbox = list(pages)
    if again:
        events.append(
            TimelineEvent(now, "reopened", f"alerts:{n.source}", "Reopened: the alerts fire again")
        )
        outbox += _note(
            settings,
            f"{incident.ref} reopened: the alerts fire again"
            + (" (paging again)." if pages else "."),
            incident,
        )
        outbox += to_reporters(
            incident,
            f"{incident.ref} ({incident.title}): our monitoring "
            "shows the problem is back. We have reopened it and are looking "
            "into it.",
            "update",
            key,
            settings.sender,
            now,
        )
    else:
        outbox += _note(
            settings,
            f"{incident.ref}: {describe(n)}"
            + (" Paging the on-call engineer." if pages else " (not paged again)"),
            incident,
        )
    outcome = (
        f"joined {incident.ref} (alerts fire again{', paged' if pages else ''})"
        if again
        else f"joined {incident.ref} (alert update{', paged' if pages else ''})"
    )
    return Plan(
        outcome=outcome,
        incident_id=incident.id,
        reopen=again,
        timeline=tuple(events),
        outbox=tuple(outbox),
        message_ids=n.thread_keys(),
        changes=changes,
    )


def _resolved(
    n: AlertNotification, incident: Incident, settings: AlertSettings, now: datetime, key: str
) -> Plan:
    events = (_event(n, now, "alert.resolved"),)
    if incident.status is Status.RESOLVED:
        return Plan(
            outcome=f"joined {incident.ref} (alerts resolved; already resolved)",
            incident_id=incident.id,
            timeline=events,
            message_ids=n.thread_keys(),
        )
    if _policy(incident) is ResolvePolicy.ASK:
        return Plan(
            outcome=f"joined {incident.ref} (alerts resolved; engineers asked)",
            incident_id=incident.id,
            timeline=events,
            message_ids=n.thread_keys(),
            outbox=_note(
                settings,
                f"{incident.ref}: every alert has resolved. If the "
                "problem is over, close it with !resolve <what "
                "was done>.",
                incident,
            ),
        )
    text = (
        f"{incident.ref} ({incident.title}) is resolved: our monitoring shows the "
        "problem has cleared.\n\nIf it is not fixed for you, reply to this message and we "
        "will reopen it."
    )
    outbox = [
        *to_reporters(incident, text, "resolution", key, settings.sender, now),
        *_note(
            settings,
            f"{incident.ref} resolved: every alert has resolved (on_resolved = resolve).",
            incident,
        ),
    ]
    if incident.pages_sent:
        outbox.append(OutboxSpec(OutboxKind.PAGE_RESOLVE, {"dedup_key": incident.ref}))
    return Plan(
        outcome=f"joined {incident.ref} (alerts resolved; incident resolved)",
        incident_id=incident.id,
        timeline=(
            *events,
            TimelineEvent(now, "resolved", f"alerts:{n.source}", "Resolved: every alert resolved"),
        ),
        outbox=tuple(outbox),
        message_ids=n.thread_keys(),
        changes={"status": Status.RESOLVED.value, "resolved_at": now},
    )


def _joined(
    n: AlertNotification,
    incident: Incident,
    a: AlertDecision,
    settings: AlertSettings,
    now: datetime,
) -> Plan:
    """A firing group about a component a tenant's open report names joins that report."""
    pages = _page_if_needed(incident, a, n, settings, again=False)
    flags = list(
        dict.fromkeys([*incident.flags, *alert_flags(n, a), *([PAGE_PLANNED] if pages else [])])
    )
    events = (
        _event(n, now, "alert.fired"),
        TimelineEvent(
            now,
            "alert.joined",
            f"alerts:{n.source}",
            "Monitoring alerts about " + ", ".join(a.components) + " joined this reported incident",
        ),
    )
    note = f"{incident.ref}: monitoring confirms it: {describe(n)}" + (
        " Paging the on-call engineer." if pages else ""
    )
    return Plan(
        outcome=f"joined {incident.ref} (alert about a reported problem"
        f"{', paged' if pages else ''})",
        incident_id=incident.id,
        timeline=events,
        outbox=(*pages, *_note(settings, note)),
        message_ids=n.thread_keys(),
        changes={"flags": dumps(flags), **_raised(incident, a)},
    )
