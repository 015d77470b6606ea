"""An email that opens a new incident: its title, the triage's page (held for a check when
the sender is not trusted), the ticket, the incidents-room announcement, and the
acknowledgement (or why there is none)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from gateway.domain import (
    InboxRow,
    NewIncident,
    OutboxKind,
    OutboxSpec,
    Plan,
    PlanContext,
    TimelineEvent,
    incident_ref,
)
from gateway.parse.mail import ParsedMail
from gateway.plan.answer_to import Answer
from gateway.plan.mail_answer import (
    NEUTRAL_TITLE,
    UNVERIFIED_NOTE,
    ack_mail,
    answer_allowed,
    answer_for,
    email_reporter,
    sender_of,
)
from gateway.plan.relay import announcement, chat_to_incident, page_spec
from gateway.plan.replies import base_subject, one_line
from gateway.plan.settings import TEXT_LIMIT, Settings
from gateway.plan.trust import UNVERIFIED_FLAG, Verdict
from rules.book import Rulebook
from rules.types import TriageDecision

_CONFIRM = (
    "Not paged: the sender is not verified. An engineer can page with !page {ref} "
    "after checking the report is genuine."
)


def title_for(mail: ParsedMail) -> str:
    """A descriptive title: the subject without Re:/Fwd:, else the first line of the text."""
    title = base_subject(mail.subject)
    if not title:
        first = next((ln for ln in mail.new_text.splitlines() if ln.strip()), "")
        title = one_line(first, 120)
    return title[:120] or "Report without a subject"


def open_incident(
    row: InboxRow,
    mail: ParsedMail,
    decision: TriageDecision,
    next_id: int,
    book: Rulebook,
    settings: Settings,
    now: datetime,
    verdict: Verdict,
    context: PlanContext | None = None,
) -> Plan:
    """A new incident for this email: announced, paged when the triage says so and the
    sender is trusted (else held for an engineer's !page), ticketed, and acknowledged."""
    if decision.priority is None or row.mailbox is None:
        raise RuntimeError("priority and mailbox are set here")
    priority = decision.priority
    held = decision.page and not verdict.trusted
    if held:  # never pages alone: a ticket, and the incidents room is asked to confirm
        decision = replace(decision, page=False, ticket=True)
    ref = incident_ref(next_id)
    title = title_for(mail)
    sender = sender_of(row, mail)
    their_ids = (mail.message_id,) if mail.message_id else ()
    events = [
        TimelineEvent(
            now,
            "reported",
            sender,
            f"Reported by email to the {row.mailbox} mailbox",
            {
                "inbox_id": row.id,
                "subject": mail.subject,
                "text": (mail.new_text or mail.text)[:TEXT_LIMIT],
                "attachments": [a.filename or a.content_type for a in mail.attachments],
            },
        ),
        TimelineEvent(
            now,
            "triaged",
            "rules",
            f"{decision.priority}: " + "; ".join(decision.reasons),
            {"rule": decision.rule, "period": decision.period},
        ),
    ]
    outbox = []
    if settings.chat is not None:
        outbox.append(
            OutboxSpec(
                OutboxKind.CHAT_ANNOUNCE,
                {
                    "room_id": settings.chat.incidents_room,
                    "body": announcement(ref, title, decision, sender, "email", book),
                },
            )
        )
    if decision.page:
        outbox.append(page_spec(ref, title, decision, sender, row.mailbox, settings.pager_source))
    if held:
        events.append(
            TimelineEvent(
                now,
                "unverified",
                "gateway",
                _CONFIRM.format(ref=ref) + " " + "; ".join(verdict.reasons),
            )
        )
        if settings.chat is not None:
            outbox.append(
                chat_to_incident(
                    f"{ref}: {_CONFIRM.format(ref=ref)} (" + "; ".join(verdict.reasons) + ")",
                    "alert",
                    settings.chat.incidents_room,
                )
            )
    if decision.ticket:
        outbox.append(_ticket(ref, title, decision, sender, mail))
    answer = answer_for(row, mail, settings, verdict)
    our_ids: tuple[str, ...] = ()
    if decision.reply:
        answer = answer_allowed(answer, settings, context, now)
        our_ids = _acknowledge(
            ref, title, decision, mail, row, book, settings, now, answer, held, events, outbox
        )
    reporter = email_reporter(answer, sender, mail, their_ids)
    incident = NewIncident(
        title=title,
        priority=priority,
        mailbox=row.mailbox,
        rule=decision.rule,
        reasons=decision.reasons,
        period=decision.period,
        respond_by=decision.respond_by,
        # Flagged whenever the sender is not trusted, paging or not: a trusted report never
        # joins such an incident (gateway.plan.storm.find_join), whoever's name it carries.
        next_update_by=decision.next_update_by,
        flags=() if verdict.trusted else (UNVERIFIED_FLAG,),
    )
    return Plan(
        outcome=f"opened {ref} ({decision.priority}{', paged' if decision.page else ''}"
        f"{', unverified sender' if held else ''})",
        new_incident=incident,
        reporter=reporter,
        timeline=tuple(events),
        outbox=tuple(outbox),
        message_ids=(their_ids if reporter else ()) + our_ids,
    )


def _acknowledge(
    ref: str,
    title: str,
    decision: TriageDecision,
    mail: ParsedMail,
    row: InboxRow,
    book: Rulebook,
    settings: Settings,
    now: datetime,
    answer: Answer,
    held: bool,
    events: list[TimelineEvent],
    outbox: list[OutboxSpec],
) -> tuple[str, ...]:
    """Queue the reporter's acknowledgement (our Message-ID returned), or say on the timeline
    and in the incidents room why there is none."""
    if answer.address is not None:
        ack = ack_mail(
            ref,
            title if answer.echo else NEUTRAL_TITLE.format(mailbox=row.mailbox),
            decision,
            mail,
            answer.address,
            row,
            book,
            settings,
            now,
            UNVERIFIED_NOTE if held else "",
            echo=answer.echo,
        )
        outbox.append(ack)
        return (str(ack.payload["message_id"]),)
    events.append(
        TimelineEvent(
            now, "not_acknowledged", "gateway", f"No acknowledgement by email: {answer.why}"
        )
    )
    if settings.chat is not None:
        outbox.append(
            chat_to_incident(
                f"{ref}: the reporter was not acknowledged by email ({answer.why}).",
                "alert",
                settings.chat.incidents_room,
            )
        )
    return ()


def _ticket(
    ref: str, title: str, decision: TriageDecision, sender: str, mail: ParsedMail
) -> OutboxSpec:
    """The ticket for the new incident, with the reporter's text and the triage's reasons."""
    body = "\n".join(
        [
            f"Reported by {sender}.",
            "",
            mail.new_text[:TEXT_LIMIT],
            "",
            "Triage: " + "; ".join(decision.reasons),
        ]
    )
    return OutboxSpec(
        OutboxKind.TICKET_CREATE,
        {
            "reference": ref,
            "title": f"[{ref}] {title}",
            "priority": decision.priority,
            "requester": sender,
            "body": body,
        },
    )
