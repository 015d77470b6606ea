"""An email that joins an open incident: a reporter replying in their thread (reopening a
resolved incident), another reporter of the same outage (a storm), or a trusted reporter of
a problem monitoring found first (an alert's incident)."""

from __future__ import annotations

from datetime import datetime

from gateway.domain import (
    Channel,
    InboxRow,
    Incident,
    OutboxSpec,
    Plan,
    PlanContext,
    Reporter,
    Status,
    TimelineEvent,
)
from gateway.parse.mail import ParsedMail
from gateway.plan.mail_answer import (
    KNOWN_NOTE,
    NEUTRAL_TITLE,
    STORM_NOTE,
    ack_mail,
    answer_allowed,
    answer_for,
    email_reporter,
    sender_of,
)
from gateway.plan.relay import chat_to_incident
from gateway.plan.replies import one_line
from gateway.plan.settings import TEXT_LIMIT, Settings
from gateway.plan.storm import Join
from gateway.plan.trust import Verdict
from rules.book import Rulebook
from rules.types import Period, TriageDecision


def join_thread(
    row: InboxRow, mail: ParsedMail, incident: Incident, settings: Settings, now: datetime
) -> Plan:
    """A reporter wrote again in their incident's thread: their words join it (a resolved
    incident reopens), relayed to the incidents room."""
    sender = sender_of(row, mail)
    ids = (mail.message_id,) if mail.message_id else ()
    events = [
        TimelineEvent(
            now,
            "reporter.replied",
            sender,
            mail.new_text[:TEXT_LIMIT],
            {"inbox_id": row.id, "subject": mail.subject},
        )
    ]
    reopen = incident.status is Status.RESOLVED
    if reopen:
        events.append(
            TimelineEvent(
                now, "reopened", sender, "Reopened: the reporter replied after it was resolved"
            )
        )
    outbox: tuple[OutboxSpec, ...] = ()
    if settings.chat is not None:
        note = f"{sender} replied by email: {mail.new_text[:1000]}"
        if reopen:
            note = f"{incident.ref} reopened: " + note
        outbox = (chat_to_incident(note, "relay", settings.chat.incidents_room),)
    return Plan(
        outcome=f"joined {incident.ref}" + (" (reopened)" if reopen else ""),
        incident_id=incident.id,
        # A list's own address (a reply whose author the list did not name) never becomes
        # a reporter: it would receive every later update.
        reporter=None if sender in mail.list_addresses else Reporter(Channel.EMAIL, sender, ids),
        reopen=reopen,
        timeline=tuple(events),
        outbox=outbox,
        message_ids=ids,
    )


def join_alert(
    row: InboxRow,
    mail: ParsedMail,
    alert: Incident,
    book: Rulebook,
    settings: Settings,
    now: datetime,
    verdict: Verdict,
    context: PlanContext | None,
) -> Plan:
    """Monitoring found it first: a trusted reporter joins the alert's incident."""
    if any(r.address == sender_of(row, mail) for r in alert.reporters):
        return join_thread(row, mail, alert, settings, now)
    return storm_join(
        row, mail, Join(alert, False), book, settings, now, verdict, context, KNOWN_NOTE
    )


def storm_join(
    row: InboxRow,
    mail: ParsedMail,
    join: Join,
    book: Rulebook,
    settings: Settings,
    now: datetime,
    verdict: Verdict,
    context: PlanContext | None,
    note: str = STORM_NOTE,
) -> Plan:
    """Another reporter of an open incident: acknowledged and told the updates, no page."""
    inc, sender = join.incident, sender_of(row, mail)
    ids = (mail.message_id,) if mail.message_id else ()
    events = (
        TimelineEvent(
            now,
            "reported",
            sender,
            f"Reported the same problem by email to the {row.mailbox} mailbox",
            {"inbox_id": row.id, "subject": mail.subject},
        ),
    )
    decision = TriageDecision(
        inc.priority,
        False,
        False,
        True,
        inc.rule,
        inc.reasons,
        inc.period or Period.IN_HOURS,
        inc.respond_by,
        inc.next_update_by,
    )
    outbox: list[OutboxSpec] = []
    count = len(inc.reporters) + 1
    if settings.chat is not None and count in (2, 5, 10, 25, 50, 100, 250, 1000):
        outbox.append(
            chat_to_incident(
                f"{inc.ref}: {count} reporters now (latest {one_line(sender, 120)})",
                "relay",
                settings.chat.incidents_room,
            )
        )
    answer = answer_allowed(answer_for(row, mail, settings, verdict), settings, context, now)
    our_ids: tuple[str, ...] = ()
    if answer.address is not None:
        ack = ack_mail(
            inc.ref,
            inc.title if answer.echo else NEUTRAL_TITLE.format(mailbox=row.mailbox),
            decision,
            mail,
            answer.address,
            row,
            book,
            settings,
            now,
            note,
            echo=answer.echo,
        )
        outbox.append(ack)
        our_ids = (str(ack.payload["message_id"]),)
    reporter = email_reporter(answer, sender, mail, ids)
    return Plan(
        outcome=f"joined {inc.ref} (same outage)",
        incident_id=inc.id,
        reporter=reporter,
        timeline=events,
        outbox=tuple(outbox),
        message_ids=(ids if reporter else ()) + our_ids,
    )
