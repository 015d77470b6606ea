"""The pure pipeline: an accepted email, its thread and the clock in; a Plan out.

No I/O and no logging: the store applies the Plan in one transaction, the outbox delivers
what it asks for, and the reasons travel in the Plan's timeline instead of log lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial

from gateway.domain import (
    Channel,
    Digest,
    InboxRow,
    Incident,
    NewIncident,
    OutboxKind,
    OutboxSpec,
    Plan,
    PlanContext,
    Reporter,
    Status,
    ThreadKeys,
    TimelineEvent,
    incident_ref,
)
from gateway.parse.child import report_for as report_for  # noqa: PLC0414  (re-exported)
from gateway.parse.mail import ParsedMail
from gateway.plan.alert_join import alert_for_report
from gateway.plan.answer_to import Answer, answer_target
from gateway.plan.relay import ChatSettings, announcement, chat_reply, chat_to_incident, page_spec
from gateway.plan.replies import (
    Sender,
    ack_body,
    ack_subject,
    base_subject,
    one_line,
    render,
    zone_name,
)
from gateway.plan.storm import (
    Join,
    Limits,
    body_hash,
    count_cap,
    find_join,
    hold_reason,
    limit_key,
    similar,
)
from gateway.plan.trust import UNVERIFIED_FLAG, TrustPolicy, Verdict, judge_email
from rules.book import Rulebook
from rules.engine import triage
from rules.types import Mailbox, Period, Priority, TriageDecision

_TEXT_LIMIT = 4000
_DAY_NAMES = {
    "Mon": "Monday",
    "Tue": "Tuesday",
    "Wed": "Wednesday",
    "Thu": "Thursday",
    "Fri": "Friday",
    "Sat": "Saturday",
    "Sun": "Sunday",
}


@dataclass(frozen=True)
class AnswerLimits:
    """At most `per_address` automatic answers to one address in `window_s` (the store counts)."""

    per_address: int = 10
    window_s: float = 3600.0


@dataclass(frozen=True)
class Settings:
    """What the pipeline needs to know about this deployment."""

    sender: Sender
    pager_source: str
    signature: str
    chat: ChatSettings | None = None
    trust: TrustPolicy = field(default_factory=TrustPolicy)  # empty allow-list: nobody pages
    limits: Limits = field(default_factory=Limits)
    answers: AnswerLimits = field(default_factory=AnswerLimits)


def answer_for(row: InboxRow, mail: ParsedMail, settings: Settings, verdict: Verdict) -> Answer:
    """Where this email's acknowledgement may go, and whether it may repeat the report
    (gateway.plan.answer_to: RFC 3834 §4, authenticated addresses only, never a list)."""
    return answer_target(
        author=mail.from_addr,
        reply_to=mail.reply_to,
        envelope_sender=row.mail_from,
        authentic=verdict.authentic,
        through_list=mail.through_list,
        list_addresses=mail.list_addresses,
        own_addresses=(settings.sender.address, *row.rcpt_to),
    )


def _answer_allowed(
    answer: Answer, settings: Settings, context: PlanContext | None, now: datetime
) -> Answer:
    """The answer, or none when its address already had its share of answers."""
    if answer.address is None or context is None or context.answers is None:
        return answer
    limit = settings.answers
    if context.answers(answer.address, now, limit.window_s, limit.per_address):
        return answer
    return Answer(
        None,
        False,
        f"{limit.per_address} automatic answers to "
        f"{one_line(answer.address, 120)} in the last "
        f"{limit.window_s / 60:g} minutes already",
    )


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
    *,
    verdict: Verdict | None = None,
    context: PlanContext | None = None,
) -> Plan:
    """Decide what one parsed email changes (`decision`: the triage, if already made;
    `verdict`: the sender's trust, if already judged; `context`: the store's view, for
    rate limits, loops and storms). With the store's view, the Plan carries the email's
    digest for the limits, which the store records when it applies the Plan."""
    if verdict is None:
        verdict = judge_email(row.raw, mail.from_addr, settings.trust)
    digest = limit_digest(
        row, _sender(row, mail), body_hash(mail.new_text or mail.subject), verdict, context
    )
    plan = _decide(
        row,
        mail,
        thread,
        next_id,
        book,
        settings,
        now,
        decision,
        verdict=verdict,
        context=context,
        digest=digest,
    )
    return plan if digest is None else replace(plan, digest=digest)


def _decide(
    row: InboxRow,
    mail: ParsedMail,
    thread: Incident | None,
    next_id: int,
    book: Rulebook,
    settings: Settings,
    now: datetime,
    decision: TriageDecision | None = None,
    *,
    verdict: Verdict | None = None,
    context: PlanContext | None = None,
    digest: Digest | None = None,
) -> Plan:
    if row.mailbox is None:
        raise RuntimeError("email is always accepted into a mailbox")
    if decision is None:
        decision = triage(report_for(row.mailbox, row.mail_from, mail), now, book)
    if verdict is None:
        verdict = judge_email(row.raw, mail.from_addr, settings.trust)
    held = _held(row, mail, settings, context, verdict, digest)
    if decision.ignored is not None:
        return Plan(outcome=f"ignored: {decision.ignored}")
    if held is not None:
        return held
    if thread is not None:
        return _join(row, mail, thread, settings, now)
    join = (
        None
        if context is None
        else find_join(
            _recent_open(context, row.mailbox, mail.subject, now, settings.limits),
            row.mailbox,
            _sender(row, mail),
            mail.subject,
            now,
            settings.limits,
            authentic=verdict.authentic is not False,
            trusted=verdict.trusted,
        )
    )
    if join is not None:
        return (
            _join(row, mail, join.incident, settings, now)
            if join.same_reporter
            else _storm_join(row, mail, join, book, settings, now, verdict, context)
        )
    alert = (
        None
        if context is None
        else alert_for_report(  # gateway.plan.alert_join
            context, f"{mail.subject}\n{mail.new_text}", verdict.trusted, book
        )
    )
    if alert is None:
        return _new_incident(row, mail, decision, next_id, book, settings, now, verdict, context)
    return _alert_join(row, mail, alert, book, settings, now, verdict, context)


def _alert_join(
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
    if any(r.address == _sender(row, mail) for r in alert.reporters):
        return _join(row, mail, alert, settings, now)
    return _storm_join(
        row, mail, Join(alert, False), book, settings, now, verdict, context, _KNOWN_NOTE
    )


def _recent_open(
    context: PlanContext, mailbox: Mailbox, subject: str, now: datetime, limits: Limits
) -> list[Incident]:
    # The candidates find_join picks from: only those a report with this subject could join.
    if limits.storm_window_s <= 0:  # joining is turned off
        return []
    since = now - timedelta(seconds=limits.storm_window_s)
    if context.recent_open is not None:
        return context.recent_open(mailbox, since, partial(similar, subject))
    return context.open_incidents()


def mail_thread_keys(mail: ParsedMail, settings: Settings, verdict: Verdict) -> ThreadKeys:
    """How an email may find its incident: references we issued, else (for a reporter whose
    mail is not shown to be forged) their own earlier ids or [INC-n] in the subject."""
    ids = mail.in_reply_to + mail.references[::-1]
    signer = settings.sender.signer
    return ThreadKeys(
        ids,
        mail.subject,
        mail.from_addr,
        issued=signer.issued(ids) if signer else (),
        sender_authentic=verdict.authentic is not False,
    )


def _sender(row: InboxRow, mail: ParsedMail) -> str:
    return mail.from_addr or row.mail_from.lower()


def _held(
    row: InboxRow,
    mail: ParsedMail,
    settings: Settings,
    context: PlanContext | None,
    verdict: Verdict,
    digest: Digest | None,
) -> Plan | None:
    return hold_plan(row, _sender(row, mail), digest, settings, context, verdict)


def limit_digest(
    row: InboxRow, sender: str, content: str, verdict: Verdict, context: PlanContext | None
) -> Digest | None:
    """What the limits record of this message (its bucket, content hash and time), or None
    without the store's view or for a message an operator released from hold."""
    if context is None or context.history is None or row.released:
        return None
    key = limit_key(sender, row.client, authentic=verdict.authentic, trusted=verdict.trusted)
    return Digest(key, content, row.received_at)


def hold_plan(
    row: InboxRow,
    sender: str,
    digest: Digest | None,
    settings: Settings,
    context: PlanContext | None,
    verdict: Verdict,
) -> Plan | None:
    """A Plan that holds the message when it breaks one of the limits (the caller puts the
    digest on whatever Plan it returns, so the store records it)."""
    if digest is None or context is None or context.history is None:
        return None
    limits = settings.limits
    history = context.history(
        digest.sender, digest.content, row.received_at, limits.sender_window_s, count_cap(limits)
    )
    found = hold_reason(history, settings.limits, trusted=verdict.trusted)
    if found is None:
        return None
    why, first = found
    outbox: tuple[OutboxSpec, ...] = ()
    if first and settings.chat is not None:
        via = f" via {one_line(row.client, 60)}" if row.client else ""
        outbox = (
            chat_reply(
                settings.chat.incidents_room,
                None,
                f"Holding mail from {one_line(sender, 120)}{via} ({why}). It is "
                "kept but not answered and pages nobody until released: "
                "`chatops-gateway held list`, then `chatops-gateway held release "
                f"ID` (first held: inbox #{row.id}).",
                "alert",
            ),
        )
    return Plan(outcome=f"held: {why}", outbox=outbox, held=True)


def _join(
    row: InboxRow, mail: ParsedMail, incident: Incident, settings: Settings, now: datetime
) -> Plan:
    sender = mail.from_addr or row.mail_from.lower()
    ids = (mail.message_id,) if mail.message_id else ()
    events = [
        TimelineEvent(
            now,
            "reporter.replied",
            sender,
            mail.new_text[:_TEXT_LIMIT],
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


def _new_incident(
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
    if decision.priority is None or row.mailbox is None:
        raise RuntimeError("priority and mailbox are set here")
    priority = decision.priority
    held = decision.page and not verdict.trusted
    if held:  # never pages alone: a ticket, and the incidents room is asked to confirm
        decision = replace(decision, page=False, ticket=True)
    ref = incident_ref(next_id)
    title = title_for(mail)
    sender = mail.from_addr or row.mail_from.lower()
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
                "text": (mail.new_text or mail.text)[:_TEXT_LIMIT],
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
        answer = _answer_allowed(answer, settings, context, now)
        our_ids = _acknowledge(
            ref, title, decision, mail, row, book, settings, now, answer, held, events, outbox
        )
    reporter = _reporter(answer, sender, mail, their_ids)
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
        ack = _ack(
            ref,
            title if answer.echo else _NEUTRAL_TITLE.format(mailbox=row.mailbox),
            decision,
            mail,
            answer.address,
            row,
            book,
            settings,
            now,
            _UNVERIFIED_NOTE if held else "",
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


def _reporter(
    answer: Answer, sender: str, mail: ParsedMail, their_ids: tuple[str, ...]
) -> Reporter | None:
    """Who hears about the incident by email: the address automatic answers may go to.
    An author behind a list whom nothing authenticates is nobody's to mail automatically:
    engineers see the address and can write to them themselves."""
    if answer.address is not None:
        return Reporter(Channel.EMAIL, answer.address, their_ids)
    if mail.through_list:
        return None
    return Reporter(Channel.EMAIL, sender, their_ids)


def _ticket(
    ref: str, title: str, decision: TriageDecision, sender: str, mail: ParsedMail
) -> OutboxSpec:
    body = "\n".join(
        [
            f"Reported by {sender}.",
            "",
            mail.new_text[:_TEXT_LIMIT],
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


_NEUTRAL_TITLE = "your report to the {mailbox} address"
_CONFIRM = (
    "Not paged: the sender is not verified. An engineer can page with !page {ref} "
    "after checking the report is genuine."
)
_UNVERIFIED_NOTE = (
    "We could not confirm that this message comes from a known tenant "
    "address, so an engineer will check it before paging anyone."
)
_STORM_NOTE = (
    "Others have reported the same problem and we are already working on it. "
    "You will receive our updates."
)
_KNOWN_NOTE = (
    "We already know about this problem from our monitoring, and an engineer is on "
    "it. You will receive our updates."
)


def _storm_join(
    row: InboxRow,
    mail: ParsedMail,
    join: Join,
    book: Rulebook,
    settings: Settings,
    now: datetime,
    verdict: Verdict,
    context: PlanContext | None,
    note: str = _STORM_NOTE,
) -> Plan:
    """Another reporter of an open incident: acknowledged and told the updates, no page."""
    inc, sender = join.incident, _sender(row, mail)
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
    answer = _answer_allowed(answer_for(row, mail, settings, verdict), settings, context, now)
    our_ids: tuple[str, ...] = ()
    if answer.address is not None:
        ack = _ack(
            inc.ref,
            inc.title if answer.echo else _NEUTRAL_TITLE.format(mailbox=row.mailbox),
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
    reporter = _reporter(answer, sender, mail, ids)
    return Plan(
        outcome=f"joined {inc.ref} (same outage)",
        incident_id=inc.id,
        reporter=reporter,
        timeline=events,
        outbox=tuple(outbox),
        message_ids=(ids if reporter else ()) + our_ids,
    )


def _with_note(body: str, note: str) -> str:
    """The body with `note` as its second paragraph (after the greeting)."""
    if not note:
        return body
    greeting, sep, rest = body.partition("\n\n")
    return f"{greeting}\n\n{note}\n\n{rest}" if sep else f"{body}\n{note}\n"


def _ack(
    ref: str,
    title: str,
    decision: TriageDecision,
    mail: ParsedMail,
    to: str,
    row: InboxRow,
    book: Rulebook,
    settings: Settings,
    now: datetime,
    note: str = "",
    *,
    echo: bool = True,
) -> OutboxSpec:
    if decision.priority is None:
        raise RuntimeError("priority is set here")
    level = book.priorities.get(decision.priority)
    body = ack_body(
        ref=ref,
        title=title,
        priority=decision.priority,
        priority_name=level.name,
        meaning=level.meaning,
        paged=decision.page,
        # A note means the priority is covered now (a storm join, or a page held for a check).
        in_hours=decision.period is Period.IN_HOURS or bool(note),
        respond_by=decision.respond_by,
        next_update_by=decision.next_update_by,
        tz=book.hours.timezone,
        hours_text=hours_text(book),
        signature=settings.signature,
    )
    body = _with_note(body, note)
    message_id = settings.sender.message_id(int(ref.partition("-")[2]), f"ack.{row.id}")
    refs = [*mail.references, *([mail.message_id] if mail.message_id else [])]
    subject = ack_subject(ref, mail.subject if echo else "")
    out = render(
        sender=settings.sender,
        to=to,
        subject=subject,
        body=body,
        message_id=message_id,
        in_reply_to=mail.message_id,
        references=refs,
        now=now,
    )
    return OutboxSpec(
        OutboxKind.MAIL_SEND,
        {
            "purpose": "acknowledgement",
            "message_id": out.message_id,
            "mail_from": out.mail_from,
            "rcpt_to": out.rcpt_to,
            "data": out.data.decode("ascii", "surrogateescape"),
        },
    )


def hours_text(book: Rulebook) -> str:
    """'Monday to Friday, 09:00–17:00 UK time' (or the configured days and zone)."""
    h = book.hours
    days = [d.capitalize() for d in h.working_days]
    span = (
        f"{_DAY_NAMES[days[0]]} to {_DAY_NAMES[days[-1]]}"
        if len(days) > 1
        else (_DAY_NAMES[days[0]])
    )
    zone = zone_name(h.timezone)
    return f"{span}, {h.in_hours.start:%H:%M}–{h.in_hours.end:%H:%M} {zone}"


def plan_unreadable(row: InboxRow, problem: str, now: datetime) -> Plan:
    """A message we could not parse or process is never lost: a ticket for a human."""
    sender = row.mail_from.lower() or "unknown sender"
    title = f"Unreadable message from {one_line(sender, 100)}"
    return Plan(
        outcome=f"unreadable: {problem}",
        new_incident=NewIncident(
            title=title,
            priority=Priority.P4,
            mailbox=row.mailbox or Mailbox.SUPPORT,
            rule=None,
            reasons=(f"the message could not be read ({problem}); a person must look at it",),
            period=None,
            respond_by=None,
            next_update_by=None,
            flags=("unparseable",),
        ),
        timeline=(
            TimelineEvent(
                now, "reported", sender, f"Unreadable message kept as inbox #{row.id}: {problem}"
            ),
        ),
        outbox=(
            OutboxSpec(
                OutboxKind.TICKET_CREATE,
                {
                    "reference": None,
                    "title": title,
                    "priority": "P4",
                    "requester": sender,
                    "body": f"Inbox message #{row.id} could not be read ({problem}). "
                    "The raw message is kept in the store.",
                },
            ),
        ),
    )
