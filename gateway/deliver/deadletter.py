"""The dead-letter state: what happens when the outbox gives up on an entry, and how an
operator sends it back.

An entry is given up on after `max_attempts` failures, or at once on a permanent error
(a 400 from PagerDuty, a 5xx from the mail relay). Giving up is recorded in the same
transaction as the failure: the entry's state becomes `dead`, its incident's timeline
says so, and — when an incidents room is configured — an alert for engineers is queued
as a chat message. The alert is an outbox entry like any other; if it dies in turn it is
only logged, so a broken homeserver never makes alerts about alerts.

`chatops-gateway outbox retry ID` moves a dead entry back to pending with a fresh attempt
count; the running daemon finds it at its next poll of the outbox.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from gateway.domain import OutboxEntry, OutboxKind, OutboxSpec, TimelineEvent, incident_ref

ALERT_PURPOSE = "dead_letter"
AlertFor = Callable[[OutboxEntry, str, int], OutboxSpec | None]

_WHAT = {
    OutboxKind.PAGE_TRIGGER: "the page",
    OutboxKind.PAGE_ACKNOWLEDGE: "acknowledging the page",
    OutboxKind.PAGE_RESOLVE: "resolving the page",
    OutboxKind.TICKET_CREATE: "the ticket",
    OutboxKind.MAIL_SEND: "an email",
    OutboxKind.CHAT_ANNOUNCE: "the announcement in chat",
    OutboxKind.CHAT_SEND: "a chat message",
}


def describe(entry: OutboxEntry, reason: str, attempts: int) -> str:
    """One line for the timeline and the alert: what was given up on, and why."""
    tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
    return (
        f"Gave up on {_WHAT.get(entry.kind, entry.kind)} (outbox {entry.id}) after "
        f"{tries}: {reason}"
    )


def retry_note(outbox_id: int, kind: str, now: datetime) -> TimelineEvent:
    """The timeline line of a dead entry an operator sent back for delivery."""
    return TimelineEvent(
        now,
        "retry_requested",
        "operator",
        f"Outbox {outbox_id} ({kind}) sent back for delivery",
        {"outbox_id": outbox_id},
    )


def is_alert(entry: OutboxEntry) -> bool:
    """A dead-letter alert itself (never alerted about: no alerts about alerts)."""
    return entry.payload.get("purpose") == ALERT_PURPOSE


def alert_in(incidents_room: str | None) -> AlertFor:
    """Makes the alert for a dead entry: a notice in the incidents room, at the top level (a
    thread may not exist when the announcement is what died). None without a room."""

    def alert(entry: OutboxEntry, reason: str, attempts: int) -> OutboxSpec | None:
        if incidents_room is None or is_alert(entry):
            return None
        about = f"{incident_ref(entry.incident_id)}: " if entry.incident_id else ""
        body = (
            f"⚠ {about}{describe(entry, reason, attempts)}. After fixing the cause, "
            f"`chatops-gateway outbox retry {entry.id}` tries again."
        )
        return OutboxSpec(
            OutboxKind.CHAT_SEND,
            {"room_id": incidents_room, "body": body, "purpose": ALERT_PURPOSE},
        )

    return alert
