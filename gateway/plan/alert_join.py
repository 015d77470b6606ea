"""How tenants' reports and monitoring alerts are recognised as the same problem.

Matching is by the rulebook's `[[component]]`s, never by free similarity: an alert concerns
the components whose labels or names it matches (rules.alerts.alert_components), and its
incident is flagged with them; a report concerns the components whose words its subject or
text names (rules.alerts.text_components). Then:
- a report from a trusted sender (on the trust allow-list, not shown forged; in a report
  room, an allow-listed user or an engineer) that names a component of an open alert
  incident joins it as a reporter; anyone else's report stays
  its own incident, so nobody becomes a reporter of an incident by naming a component;
- a firing alert group with no incident of its own joins the newest open tenant incident
  whose title names one of its components, unless that report is held as coming from an
  unverified sender (its reporter must not hear about the alert).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from gateway.domain import (
    Channel,
    ChatMessage,
    Incident,
    Plan,
    PlanContext,
    Reporter,
    Status,
    TimelineEvent,
    chat_key,
)
from gateway.plan.relay import ChatSettings, chat_reply, chat_to_incident
from gateway.plan.replies import one_line
from gateway.plan.trust import UNVERIFIED_FLAG, TrustPolicy, judge_chat
from rules.alerts import text_components
from rules.book import Rulebook
from rules.types import Mailbox

ALERT_FLAG = "alert"
COMPONENT_FLAG = "component:"


def flagged_components(incident: Incident) -> tuple[str, ...]:
    """The components an incident was flagged with."""
    return tuple(
        f.removeprefix(COMPONENT_FLAG) for f in incident.flags if f.startswith(COMPONENT_FLAG)
    )


def _live(incident: Incident) -> bool:
    return incident.status is not Status.RESOLVED and incident.merged_into is None


# How far back an alert looks for the tenants' report it confirms (the newest few of each
# mailbox opened since then are read: gateway.db.recent_open_incidents).
REPORT_WINDOW = timedelta(days=2)


def report_for_alert(
    ctx: PlanContext, components: tuple[str, ...], book: Rulebook, now: datetime
) -> Incident | None:
    """The newest open tenant incident whose title names one of `components`."""
    if not components:
        return None
    wanted = set(components)

    def names(title: str) -> bool:
        return bool(wanted & set(text_components(title, book)))

    if ctx.recent_open is not None:
        found = [i for box in Mailbox for i in ctx.recent_open(box, now - REPORT_WINDOW, names)]
    else:
        found = [i for i in ctx.open_incidents() if names(i.title)]
    # Never one held as "unverified sender": its reporter would hear about the alert.
    live = [
        i
        for i in found
        if _live(i) and ALERT_FLAG not in i.flags and UNVERIFIED_FLAG not in i.flags
    ]
    return max(live, key=lambda i: i.id, default=None)


def _open_alerts(ctx: PlanContext) -> list[Incident]:
    if ctx.alert_ids is None:
        return [i for i in ctx.open_incidents() if ALERT_FLAG in i.flags]
    return [i for i in map(ctx.find, ctx.alert_ids()) if i is not None]


def alert_for_report(ctx: PlanContext, text: str, trusted: bool, book: Rulebook) -> Incident | None:
    """The newest open alert incident about a component `text` names, for a trusted sender
    (on the allow-list and not shown forged)."""
    if not trusted or not book.alerts.join_reports or not book.components:
        return None
    named = set(text_components(text, book))
    if not named:
        return None
    for incident in _open_alerts(ctx):  # newest first
        if (
            _live(incident)
            and ALERT_FLAG in incident.flags
            and named & set(flagged_components(incident))
        ):
            return incident
    return None


def known_outage_in_chat(
    msg: ChatMessage,
    ctx: PlanContext,
    book: Rulebook,
    chat: ChatSettings,
    trust: TrustPolicy,
    now: datetime,
) -> Plan | None:
    """A report-room message from a trusted user about a component of an open alert
    incident: it joins that incident as a reporter (answered in their thread, sent every
    update). None when it is anything else (planned as a report as usual)."""
    if ctx.thread is not None:
        return None
    verdict = judge_chat(msg.sender, trust, msg.sender_domain)
    trusted = verdict.trusted or msg.sender in chat.engineers
    incident = alert_for_report(ctx, msg.body, trusted, book)
    if incident is None:
        return None
    answer = (
        f"Thanks. We already know about this problem from our monitoring ({incident.ref}:"
        f" {one_line(incident.title, 120)}), and an engineer is on it. Updates will come "
        "in this thread."
    )
    return Plan(
        outcome=f"joined {incident.ref} (same outage, known from an alert)",
        incident_id=incident.id,
        reporter=Reporter(
            Channel.CHAT, msg.sender, (chat_key(msg.event_id),), msg.room_id, msg.event_id
        ),
        timeline=(
            TimelineEvent(
                now, "reported", msg.sender, f"Reported the same problem in chat: {msg.body[:500]}"
            ),
        ),
        outbox=(
            chat_reply(msg.room_id, msg.event_id, answer, "acknowledgement", to=msg.sender),
            chat_to_incident(
                f"{incident.ref}: {msg.sender} reports it in chat too: {msg.body[:500]}",
                "relay",
                chat.incidents_room,
            ),
        ),
        message_ids=(chat_key(msg.event_id),),
    )
