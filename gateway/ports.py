"""The small interfaces the core needs from the edges (and the Store port it needs from its
storage), and the two errors every edge speaks.

Adapters translate their library's failures (aiohttp errors, SMTP replies, nio error
values) into TransientError (try again later) or PermanentError (retrying cannot help)
at the boundary (LinkDown, a TransientError, when the peer cannot be reached at all), so
the outbox can decide what to do without knowing any library.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from gateway.domain import (
    Accepted,
    Attempt,
    ChatPost,
    Due,
    InboxRow,
    Incident,
    NewMessage,
    NextDue,
    OutboxEntry,
    PageRow,
    Plan,
    Planner,
    QueueStats,
    TicketRow,
    Work,
)


class TransientError(Exception):
    """A failure worth retrying: network trouble, 5xx, 429. `retry_after_s` is the peer's hint."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class LinkDown(TransientError):
    """The peer cannot be reached at all (connection refused, dropped or timed out, not
    logged in): it is away, not refusing. The outbox parks such entries, without counting
    an attempt, until the link is back; it never dead-letters them."""


class StoreUnavailable(TransientError):
    """The store's database does not answer (a server down or restarting, a network cut):
    worth retrying after a backoff, and never a bug to report with a traceback."""


class LinkState(StrEnum):
    """The states a component (a listener, a link to a peer) reports to health and READY."""

    STARTING = "starting"
    LISTENING = "listening"
    CONNECTED = "connected"
    BACKING_OFF = "backing_off"
    BAD_CREDENTIALS = "bad_credentials"
    NEEDS_E2EE = "needs_e2ee"
    FAILED = "failed"
    STOPPED = "stopped"
    DEGRADED = "degraded"  # up, but part of what is configured does not work (a room)


class PermanentError(Exception):
    """A failure retrying cannot fix: 400, bad credentials, a rejected recipient."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class PageRequest:
    """One PagerDuty-style page: `dedup_key` makes retries and later actions idempotent."""

    dedup_key: str
    summary: str
    severity: str  # critical | error | warning | info
    source: str
    details: Mapping[str, Any]


class Pager(Protocol):
    """Wakes somebody up. Every call is idempotent for the same dedup_key."""

    async def trigger(self, page: PageRequest) -> Mapping[str, Any]:
        """Open (or re-open) the alert; returns what the provider said, for the record."""
        ...

    async def acknowledge(self, dedup_key: str) -> Mapping[str, Any]:
        """Tell the provider someone is on it."""
        ...

    async def resolve(self, dedup_key: str) -> Mapping[str, Any]:
        """Close the alert."""
        ...


class MailSender(Protocol):
    """Delivers one fully rendered RFC 5322 message to one recipient."""

    async def send(self, message: bytes, mail_from: str, rcpt_to: str) -> Mapping[str, Any]:
        """Deliver; idempotent per Message-ID where the transport allows it."""
        ...


class ChatSender(Protocol):
    """Posts one event to a chat room. `txn_id` makes a retried send deliver exactly once."""

    async def send(self, post: ChatPost, txn_id: str) -> Mapping[str, Any]:
        """Send; returns at least {"event_id": ...}."""
        ...


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class NewTicket:
    """A ticket to open. `key` is unique to the incident in this database: the backend
    marks the ticket with it and looks for it before creating, so a create that happened
    before a crash is found instead of repeated. Nothing created before `since` is ours."""

    key: str
    title: str
    body: str
    requester: str
    priority: str  # P1..P4
    since: datetime | None = None

    def requester_email(self) -> str | None:
        """The requester as an email address a tracker will take, or None (a chat user)."""
        return self.requester if _EMAIL.match(self.requester) else None


def ref_marker(key: str) -> str:
    """The line a mirrored note carries, so it is found (not repeated) after a crash."""
    return f"[ref: {key}]"


@dataclass(frozen=True)
class TicketHandle:
    """Where a ticket lives in the external tracker."""

    external_id: str
    link: str | None


class TicketBackend(Protocol):
    """An external ticket tracker (Zendesk, Deskpro, GitHub issues). Every call is safe to
    repeat: creates reconcile by `NewTicket.key`, comments by their `key` marker."""

    name: str

    async def create(self, ticket: NewTicket) -> TicketHandle:
        """Find the ticket marked with `ticket.key`, or open it."""
        ...

    async def comment(
        self, external_id: str, body: str, key: str, since: datetime | None
    ) -> Mapping[str, Any]:
        """Add an internal comment unless one marked with `key` is already there."""
        ...

    async def update(
        self, external_id: str, *, status: str | None = None, title: str | None = None
    ) -> Mapping[str, Any]:
        """Set the status ("open" or "solved") and/or the title; repeating changes nothing."""
        ...


@dataclass(frozen=True)
class PublicIncident:
    """A status-page incident to open: public wording only (never our references)."""

    name: str
    body: str
    component_ids: tuple[str, ...]
    since: datetime | None = None


class StatusPage(Protocol):
    """A public status page (Statuspage). Every call is safe to repeat."""

    async def open(self, incident: PublicIncident) -> TicketHandle:
        """Find the unresolved page incident of that name opened since `incident.since`, or
        create it (notifying
        subscribers, with the affected components marked)."""
        ...

    async def update(
        self, external_id: str, body: str, since: datetime | None
    ) -> Mapping[str, Any]:
        """Post an update unless the same text was already posted since `since`."""
        ...

    async def resolve(self, external_id: str, body: str) -> Mapping[str, Any]:
        """Resolve the incident and mark its affected components operational."""
        ...


class KeyValue(Protocol):
    """Small persisted values: cursors, sync tokens, device ids (each set is durable)."""

    async def kv_get(self, key: str) -> str | None:
        """The value, or None if never set."""
        ...

    async def kv_set(self, key: str, value: str) -> None:
        """Persist the value durably before returning."""
        ...


class StoreClosed(RuntimeError):
    """The store is shutting down and takes no more work."""


class Store(KeyValue, Protocol):
    """The durable store, as the core uses it: the inbox, processing (thread lookup, the
    pure planner's Plan, applying it) in one transaction per batch, the outbox, the SLA
    reminders fired exactly once, and the reads the egress handlers and health need.

    Every write is atomic and durable when the call returns. Implementations: SQLite
    (gateway.store.sqlite); each must pass tests/store_contract."""

    async def open(self) -> None:
        """Connect, create the schema if needed and migrate it."""
        ...

    async def close(self) -> None:
        """Fail what is still queued with StoreClosed, finish what is under way, disconnect."""
        ...

    async def accept(self, message: NewMessage, timeout_s: float | None = None) -> Accepted:
        """Durably store one message (a re-send with the same dedup key is the same message);
        with `timeout_s`, TimeoutError if it was not committed in time (then it never is)."""
        ...

    async def pending_inbox(self, limit: int = 64, max_bytes: int | None = None) -> list[InboxRow]:
        """Accepted messages waiting to be processed, oldest first (at most `max_bytes` of
        raw content, but at least one message)."""
        ...

    async def process(self, batch: Sequence[Work], now: datetime) -> list[Plan]:
        """For each message: find its thread, ask its planner, apply the Plan and mark it
        processed; one that fails falls back alone. All or nothing on a crash."""
        ...

    async def due_outbox(
        self, now: datetime, limit: int, skip: Collection[str] = ()
    ) -> list[OutboxEntry]:
        """Pending entries due for an attempt, oldest due first; none of the `skip` kinds
        (those whose link is down)."""
        ...

    async def next_outbox_due(self, skip: Collection[str] = ()) -> datetime | None:
        """When the next pending entry (none of the `skip` kinds) is due, if any."""
        ...

    async def settle_outbox(self, attempts: Sequence[Attempt], now: datetime) -> None:
        """Record a round of attempts and their effects atomically; an entry completes once."""
        ...

    async def fire_sla(
        self, plan: Planner, next_due: NextDue, now: datetime, limit: int
    ) -> tuple[list[Due], datetime | None]:
        """For at most `limit` of the incidents whose indexed next due time is `now` or
        earlier (or that changed since they were last planned), fire each due SLA item
        exactly once (keyed by subject, kind, due_at), applying its Plan, and index their
        next due times, all in one transaction; returns what fired and the earliest next
        due time in the index. Every change to an incident that may move its clocks marks
        it for re-planning in the change's own transaction."""
        ...

    async def fire_digest(
        self, plan: Planner, since: datetime | None, until: datetime, now: datetime
    ) -> list[Due]:
        """Fire the out-of-hours digest once: `plan` gets the open incidents created from
        `since` (None: any time) to before `until`."""
        ...

    async def replan_sla(self) -> int:
        """Mark every open incident for re-planning by the next `fire_sla` (at start, and
        when the rulebook changes); returns how many."""
        ...

    async def sla_schedule(self) -> dict[int, datetime | None]:
        """Each indexed incident's next SLA due time (None: marked for re-planning)."""
        ...

    async def sla_snapshot(self) -> tuple[list[Incident], set[tuple[str, str, str]]]:
        """The open incidents (no timelines) and the keys of the SLA items already fired."""
        ...

    async def incident(self, incident_id: int) -> Incident | None:
        """One incident with reporters and timeline."""
        ...

    async def incidents(self, *, open_only: bool = False) -> list[Incident]:
        """All incidents, or the open ones not merged away (newest first, no timelines)."""
        ...

    async def chat_root(self, incident_id: int) -> str | None:
        """The chat event that roots an incident's thread, once announced."""
        ...

    async def ticket(self, incident_id: int) -> TicketRow | None:
        """The incident's recorded ticket, once created."""
        ...

    async def statuspage(self, incident_id: int) -> PageRow | None:
        """The incident's status page incident, if one was opened."""
        ...

    async def outbox_rows(self, state: str | None = None) -> list[dict[str, Any]]:
        """Outbox entries for operators (no payload bodies), by id."""
        ...

    async def queue_stats(self) -> QueueStats:
        """Inbox and outbox depth (health checks and metrics)."""
        ...

    async def prune_canaries(self, before: datetime) -> int:
        """Delete the self-test's rows processed before `before` (nothing else refers to
        them); returns how many canaries went."""
        ...
