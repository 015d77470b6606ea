"""The pure pipeline: an accepted email, its thread and the clock in; a Plan out.

No I/O and no logging: the store applies the Plan in one transaction, the outbox delivers
what it asks for, and the reasons travel in the Plan's timeline instead of log lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateway.domain import (
    Channel,
    InboxRow,
    Incident,
    NewIncident,
    OutboxKind,
    OutboxSpec,
    Plan,
    Reporter,
    Status,
    TimelineEvent,
    incident_ref,
)
from gateway.mail import ParsedMail
from gateway.relay import ChatSettings, announcement, chat_to_incident, page_spec
from gateway.replies import Sender, ack_body, ack_subject, base_subject, one_line, render
from rules.book import Rulebook
from rules.engine import triage
from rules.types import Mailbox, Period, Priority, Report, TriageDecision

_TEXT_LIMIT = 4000
_DAY_NAMES = {"Mon": "Monday", "Tue": "Tuesday", "Wed": "Wednesday", "Thu": "Thursday",
              "Fri": "Friday", "Sat": "Saturday", "Sun": "Sunday"}


@dataclass(frozen=True)
class Settings:
    """What the pipeline needs to know about this deployment."""

    sender: Sender
    pager_source: str
    signature: str
    chat: ChatSettings | None = None


def report_for(mailbox: Mailbox, mail_from: str | None, mail: ParsedMail) -> Report:
    """The channel-neutral view of a message that the rules triage."""
    automatic = mail.automatic
    if automatic is None and mail_from == "":
        automatic = "null return path"
    return Report(
        mailbox=mailbox,
        sender=mail.from_addr or (mail_from or "").lower(),
        subject=mail.subject,
        body=mail.new_text,
        headers=mail.headers,
        automatic=automatic,
    )


def reply_address(row: InboxRow, mail: ParsedMail) -> str | None:
    """Where an answer goes: Reply-To, else From, else the envelope sender; None if unusable."""
    for candidate in (mail.reply_to, mail.from_addr, row.mail_from):
        if candidate and "@" in candidate and one_line(candidate, 254) == candidate:
            return candidate.lower()
    return None


def title_for(mail: ParsedMail) -> str:
    """A descriptive title: the subject without Re:/Fwd:, else the first line of the text."""
    title = base_subject(mail.subject)
    if not title:
        first = next((ln for ln in mail.new_text.splitlines() if ln.strip()), "")
        title = one_line(first, 120)
    return title[:120] or "Report without a subject"


def plan_email(
    row: InboxRow,
    mail: ParsedMail,
    thread: Incident | None,
    next_id: int,
    book: Rulebook,
    settings: Settings,
    now: datetime,
    decision: TriageDecision | None = None,
) -> Plan:
    """Decide what one parsed email changes (`decision`: the triage, if already made)."""
    assert row.mailbox is not None, "email is always accepted into a mailbox"
    if decision is None:
        decision = triage(report_for(row.mailbox, row.mail_from, mail), now, book)
    if decision.ignored is not None:
        return Plan(outcome=f"ignored: {decision.ignored}")
    if thread is not None:
        return _join(row, mail, thread, settings, now)
    return _new_incident(row, mail, decision, next_id, book, settings, now)


def _join(row: InboxRow, mail: ParsedMail, incident: Incident, settings: Settings,
          now: datetime) -> Plan:
    sender = mail.from_addr or row.mail_from.lower()
    ids = (mail.message_id,) if mail.message_id else ()
    events = [TimelineEvent(now, "reporter.replied", sender, mail.new_text[:_TEXT_LIMIT],
                            {"inbox_id": row.id, "subject": mail.subject})]
    reopen = incident.status is Status.RESOLVED
    if reopen:
        events.append(TimelineEvent(now, "reopened", sender,
                                    "Reopened: the reporter replied after it was resolved"))
    outbox: tuple[OutboxSpec, ...] = ()
    if settings.chat is not None:
        note = f"{sender} replied by email: {mail.new_text[:1000]}"
        if reopen:
            note = f"{incident.ref} reopened: " + note
        outbox = (chat_to_incident(note, "relay", settings.chat.incidents_room),)
    return Plan(
        outcome=f"joined {incident.ref}" + (" (reopened)" if reopen else ""),
        incident_id=incident.id,
        reporter=Reporter(Channel.EMAIL, sender, ids),
        reopen=reopen,
        timeline=tuple(events),
        outbox=outbox,
        message_ids=ids,
    )


def _new_incident(
    row: InboxRow,
    mail: ParsedMail,
    decision: TriageDecision,
    next_id: int,
    book: Rulebook,
    settings: Settings,
    now: datetime,
) -> Plan:
    assert decision.priority is not None and row.mailbox is not None
    ref = incident_ref(next_id)
    title = title_for(mail)
    sender = mail.from_addr or row.mail_from.lower()
    their_ids = (mail.message_id,) if mail.message_id else ()
    events = [
        TimelineEvent(now, "reported", sender, f"Reported by email to the {row.mailbox} mailbox",
                      {"inbox_id": row.id, "subject": mail.subject,
                       "attachments": [a.filename or a.content_type for a in mail.attachments]}),
        TimelineEvent(now, "triaged", "rules",
                      f"{decision.priority}: " + "; ".join(decision.reasons),
                      {"rule": decision.rule, "period": decision.period}),
    ]
    outbox = []
    if settings.chat is not None:
        outbox.append(OutboxSpec(OutboxKind.CHAT_ANNOUNCE, {
            "room_id": settings.chat.incidents_room,
            "body": announcement(ref, title, decision, sender, "email", book),
        }))
    if decision.page:
        outbox.append(page_spec(ref, title, decision, sender, row.mailbox, settings.pager_source))
    if decision.ticket:
        outbox.append(_ticket(ref, title, decision, sender, mail))
    our_ids: tuple[str, ...] = ()
    to = reply_address(row, mail)
    if decision.reply and to is not None:
        ack = _ack(ref, title, decision, mail, to, row, book, settings, now)
        outbox.append(ack)
        our_ids = (str(ack.payload["message_id"]),)
    incident = NewIncident(
        title=title, priority=decision.priority, mailbox=row.mailbox, rule=decision.rule,
        reasons=decision.reasons, period=decision.period, respond_by=decision.respond_by,
        next_update_by=decision.next_update_by,
    )
    return Plan(
        outcome=f"opened {ref} ({decision.priority}{', paged' if decision.page else ''})",
        new_incident=incident,
        reporter=Reporter(Channel.EMAIL, sender, their_ids),
        timeline=tuple(events),
        outbox=tuple(outbox),
        message_ids=their_ids + our_ids,
    )


def _ticket(ref: str, title: str, decision: TriageDecision, sender: str,
            mail: ParsedMail) -> OutboxSpec:
    body = "\n".join([f"Reported by {sender}.", "", mail.new_text[:_TEXT_LIMIT], "",
                      "Triage: " + "; ".join(decision.reasons)])
    return OutboxSpec(OutboxKind.TICKET_CREATE, {
        "reference": ref, "title": f"[{ref}] {title}", "priority": decision.priority,
        "requester": sender, "body": body,
    })


def _ack(ref: str, title: str, decision: TriageDecision, mail: ParsedMail, to: str,
         row: InboxRow, book: Rulebook, settings: Settings, now: datetime) -> OutboxSpec:
    assert decision.priority is not None
    level = book.priorities.get(decision.priority)
    body = ack_body(
        ref=ref, title=title, priority=decision.priority, priority_name=level.name,
        meaning=level.meaning, paged=decision.page,
        in_hours=decision.period is Period.IN_HOURS, respond_by=decision.respond_by,
        next_update_by=decision.next_update_by, tz=book.hours.timezone,
        hours_text=hours_text(book), signature=settings.signature,
    )
    message_id = f"<{ref.lower()}.{row.id}.ack@{settings.sender.msgid_domain}>"
    refs = [*mail.references, *([mail.message_id] if mail.message_id else [])]
    out = render(sender=settings.sender, to=to, subject=ack_subject(ref, mail.subject), body=body,
                 message_id=message_id, in_reply_to=mail.message_id, references=refs, now=now)
    return OutboxSpec(OutboxKind.MAIL_SEND, {
        "purpose": "acknowledgement", "message_id": out.message_id, "mail_from": out.mail_from,
        "rcpt_to": out.rcpt_to, "data": out.data.decode("ascii", "surrogateescape"),
    })


def hours_text(book: Rulebook) -> str:
    """'Monday to Friday, 09:00–17:00 UK time' (or the configured days and zone)."""
    h = book.hours
    days = [d.capitalize() for d in h.working_days]
    span = f"{_DAY_NAMES[days[0]]} to {_DAY_NAMES[days[-1]]}" if len(days) > 1 else (
        _DAY_NAMES[days[0]])
    zone = "UK time" if h.timezone == "Europe/London" else h.timezone
    return f"{span}, {h.in_hours.start:%H:%M}–{h.in_hours.end:%H:%M} {zone}"


def plan_unreadable(row: InboxRow, problem: str, now: datetime) -> Plan:
    """A message we could not parse or process is never lost: a ticket for a human."""
    sender = row.mail_from.lower() or "unknown sender"
    title = f"Unreadable message from {one_line(sender, 100)}"
    return Plan(
        outcome=f"unreadable: {problem}",
        new_incident=NewIncident(
            title=title, priority=Priority.P4, mailbox=row.mailbox or Mailbox.SUPPORT, rule=None,
            reasons=(f"the message could not be read ({problem}); a person must look at it",),
            period=None, respond_by=None, next_update_by=None, flags=("unparseable",),
        ),
        timeline=(TimelineEvent(now, "reported", sender,
                                f"Unreadable message kept as inbox #{row.id}: {problem}"),),
        outbox=(OutboxSpec(OutboxKind.TICKET_CREATE, {
            "reference": None, "title": title, "priority": "P4", "requester": sender,
            "body": f"Inbox message #{row.id} could not be read ({problem}). "
                    "The raw message is kept in the store.",
        }),),
    )
