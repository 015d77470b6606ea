"""What a settled delivery says on its incident's timeline: the page sent, the ticket
opened, the reply delivered, the announcement, the status page post, the dead letter.

Pure: an attempt and the instant in; the same attempt carrying its timeline lines out. The
outbox worker words each round before the store records it; the store writes these lines
(only with the first completion of an entry) and never renders wording itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from gateway.deliver.deadletter import describe
from gateway.domain import Attempt, OutboxEntry, OutboxKind, TimelineEvent, dumps
from gateway.plan.replies import delivered_text

_CHAT_PURPOSES = ("update", "resolution", "title", "security", "holding", "escalation")


def worded(attempt: Attempt, now: datetime) -> Attempt:
    """The attempt with the timeline lines its outcome leaves (none without an incident)."""
    entry = attempt.entry
    if entry.incident_id is None:
        return attempt
    if attempt.result is not None:
        lines = _delivered(entry, attempt.result, now)
    elif attempt.dead:
        text = describe(entry, attempt.error[:500], entry.attempts + 1)
        lines = (TimelineEvent(now, "dead_lettered", "gateway", text, {"outbox_id": entry.id}),)
    else:
        return attempt
    return replace(attempt, timeline=lines)


def _delivered(
    entry: OutboxEntry, result: Mapping[str, Any], now: datetime
) -> tuple[TimelineEvent, ...]:
    p, kind = entry.payload, entry.kind
    provider = result.get("provider", "?")
    if kind is OutboxKind.PAGE_TRIGGER:
        text = (
            f"Escalation page sent via {provider}"
            if p.get("route")
            else f"Paged the on-call engineer via {provider}"
        )
        return (TimelineEvent(now, "paged", "gateway", text),)
    if kind is OutboxKind.TICKET_CREATE:
        text = f"Ticket {result.get('external_id')} opened ({result.get('backend', 'builtin')})"
        return (TimelineEvent(now, "ticketed", "gateway", text),)
    if kind is OutboxKind.MAIL_SEND:
        text = delivered_text(str(p.get("purpose", "reply")), p["rcpt_to"], result)
        return (TimelineEvent(now, "replied", "gateway", text),)
    if kind is OutboxKind.CHAT_ANNOUNCE:
        return (TimelineEvent(now, "announced", "gateway", "Announced in the incidents room"),)
    if kind is OutboxKind.CHAT_SEND and p.get("purpose") in _CHAT_PURPOSES:
        text = f"{str(p['purpose']).capitalize()} posted to {p.get('to', 'the room')} in chat"
        return (TimelineEvent(now, "replied", "gateway", text),)
    return _status_page(kind, result, now)


def _status_page(
    kind: OutboxKind, result: Mapping[str, Any], now: datetime
) -> tuple[TimelineEvent, ...]:
    if result.get("skipped"):
        return ()
    if kind is OutboxKind.STATUSPAGE_OPEN:
        text = f"Published on the status page: {result.get('link') or result['external_id']}"
        return (
            TimelineEvent(
                now, "statuspage.opened", "gateway", text, {"result": dumps(dict(result))}
            ),
        )
    if kind is OutboxKind.STATUSPAGE_UPDATE:
        return (
            TimelineEvent(now, "statuspage.updated", "gateway", "Update posted on the status page"),
        )
    if kind is OutboxKind.STATUSPAGE_RESOLVE:
        return (
            TimelineEvent(now, "statuspage.resolved", "gateway", "Resolved on the status page"),
        )
    return ()
