"""The pure pipeline: an accepted email, its thread and the clock in; a Plan out.

No I/O and no logging: the store applies the Plan in one transaction, the outbox delivers
what it asks for, and the reasons travel in the Plan's timeline instead of log lines. This
module decides which plan an email gets (ignored, held, joining an incident, or a new one)
and how it finds its thread; the plans themselves are made in gateway.plan.mail_join,
gateway.plan.mail_open and gateway.plan.holds, the answers in gateway.plan.mail_answer.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial

from gateway.domain import (
    Digest,
    InboxRow,
    Incident,
    NewIncident,
    OutboxKind,
    OutboxSpec,
    Plan,
    PlanContext,
    ThreadKeys,
    TimelineEvent,
)
from gateway.parse.child import report_for as report_for  # noqa: PLC0414  (re-exported)
from gateway.parse.mail import ParsedMail
from gateway.plan.alert_join import alert_for_report
from gateway.plan.holds import hold_plan as hold_plan  # noqa: PLC0414  (re-exported)
from gateway.plan.holds import limit_digest as limit_digest  # noqa: PLC0414  (re-exported)
from gateway.plan.mail_answer import answer_for as answer_for  # noqa: PLC0414  (re-exported)
from gateway.plan.mail_answer import hours_text as hours_text  # noqa: PLC0414  (re-exported)
from gateway.plan.mail_answer import sender_of
from gateway.plan.mail_join import join_alert, join_thread, storm_join
from gateway.plan.mail_open import open_incident
from gateway.plan.mail_open import title_for as title_for  # noqa: PLC0414  (re-exported)
from gateway.plan.replies import one_line
from gateway.plan.settings import AnswerLimits as AnswerLimits  # noqa: PLC0414  (re-exported)
from gateway.plan.settings import Settings as Settings  # noqa: PLC0414  (re-exported)
from gateway.plan.storm import Limits, body_hash, find_join, similar
from gateway.plan.trust import Verdict, judge_email
from rules.book import Rulebook
from rules.engine import triage
from rules.types import Mailbox, Priority, TriageDecision


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
        row, sender_of(row, mail), body_hash(mail.new_text or mail.subject), verdict, context
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
        return join_thread(row, mail, thread, settings, now)
    join = (
        None
        if context is None
        else find_join(
            _recent_open(context, row.mailbox, mail.subject, now, settings.limits),
            row.mailbox,
            sender_of(row, mail),
            mail.subject,
            now,
            settings.limits,
            authentic=verdict.authentic is not False,
            trusted=verdict.trusted,
        )
    )
    if join is not None:
        return (
            join_thread(row, mail, join.incident, settings, now)
            if join.same_reporter
            else storm_join(row, mail, join, book, settings, now, verdict, context)
        )
    alert = (
        None
        if context is None
        else alert_for_report(  # gateway.plan.alert_join
            context, f"{mail.subject}\n{mail.new_text}", verdict.trusted, book
        )
    )
    if alert is None:
        return open_incident(row, mail, decision, next_id, book, settings, now, verdict, context)
    return join_alert(row, mail, alert, book, settings, now, verdict, context)


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


def _held(
    row: InboxRow,
    mail: ParsedMail,
    settings: Settings,
    context: PlanContext | None,
    verdict: Verdict,
    digest: Digest | None,
) -> Plan | None:
    return hold_plan(row, sender_of(row, mail), digest, settings, context, verdict)


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
