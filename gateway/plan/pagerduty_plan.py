"""The pure PagerDuty planner: a v3 webhook event about one of our incidents in; a Plan out.

Only incidents the gateway opened are touched: PagerDuty's `incident_key` is the dedup_key
we paged with (our reference, INC-n, or an escalation step's INC-n-escalation-k). Then:
- acknowledged: ours is acknowledged (so respond-by reminders and escalation stop), the
  thread hears who, and reporters hear that an engineer is on it; PagerDuty is not told
  again (it told us);
- unacknowledged (PagerDuty's acknowledgement timed out): ours is open again, so the
  reminders resume;
- resolved: ours is resolved and reporters told (policy "resolve"), or the engineers are
  asked to (policy "note");
- reassigned, escalated, delegated, reopened, priority or responders changed: timeline and
  a note in the thread.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING

from gateway.domain import Incident, OutboxSpec, Plan, Status, TimelineEvent
from gateway.plan.alarm_rooms import thread_post
from gateway.plan.alert_plan import AlertSettings
from gateway.plan.relay import chat_to_incident, to_reporters
from gateway.plan.replies import one_line

if TYPE_CHECKING:  # its pydantic models are built at import: loaded only for a webhook
    from gateway.parse.pagerduty_events import PagerDutyEvent

# Our dedup_keys: the reference, or an escalation step's page for it (gateway.plan.sla).
_REF = re.compile(r"^INC-(\d{1,12})(?:-escalation-\d{1,3})?$")


def incident_number(event: PagerDutyEvent) -> int | None:
    """Our incident's id from PagerDuty's incident_key, if it is one of our references."""
    match = _REF.match(event.incident_key or "")
    return int(match.group(1)) if match else None


def _note(settings: AlertSettings, text: str, incident: Incident) -> tuple[OutboxSpec, ...]:
    chat = settings.chat
    if chat is None:
        return ()
    return (chat_to_incident(text, "relay", chat.incidents_room), *thread_post(incident, text))


def plan_pagerduty(
    event: PagerDutyEvent,
    incident: Incident | None,
    settings: AlertSettings,
    now: datetime,
    key: str,
    on_resolved: str = "resolve",
) -> Plan:
    """What one PagerDuty event changes (`key`: unique per event, for Message-IDs)."""
    if incident is None or incident_number(event) != incident.id:
        return Plan(outcome="ignored: PagerDuty event about an incident we did not open")
    who = one_line(event.agent, 120) or "PagerDuty"
    kind = event.event_type.removeprefix("incident.")
    timeline = TimelineEvent(
        now, f"pagerduty.{kind}", who, _words(event, who), {"event_id": event.id, "url": event.url}
    )
    base = Plan(
        outcome=f"joined {incident.ref} (PagerDuty {kind})",
        incident_id=incident.id,
        timeline=(timeline,),
    )
    if kind == "acknowledged":
        return _acknowledged(base, incident, settings, who, now, key)
    if kind == "unacknowledged" and incident.status is Status.ACKNOWLEDGED:
        return _with(
            base,
            settings,
            incident,
            f"{incident.ref}: the acknowledgement on PagerDuty timed out; it is open again.",
            changes={"status": Status.OPEN.value},
        )
    if kind == "resolved":
        return _resolved(base, incident, settings, who, now, key, on_resolved)
    if kind in (
        "reassigned",
        "escalated",
        "delegated",
        "reopened",
        "priority_updated",
        "responder.added",
        "responder.replied",
        "annotated",
    ):
        return _with(base, settings, incident, f"{incident.ref}: {_words(event, who)}")
    return base


def _with(
    plan: Plan,
    settings: AlertSettings,
    incident: Incident,
    note: str,
    *,
    changes: dict[str, object] | None = None,
    outbox: tuple[OutboxSpec, ...] = (),
) -> Plan:
    return Plan(
        outcome=plan.outcome,
        incident_id=plan.incident_id,
        timeline=plan.timeline,
        outbox=(*outbox, *_note(settings, note, incident)),
        changes=changes or {},
    )


def _words(event: PagerDutyEvent, who: str) -> str:
    kind = event.event_type.removeprefix("incident.")
    to = ", ".join(one_line(a, 80) for a in event.assignees[:5]) or "nobody"
    texts = {
        "acknowledged": f"Acknowledged on PagerDuty by {who}",
        "unacknowledged": "The acknowledgement on PagerDuty timed out",
        "resolved": f"Resolved on PagerDuty by {who}",
        "reassigned": f"Reassigned on PagerDuty by {who} to {to}",
        "escalated": f"Escalated on PagerDuty to {to}"
        + (f" ({one_line(event.escalation_policy, 80)})" if event.escalation_policy else ""),
        "delegated": f"Delegated on PagerDuty by {who} to {to}",
        "reopened": f"Reopened on PagerDuty by {who}",
        "triggered": "Triggered on PagerDuty",
    }
    return texts.get(kind, f"PagerDuty: {one_line(kind, 60)} by {who}")


def _acknowledged(
    plan: Plan, incident: Incident, settings: AlertSettings, who: str, now: datetime, key: str
) -> Plan:
    if incident.status is not Status.OPEN:
        return plan
    text = (
        f"Update on {incident.ref} ({incident.title}):\n\nAn engineer is on it: our "
        "on-call engineer has acknowledged the problem and is investigating. We will "
        "keep you updated."
    )
    told = to_reporters(incident, text, "update", key, settings.sender, now)
    return _with(
        plan,
        settings,
        incident,
        f"{incident.ref} acknowledged on PagerDuty by {who}; "
        f"{len(told)} reporter(s) told an engineer is on it.",
        changes={"status": Status.ACKNOWLEDGED.value, "acknowledged_at": now},
        outbox=tuple(told),
    )


def _resolved(
    plan: Plan,
    incident: Incident,
    settings: AlertSettings,
    who: str,
    now: datetime,
    key: str,
    on_resolved: str,
) -> Plan:
    if incident.status is Status.RESOLVED:
        return plan
    if on_resolved != "resolve":
        return _with(
            plan,
            settings,
            incident,
            f"{incident.ref} was resolved on PagerDuty by "
            f"{who}. If it is over here too, close it with !resolve <what was done>.",
        )
    text = (
        f"{incident.ref} ({incident.title}) is resolved.\n\nIf it is not fixed for you, "
        "reply to this message and we will reopen it."
    )
    told = to_reporters(incident, text, "resolution", key, settings.sender, now)
    return _with(
        plan,
        settings,
        incident,
        f"{incident.ref} resolved on PagerDuty by {who}; {len(told)} reporter(s) told.",
        changes={"status": Status.RESOLVED.value, "resolved_at": now},
        outbox=tuple(told),
    )
