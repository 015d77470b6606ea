"""Answering a reporter by email: to which address (RFC 3834, gateway.plan.answer_to) and
within the per-address limit, who becomes the incident's email reporter, and the
acknowledgement itself with its notes (an unverified sender, a storm, a known outage)."""

from __future__ import annotations

from datetime import datetime

from gateway.domain import Channel, InboxRow, OutboxKind, OutboxSpec, PlanContext, Reporter
from gateway.parse.mail import ParsedMail
from gateway.plan.answer_to import Answer, answer_target
from gateway.plan.replies import ack_body, ack_subject, one_line, render, zone_name
from gateway.plan.settings import Settings
from gateway.plan.trust import Verdict
from rules.book import Rulebook
from rules.types import Period, TriageDecision

_DAY_NAMES = {
    "Mon": "Monday",
    "Tue": "Tuesday",
    "Wed": "Wednesday",
    "Thu": "Thursday",
    "Fri": "Friday",
    "Sat": "Saturday",
    "Sun": "Sunday",
}

NEUTRAL_TITLE = "your report to the {mailbox} address"
UNVERIFIED_NOTE = (
    "We could not confirm that this message comes from a known tenant "
    "address, so an engineer will check it before paging anyone."
)
STORM_NOTE = (
    "Others have reported the same problem and we are already working on it. "
    "You will receive our updates."
)
KNOWN_NOTE = (
    "We already know about this problem from our monitoring, and an engineer is on "
    "it. You will receive our updates."
)


def sender_of(row: InboxRow, mail: ParsedMail) -> str:
    """The email's sender: its From, else the envelope sender."""
    return mail.from_addr or row.mail_from.lower()


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


def answer_allowed(
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


def email_reporter(
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


def _with_note(body: str, note: str) -> str:
    """The body with `note` as its second paragraph (after the greeting)."""
    if not note:
        return body
    greeting, sep, rest = body.partition("\n\n")
    return f"{greeting}\n\n{note}\n\n{rest}" if sep else f"{body}\n{note}\n"


def ack_mail(
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
    """The acknowledgement email for `ref` to `to`, in the reporter's thread (`note`: a
    second paragraph, when the report was not planned as usual)."""
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
