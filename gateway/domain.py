"""Domain values of the core: inbox rows, incidents, reporters, timeline events, outbox entries,
and the Plan the pipeline returns for the store to apply in one transaction."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from rules.types import Mailbox, Period, Priority


class Channel(StrEnum):
    """How a reporter reached us, and so how they hear back."""

    EMAIL = "email"
    MATRIX = "matrix"
    WEBHOOK = "webhook"  # monitoring alerts and PagerDuty events (gateway.alert_intake)


class Status(StrEnum):
    """Incident lifecycle."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class OutboxKind(StrEnum):
    """What an outbox entry asks an egress adapter to do."""

    PAGE_TRIGGER = "page.trigger"
    PAGE_ACKNOWLEDGE = "page.acknowledge"
    PAGE_RESOLVE = "page.resolve"
    TICKET_CREATE = "ticket.create"
    MAIL_SEND = "mail.send"
    CHAT_ANNOUNCE = "chat.announce"
    CHAT_SEND = "chat.send"
    TICKET_COMMENT = "ticket.comment"
    TICKET_UPDATE = "ticket.update"
    STATUSPAGE_OPEN = "statuspage.open"
    STATUSPAGE_UPDATE = "statuspage.update"
    STATUSPAGE_RESOLVE = "statuspage.resolve"
    CHAT_ALARM = "chat.alarm"  # alert incidents in the alarm rooms (gateway.alarm_rooms)


class OutboxState(StrEnum):
    """Pending until delivered (done) or given up on (dead)."""

    PENDING = "pending"
    DONE = "done"
    DEAD = "dead"


def incident_ref(incident_id: int) -> str:
    """The short reference people quote: INC-42."""
    return f"INC-{incident_id}"


@dataclass(frozen=True)
class InboxRow:
    """One accepted message, exactly as received, waiting to be processed."""

    id: int
    channel: Channel
    mailbox: Mailbox | None
    mail_from: str
    rcpt_to: tuple[str, ...]
    received_at: datetime
    raw: bytes


@dataclass(frozen=True)
class Reporter:
    """Someone who reported or joined an incident, and the thread to answer them in."""

    channel: Channel
    address: str
    message_ids: tuple[str, ...] = ()
    room_id: str | None = None
    thread_root: str | None = None


@dataclass(frozen=True)
class TimelineEvent:
    """One line of an incident's record."""

    at: datetime
    kind: str
    actor: str
    text: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Incident:
    """An incident as stored."""

    id: int
    ref: str
    title: str
    priority: Priority
    status: Status
    mailbox: Mailbox
    created_at: datetime
    rule: str | None
    reasons: tuple[str, ...]
    period: Period | None
    respond_by: datetime | None
    next_update_by: datetime | None
    reporters: tuple[Reporter, ...] = ()
    timeline: tuple[TimelineEvent, ...] = ()
    pages_sent: int = 0
    flags: tuple[str, ...] = ()
    lead: str | None = None
    comms: str | None = None
    chat_root: str | None = None
    merged_into: int | None = None


@dataclass(frozen=True)
class OutboxSpec:
    """An action the pipeline wants done, durably, at least once."""

    kind: OutboxKind
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class OutboxEntry:
    """An outbox row as the worker sees it."""

    id: int
    kind: OutboxKind
    incident_id: int | None
    payload: Mapping[str, Any]
    attempts: int


@dataclass(frozen=True)
class NewIncident:
    """The fields of an incident the pipeline decided to open."""

    title: str
    priority: Priority
    mailbox: Mailbox
    rule: str | None
    reasons: tuple[str, ...]
    period: Period | None
    respond_by: datetime | None
    next_update_by: datetime | None
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    """Everything one processed message changes, applied by the store in one transaction.

    Exactly one of `new_incident` / `incident_id` is set when the message concerns an
    incident; neither when it is ignored. `message_ids` are thread keys (ours and theirs)
    that later replies may reference. `changes` updates the incident's columns (only those
    in INCIDENT_CHANGES); `merge_source` makes another incident's reporters follow this one.
    """

    outcome: str
    new_incident: NewIncident | None = None
    incident_id: int | None = None
    reporter: Reporter | None = None
    reopen: bool = False
    timeline: tuple[TimelineEvent, ...] = ()
    outbox: tuple[OutboxSpec, ...] = ()
    message_ids: tuple[str, ...] = ()
    changes: Mapping[str, Any] = field(default_factory=dict)
    merge_source: int | None = None


INCIDENT_CHANGES = frozenset({"title", "priority", "status", "lead", "comms", "acknowledged_at",
                              "resolved_at", "next_update_by", "respond_by", "flags"})


@dataclass(frozen=True)
class SenderHistory:
    """What came before a message within the limit windows (gateway.plan.storm)."""

    from_sender: int  # earlier messages from the same sender
    same_content: int  # of those, with the same content
    everyone: int  # earlier messages from anyone in the last minute


# (sender, content hash, received at, sender window in s, count cap) -> history; records the
# message too. Counts stop at the cap (see gateway.plan.storm.count_cap).
HistoryLookup = Callable[[str, str, datetime, float, int], SenderHistory]


@dataclass(frozen=True)
class PlanContext:
    """What the store offers the pure pipeline while it decides, inside the transaction."""

    thread: Incident | None
    next_id: int
    find: Callable[[int], Incident | None]
    open_incidents: Callable[[], list[Incident]]
    history: HistoryLookup | None = None
    # (mailbox, since, title test) -> the newest open incidents of that mailbox opened since
    # then whose title passes the test
    recent_open: Callable[[Mailbox, datetime, Callable[[str], bool]], list[Incident]] | None = None
    # the ids of the open alert incidents, newest first (gateway.alert_db)
    alert_ids: Callable[[], list[int]] | None = None


def dumps(value: Any) -> str:
    """Compact, stable JSON for the store."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
