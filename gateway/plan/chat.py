"""Chat messages in the pipeline: which ones the bot acts on at all, and what a message in a
report room changes (a new report, or a reporter speaking in their incident's thread).

Pure, like gateway.plan.pipeline: the chat adapter translated its system's event into a
neutral `ChatMessage` (gateway.domain_chat) and the intake persisted it; this decides.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from gateway.domain import (
    Channel,
    ChatKind,
    ChatMessage,
    Incident,
    NewIncident,
    OutboxKind,
    OutboxSpec,
    Plan,
    Reporter,
    Status,
    TimelineEvent,
    chat_key,
    incident_ref,
)
from gateway.plan.e2ee import untrusted_device_reason
from gateway.plan.relay import ChatSettings, announcement, chat_reply, chat_to_incident, page_spec
from gateway.plan.replies import local_time, one_line, priority_line, zone_name
from gateway.plan.trust import UNVERIFIED_FLAG, TrustPolicy, judge_chat
from rules.book import Rulebook
from rules.engine import triage
from rules.types import Mailbox, Report, TriageDecision

_TEXT_LIMIT = 4000


def should_ignore(msg: ChatMessage, chat: ChatSettings) -> str | None:
    """Why the bot must not act on a message: its own, a notice, an edit."""
    if msg.sender == chat.bot_user_id:
        return "our own message"
    if msg.kind is ChatKind.NOTICE:
        return "a notice (bots talk in notices; we never answer them)"
    if msg.kind is ChatKind.EDIT:
        return "an edit"
    if msg.kind is not ChatKind.TEXT:
        return "not text"
    return None


def plan_report_room(
    msg: ChatMessage,
    thread: Incident | None,
    next_id: int,
    book: Rulebook,
    chat: ChatSettings,
    pager_source: str,
    now: datetime,
    trust: TrustPolicy | None = None,
) -> Plan:
    """A tenant's message in a report room: joins its incident, or becomes a new report.
    Only allow-listed users (and engineers) page on their own (gateway.plan.trust). In a
    room that takes reports only from verified devices, anything else is answered, not acted
    on."""
    if msg.room_id in chat.verified_report_rooms:
        why = untrusted_device_reason(msg.device, "reports")
        if why is not None:
            return Plan(
                outcome="refused: device not trusted",
                outbox=(
                    chat_reply(
                        msg.room_id,
                        msg.thread_root or msg.event_id,
                        why,
                        "answer",
                        reply_to=msg.event_id,
                        to=msg.sender,
                    ),
                ),
            )
    if thread is not None:
        return _join(msg, thread, chat, now)
    mailbox = Mailbox(chat.report_rooms.get(msg.room_id, "support"))
    decision = triage(
        Report(mailbox=mailbox, sender=msg.sender, subject="", body=msg.body), now, book
    )
    if decision.priority is None:
        raise RuntimeError("priority is set here")
    priority = decision.priority
    verdict = judge_chat(msg.sender, trust or TrustPolicy(), msg.sender_domain)
    held = decision.page and not (verdict.trusted or msg.sender in chat.engineers)
    if held:
        decision = replace(decision, page=False)
    ref = incident_ref(next_id)
    first = next((ln for ln in msg.body.splitlines() if ln.strip()), "")
    title = one_line(first, 120) or "Report in chat"
    outbox: list[OutboxSpec] = [
        OutboxSpec(
            OutboxKind.CHAT_ANNOUNCE,
            {
                "room_id": chat.incidents_room,
                "body": announcement(ref, title, decision, msg.sender, "chat", book),
            },
        )
    ]
    if decision.page:
        outbox.append(page_spec(ref, title, decision, msg.sender, mailbox, pager_source))
    if held:
        outbox.append(
            chat_to_incident(
                f"{ref}: Not paged: {msg.sender} is not on the allow-list. An engineer can page "
                f"with !page {ref} after checking the report is genuine.",
                "alert",
                chat.incidents_room,
            )
        )
    outbox.append(
        OutboxSpec(
            OutboxKind.TICKET_CREATE,
            {
                "reference": ref,
                "title": f"[{ref}] {title}",
                "priority": decision.priority,
                "requester": msg.sender,
                "body": msg.body[:_TEXT_LIMIT],
            },
        )
    )
    outbox.append(
        chat_reply(
            msg.room_id,
            msg.event_id,
            _ack_text(ref, decision, book),
            "acknowledgement",
            to=msg.sender,
        )
    )
    return Plan(
        outcome=f"opened {ref} ({decision.priority}{', paged' if decision.page else ''})",
        new_incident=NewIncident(
            title,
            priority,
            mailbox,
            decision.rule,
            decision.reasons,
            decision.period,
            decision.respond_by,
            decision.next_update_by,
            (UNVERIFIED_FLAG,) if held else (),
        ),
        reporter=Reporter(
            Channel.CHAT, msg.sender, (chat_key(msg.event_id),), msg.room_id, msg.event_id
        ),
        timeline=(
            TimelineEvent(now, "reported", msg.sender, f"Reported in chat: {msg.body[:500]}"),
            TimelineEvent(
                now,
                "triaged",
                "rules",
                f"{decision.priority}: " + "; ".join(decision.reasons),
                {"rule": decision.rule},
            ),
        ),
        outbox=tuple(outbox),
        message_ids=(chat_key(msg.event_id),),
    )


def _ack_text(ref: str, decision: TriageDecision, book: Rulebook) -> str:
    if decision.priority is None:
        raise RuntimeError("priority is set here")
    level = book.priorities.get(decision.priority)
    parts = [
        f"Thanks, we have logged this as {ref}. "
        + priority_line(decision.priority, level.name, level.meaning)
    ]
    if decision.page:
        parts.append("We have paged the on-call engineer.")
    if decision.respond_by:
        when = local_time(decision.respond_by, book.hours.timezone)
        parts.append(f"You will hear from us by {when} ({zone_name(book.hours.timezone)}).")
    parts.append("Updates will come in this thread; reply here to add information.")
    return " ".join(parts)


def _join(msg: ChatMessage, incident: Incident, chat: ChatSettings, now: datetime) -> Plan:
    reopen = incident.status is Status.RESOLVED
    events = [TimelineEvent(now, "reporter.replied", msg.sender, msg.body[:_TEXT_LIMIT])]
    note = f"{msg.sender} wrote in their thread: {msg.body[:1000]}"
    if reopen:
        events.append(
            TimelineEvent(
                now, "reopened", msg.sender, "Reopened: the reporter wrote after it was resolved"
            )
        )
        note = f"{incident.ref} reopened: " + note
    return Plan(
        outcome=f"joined {incident.ref}" + (" (reopened)" if reopen else ""),
        incident_id=incident.id,
        reporter=Reporter(
            Channel.CHAT,
            msg.sender,
            (chat_key(msg.event_id),),
            msg.room_id,
            msg.thread_root or msg.event_id,
        ),
        reopen=reopen,
        timeline=tuple(events),
        outbox=(chat_to_incident(note, "relay", chat.incidents_room),),
        message_ids=(chat_key(msg.event_id),),
    )
