"""Mail to the emergency mailbox that could not be read: it still reaches a person at once.

When a message to the emergency mailbox cannot be parsed or triaged in time (the parse
sandbox's budget ran out, the parser crashed, the bytes are not a message), or planning it
failed (a bug of ours: the worker's `rescue`, tried before the plain fallback), nobody knows
what it says, and it may be the one report that matters tonight. It becomes a P1 incident
flagged "unparseable", with the raw message kept and a ticket:

- from a trusted sender (allow-listed, not shown forged, judged from the few header fields
  read here without the full parser), it pages, like any P1 from that sender;
- from anyone else, it pages nobody on its own (otherwise anyone could page by sending
  junk) but is announced in the incidents room as awaiting an engineer's `!page`, like
  any unverified report.

No acknowledgement is sent: we cannot tell what was asked, nor whom to answer safely.
Mail to the support mailbox keeps the quiet path (`gateway.plan.pipeline.plan_unreadable`).
Pure: values in, a Plan out; the header read is bounded (the first 64 KB of the header).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from datetime import datetime
from email.utils import parseaddr

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
from gateway.plan.holds import hold_plan, limit_digest
from gateway.plan.relay import announcement, chat_to_incident, page_spec
from gateway.plan.replies import one_line
from gateway.plan.settings import Settings
from gateway.plan.trust import UNVERIFIED_FLAG, Verdict, judge_email
from rules.book import Rulebook
from rules.engine import next_update_due, respond_due
from rules.types import Mailbox, Priority, TriageDecision

UNPARSEABLE_FLAG = "unparseable"
_HEAD_LIMIT = 65536
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FROM = re.compile(rb"^from[ \t]*:([^\r\n]{0,998})", re.IGNORECASE | re.MULTILINE)


def head_of(raw: bytes) -> bytes:
    """The message's header (at most the first 64 KB), followed by an empty line."""
    start = raw[:_HEAD_LIMIT]
    end = _HEADER_END.search(start)
    return (start[: end.start()] if end else start) + b"\r\n\r\n"


def sender_of(raw: bytes, mail_from: str) -> str:
    """The From address read without the full parser (the first From line only, as the
    trust verdict sees it), else the envelope sender, else ""."""
    match = _FROM.search(head_of(raw))
    if match is not None:
        _, address = parseaddr(match.group(1).decode("ascii", "replace"))
        address = one_line(address, 254).lower()
        if "@" in address and " " not in address:
            return address
    return one_line(mail_from, 254).lower()


def judge_unreadable(raw: bytes, mail_from: str, settings: Settings) -> tuple[str, Verdict]:
    """The sender of an unreadable message and the trust verdict on it (from its header)."""
    sender = sender_of(raw, mail_from)
    return sender, judge_email(head_of(raw), sender, settings.trust)


def plan_unreadable_emergency(
    row: InboxRow,
    problem: str,
    book: Rulebook,
    settings: Settings,
    now: datetime,
    sender: str,
    verdict: Verdict,
    context: PlanContext,
) -> Plan:
    """A P1 for a person: paged when the sender is trusted, else awaiting `!page`; held
    like any mail when its sender's traffic breaks a limit (a flood of junk is no page)."""
    content = hashlib.sha256(row.raw).hexdigest()[:32]
    digest = limit_digest(row, sender, content, verdict, context)
    held = hold_plan(row, sender, digest, settings, context, verdict)
    if held is not None:
        return replace(held, digest=digest)
    next_id = context.next_id
    ref, who = incident_ref(next_id), one_line(sender or "unknown sender", 100)
    title = f"Unreadable emergency message from {who}"
    page = verdict.trusted
    why = (
        f"a message to the emergency mailbox could not be read ({problem}); "
        "a person must look at it now"
    )
    decision = TriageDecision(
        Priority.P1,
        page,
        True,
        False,
        None,
        (why,),
        book.clock.period_at(now),
        respond_due(Priority.P1, now, book),
        next_update_due(Priority.P1, now, book),
    )
    events = [
        TimelineEvent(
            now,
            "reported",
            who,
            f"Unreadable message kept as inbox #{row.id}: {problem}",
            {"inbox_id": row.id},
        ),
        TimelineEvent(now, "triaged", "gateway", f"P1: {why}", {"period": decision.period}),
    ]
    outbox: list[OutboxSpec] = []
    chat = settings.chat
    if chat is not None:
        outbox.append(
            OutboxSpec(
                OutboxKind.CHAT_ANNOUNCE,
                {
                    "room_id": chat.incidents_room,
                    "body": announcement(ref, title, decision, who, "email", book),
                },
            )
        )
    if page:
        outbox.append(
            page_spec(ref, title, decision, who, Mailbox.EMERGENCY, settings.pager_source)
        )
    else:
        ask = (
            f"Not paged: we could not read it and the sender is not verified. Read the raw "
            f"message (inbox #{row.id}) and page with !page {ref} if it is genuine."
        )
        events.append(
            TimelineEvent(now, "unverified", "gateway", ask + " " + "; ".join(verdict.reasons))
        )
        if chat is not None:
            outbox.append(chat_to_incident(f"{ref}: {ask}", "alert", chat.incidents_room))
    outbox.append(
        OutboxSpec(
            OutboxKind.TICKET_CREATE,
            {
                "reference": ref,
                "title": f"[{ref}] {title}",
                "priority": "P1",
                "requester": who,
                "body": f"Inbox message #{row.id} to the emergency mailbox could not be read "
                f"({problem}). The raw message is kept in the store.\n\nTrust: "
                + "; ".join(verdict.reasons),
            },
        )
    )
    flags = (UNPARSEABLE_FLAG,) + (() if page else (UNVERIFIED_FLAG,))
    return Plan(
        outcome=f"unreadable: {problem}; opened {ref} (P1, "
        + ("paged)" if page else "unverified sender, awaiting !page)"),
        new_incident=NewIncident(
            title=title,
            priority=Priority.P1,
            mailbox=Mailbox.EMERGENCY,
            rule=None,
            reasons=(why,),
            period=decision.period,
            respond_by=decision.respond_by,
            next_update_by=decision.next_update_by,
            flags=flags,
        ),
        timeline=tuple(events),
        outbox=tuple(outbox),
        digest=digest,
    )
