"""The state as the operator CLI sees it: the read port (`StateReader`) and the two operator
writes (`StateOperator`), with the values they return.

The daemon works through the Store port (gateway.ports.Store); the CLI runs beside it, on
any host with the configuration, and needs far less: read incidents, the outbox, held mail
and the instance id, and (for `outbox retry` and `held release`) two single conditional
updates. Each backend implements both Protocols on a connection of its own
(gateway.store.reader for SQLite, gateway.store.postgres.reader for PostgreSQL), opened by
gateway.store.factory from the same `[state]` table as the daemon's store. A reader never
writes and never takes a lease: on SQLite it opens the file read-only, on PostgreSQL every
transaction it begins is READ ONLY.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from gateway.domain import Incident, TimelineEvent


class StateUnavailable(Exception):
    """The state cannot be read: none yet, of another version, or the database does not
    answer. The message says which, for an operator (never a driver's exception text)."""


@dataclass(frozen=True)
class HeldRow:
    """One held message as stored."""

    inbox_id: int
    received_at: str
    mailbox: str | None
    mail_from: str
    client: str | None
    reason: str
    raw: bytes


# The columns of an outbox entry shown to operators (never its payload), in this order.
OUTBOX_COLUMNS = (
    "id",
    "kind",
    "incident_id",
    "state",
    "attempts",
    "next_attempt_at",
    "last_error",
    "created_at",
)


class StateReader(Protocol):
    """What the read commands show. Every call reads one consistent snapshot."""

    def incidents(self) -> list[Incident]:
        """Every incident, newest first, without timelines."""
        ...

    def incident(self, incident_id: int) -> Incident | None:
        """One incident with its reporters and timeline, or None."""
        ...

    def outbox(self, state: str | None = None) -> list[dict[str, Any]]:
        """Outbox entries (OUTBOX_COLUMNS), oldest first, in one state or all."""
        ...

    def held(self, limit: int = 1000) -> list[HeldRow]:
        """The messages the limits hold, oldest first (at most `limit`)."""
        ...

    def kv_get(self, key: str) -> str | None:
        """A small persisted value (the instance id the daemon made once, cursors)."""
        ...

    def close(self) -> None:
        """Let the connection go."""
        ...


class StateOperator(StateReader, Protocol):
    """The reader plus the two writes an operator may make, each one conditional update in
    one transaction, so it happens once however many operators or nodes try."""

    def retry_dead(
        self, outbox_id: int, now: datetime, note: Callable[[int, str, datetime], TimelineEvent]
    ) -> str | None:
        """Send a dead entry back for delivery (None), else its state or "unknown"."""
        ...

    def release_held(self, inbox_id: int, now: datetime) -> str | None:
        """Release a held message for processing (None), else its state or "unknown"."""
        ...
