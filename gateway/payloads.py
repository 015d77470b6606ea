"""The outbox's payloads: one TypedDict per outbox kind, the contract between the planners
that queue an entry and the handlers (and the store) that read it back.

Payloads are stored as JSON, so they hold plain values only. `problems` checks a payload
against its kind's required keys before it is queued: a planner that forgot one fails while
planning (its message falls back to a human) instead of at delivery, retried until dead.
`lane_of` says which entries must go out in the order they were queued.
"""

# No `from __future__ import annotations` here: TypedDict reads NotRequired[...] from the
# evaluated annotations (as strings, every key would count as required).
from collections.abc import Mapping, Sequence
from typing import Any, NotRequired, TypedDict

from gateway.domain import OutboxKind


class PageTrigger(TypedDict):
    """Open (or re-open) a page; `route` names an escalation pager instead of the default."""

    dedup_key: str
    summary: str
    severity: str
    source: str
    details: Mapping[str, Any]
    route: NotRequired[str]


class PageFollow(TypedDict):
    """Acknowledge or resolve the page opened under `dedup_key`."""

    dedup_key: str


class TicketCreate(TypedDict):
    """Open the incident's ticket."""

    reference: str
    title: str
    priority: str
    requester: str
    body: str


class TicketComment(TypedDict):
    """An internal comment on the incident's ticket (`at`: ISO time it was planned)."""

    body: str
    at: str


class TicketUpdate(TypedDict):
    """Change the ticket's status and/or title, with an optional comment."""

    at: str
    status: NotRequired[str]
    title: NotRequired[str]
    comment: NotRequired[str]


class MailSend(TypedDict):
    """One rendered message to one recipient (`data`: the bytes, surrogate-escaped ASCII)."""

    purpose: str
    message_id: str
    mail_from: str
    rcpt_to: str
    data: str


class ChatAnnounce(TypedDict):
    """The announcement in the incidents room that roots the incident's thread."""

    room_id: str
    body: str


class ChatSend(TypedDict):
    """A chat message: in the incident's thread, in a reporter's thread, or an alert."""

    room_id: str
    body: str
    purpose: str
    incident_thread: NotRequired[bool]
    thread_root: NotRequired[str | None]
    reply_to: NotRequired[str | None]
    to: NotRequired[str]


class ChatAlarm(TypedDict):
    """A post in an alarm room (gateway.plan.alarm_rooms): the root of an incident's alarm
    thread (`root`), or a post in that thread."""

    room_id: str
    body: str
    root: bool


class StatuspageOpen(TypedDict):
    """Publish the incident on the public status page."""

    name: str
    body: str
    at: str
    component_ids: Sequence[str]


class StatuspageUpdate(TypedDict):
    """Post an update on the status page incident."""

    body: str
    at: str


class StatuspageResolve(TypedDict):
    """Resolve the status page incident."""

    body: str


class Canary(TypedDict):
    """The self-test came through (gateway.run.canary): nothing is sent anywhere."""

    nonce: str


PAYLOADS: Mapping[OutboxKind, type] = {
    OutboxKind.PAGE_TRIGGER: PageTrigger,
    OutboxKind.PAGE_ACKNOWLEDGE: PageFollow,
    OutboxKind.PAGE_RESOLVE: PageFollow,
    OutboxKind.TICKET_CREATE: TicketCreate,
    OutboxKind.TICKET_COMMENT: TicketComment,
    OutboxKind.TICKET_UPDATE: TicketUpdate,
    OutboxKind.MAIL_SEND: MailSend,
    OutboxKind.CHAT_ANNOUNCE: ChatAnnounce,
    OutboxKind.CHAT_SEND: ChatSend,
    OutboxKind.CHAT_ALARM: ChatAlarm,
    OutboxKind.STATUSPAGE_OPEN: StatuspageOpen,
    OutboxKind.STATUSPAGE_UPDATE: StatuspageUpdate,
    OutboxKind.STATUSPAGE_RESOLVE: StatuspageResolve,
    OutboxKind.CANARY: Canary,
}


def problems(kind: OutboxKind, payload: Mapping[str, Any]) -> list[str]:
    """What is wrong with a payload for its kind: the required keys it lacks (extra keys are
    allowed, so a planner may add context a handler does not read)."""
    shape = PAYLOADS[kind]
    required: frozenset[str] = shape.__required_keys__  # type: ignore[attr-defined]
    return [f"{kind} payload lacks {key!r}" for key in sorted(required - set(payload))]


# Entries that must go out in the order they were queued (a lane each): the posts in one
# chat room, and the actions on one page (an acknowledgement must not overtake its trigger).
ROOM_LANE_KINDS = frozenset({OutboxKind.CHAT_ANNOUNCE, OutboxKind.CHAT_SEND})
PAGE_LANE_KINDS = frozenset(
    {OutboxKind.PAGE_TRIGGER, OutboxKind.PAGE_ACKNOWLEDGE, OutboxKind.PAGE_RESOLVE}
)


def lane_of(kind: OutboxKind, payload: Mapping[str, Any]) -> str | None:
    """The lane an entry keeps its order in, or None for an independent entry. The stores
    spell the same rule in SQL (gateway.store.rows.lane_sql)."""
    if kind in ROOM_LANE_KINDS and payload.get("room_id") is not None:
        return f"room:{payload['room_id']}"
    if kind in PAGE_LANE_KINDS and payload.get("dedup_key") is not None:
        return f"page:{payload.get('route') or ''}:{payload['dedup_key']}"
    return None
