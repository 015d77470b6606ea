"""Domain values of the core: inbox rows, incidents, reporters, timeline events, outbox entries,
and the Plan the pipeline returns for the store to apply in one transaction (the chat values,
ChatMessage and ChatPost, live in gateway.domain_chat and are re-exported here)."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

# The chat values, kept in their own module for size, re-exported:
from gateway.domain_chat import ChatDevice as ChatDevice  # noqa: PLC0414
from gateway.domain_chat import ChatKind as ChatKind  # noqa: PLC0414
from gateway.domain_chat import ChatMessage as ChatMessage  # noqa: PLC0414
from gateway.domain_chat import ChatPost as ChatPost  # noqa: PLC0414
from gateway.domain_chat import chat_key as chat_key  # noqa: PLC0414
from rules.types import Mailbox, Period, Priority


class Channel(StrEnum):
    """How a reporter reached us, and so how they hear back."""

    EMAIL = "email"
    # A chat room, whichever chat system (gateway.domain_chat). "matrix" is the spelling
    # inbox and reporters rows have been stored with since chat meant Matrix: a stored
    # name only, kept so that every existing row still loads.
    CHAT = "matrix"
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
    CANARY = "canary"  # the self-test came through (gateway.run.canary): no effect outside
    CHAT_ALARM = "chat.alarm"  # alert incidents in the alarm rooms (gateway.alarm_rooms)


CANARY_OUTCOME = "ignored: canary"  # a self-test's inbox row, which may be pruned when old


class Outcome(StrEnum):
    """What became of a processed message, the first word(s) of `Plan.outcome` (whose rest
    says which incident and why, for people). Anything else is a command's outcome."""

    OPENED = "opened"
    JOINED = "joined"
    HELD = "held"
    IGNORED = "ignored"
    UNREADABLE = "unreadable"
    PLANNING_FAILED = "unreadable: processing failed"
    ALREADY_PROCESSED = "already processed"
    COMMAND = "command"


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
    client: str | None = None  # the connecting client's address (SMTP), which nobody forges
    released: bool = False  # held, then released by an operator: the limits do not apply


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
    `digest` is the email's record for rate limits and loop detection, kept with the Plan.
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
    digest: Digest | None = None
    held: bool = False  # kept in the inbox (state 'held') until an operator releases it

    def kind(self) -> Outcome:
        """The outcome's kind, read from its leading words (the one place that parses them)."""
        for kind in _OUTCOME_ORDER:
            if self.outcome.startswith(kind.value):
                return kind
        return Outcome.COMMAND


# The most specific first: "unreadable: processing failed" before "unreadable".
_OUTCOME_ORDER = sorted(set(Outcome) - {Outcome.COMMAND}, key=lambda o: -len(o.value))


INCIDENT_CHANGES = frozenset(
    {
        "title",
        "priority",
        "status",
        "lead",
        "comms",
        "acknowledged_at",
        "resolved_at",
        "next_update_by",
        "respond_by",
        "flags",
    }
)


@dataclass(frozen=True)
class SenderHistory:
    """What came before a message within the limit windows (gateway.plan.storm)."""

    from_sender: int  # earlier messages from the same sender
    same_content: int  # of those, with the same content
    everyone: int  # earlier messages from anyone in the last minute


@dataclass(frozen=True)
class Digest:
    """What the limits remember of a processed email: who sent it, a hash of what it says,
    and when it was received (the store records it when it applies the Plan)."""

    sender: str
    content: str
    at: datetime


# (sender, content hash, received at, sender window in s, count cap) -> history of the
# messages recorded before this one (a read). Counts stop at the cap (see
# gateway.plan.storm.count_cap).
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
    # (address, at, window in s, limit) -> whether one more automatic answer to that address
    # fits the limit; records it when it does (gateway.store.sqlite.answer_db)
    answers: Callable[[str, datetime, float, int], bool] | None = None
    # the ids of the open alert incidents, newest first (gateway.alert_db)
    alert_ids: Callable[[], list[int]] | None = None


def dumps(value: Any) -> str:
    """Compact, stable JSON for the store."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


@dataclass(frozen=True)
class Accepted:
    """The result of accepting one message: its inbox id, and whether it was a re-send."""

    inbox_id: int
    duplicate: bool


@dataclass(frozen=True)
class NewMessage:
    """A message to accept into the inbox."""

    channel: Channel
    mailbox: Mailbox | None
    mail_from: str
    rcpt_to: tuple[str, ...]
    raw: bytes
    dedup_key: str | None
    received_at: datetime
    client: str | None = None  # the connecting client's address, when intake knows it


@dataclass(frozen=True)
class ThreadKeys:
    """What a message offers to find the incident it belongs to."""

    message_ids: tuple[str, ...]
    subject: str = ""
    sender: str = ""
    incident_id: int | None = None  # named explicitly by someone allowed to (an engineer)
    # Email: the incidents named by references we issued (gateway.plan.tokens); then only the
    # sender's own earlier ids and [INC-n] can also attach, and only when the sender is a
    # reporter not shown to be forged. None (chat): every key as stored attaches.
    issued: tuple[int, ...] | None = None
    sender_authentic: bool = True


@dataclass(frozen=True)
class Work:
    """One accepted message to process: how to find its thread, how to plan it, and the plan
    to fall back on if planning fails (so a bug never loses the message)."""

    inbox_id: int
    keys: ThreadKeys | None
    make_plan: Callable[[PlanContext], Plan]
    fallback: Callable[[str], Plan]
    # Tried before `fallback` when planning fails, with the problem and the store's view
    # (emergency mail: a P1 for a person, gateway.plan.unreadable); `fallback` if it fails too.
    rescue: Callable[[str, PlanContext], Plan] | None = None


@dataclass(frozen=True)
class Attempt:
    """How one delivery attempt went: a result (done), or an error and when to retry."""

    entry: OutboxEntry
    result: dict[str, Any] | None = None
    error: str = ""
    next_at: datetime | None = None
    dead: bool = False
    alert: OutboxSpec | None = None  # queued for engineers when the entry goes dead
    parked: bool = False  # its link was down: no attempt counted, its place in line kept
    # what the outcome says on the incident's timeline (gateway.deliver.timeline.worded),
    # recorded with the first completion (or the dead letter) only
    timeline: tuple[TimelineEvent, ...] = ()


@dataclass(frozen=True)
class QueueStats:
    """How much waits in the inbox and the outbox, for health checks and metrics."""

    inbox_pending: int
    outbox_pending: int
    outbox_oldest: datetime | None  # when the oldest pending entry was created
    outbox_retrying: dict[str, int]  # kind -> pending entries that failed at least once
    outbox_dead: int
    inbox_held: int = 0  # held by the limits, waiting for `held release`


@dataclass(frozen=True)
class TicketRow:
    """An incident's ticket as recorded."""

    backend: str
    external_id: str
    link: str | None
    status: str


@dataclass(frozen=True)
class PageRow:
    """An incident's Statuspage incident as recorded."""

    external_id: str
    link: str | None
    status: str


@dataclass(frozen=True)
class Due:
    """One reminder (or escalation, holding reply, digest) to fire, and what it changes."""

    subject: str  # the incident's reference, or "digest"
    incident_id: int | None
    kind: str
    due_at: datetime
    plan: Plan
    text: str


# The SLA planner as the store calls it inside its transaction: incidents in, what is due
# out; and, given the (kind, due_at) of the items already fired per incident id, when each
# of those incidents next falls due (None: never again), which the store keeps indexed.
Planner = Callable[[Sequence[Incident]], list[Due]]
NextDue = Callable[
    [Sequence[Incident], Mapping[int, Collection[tuple[str, datetime]]]], dict[int, datetime | None]
]
