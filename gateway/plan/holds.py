"""Holding a message that breaks the limits (gateway.plan.storm): what the limits record of
it (its digest) and the Plan that keeps it, unanswered and paging nobody, until an operator
releases it."""

from __future__ import annotations

from gateway.domain import Digest, InboxRow, OutboxSpec, Plan, PlanContext
from gateway.plan.relay import chat_reply
from gateway.plan.replies import one_line
from gateway.plan.settings import Settings
from gateway.plan.storm import count_cap, hold_reason, limit_key
from gateway.plan.trust import Verdict


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
