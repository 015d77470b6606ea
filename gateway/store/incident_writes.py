"""The writes to an incident that both stores make alike (gateway.store.dialect): a line on
its timeline and an entry queued in the outbox for it. Applying a whole Plan is each
store's own (gateway.store.incidents, gateway.store.postgres.incidents): they differ in how
a new incident gets its id and a reporter's id is found.

Runs on the store's connection inside the caller's transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.domain import OutboxSpec, TimelineEvent, dumps
from gateway.store.db import ts
from gateway.store.dialect import SQLITE, Dialect


def add_timeline(
    conn: Any, incident_id: int, event: TimelineEvent, dialect: Dialect = SQLITE
) -> None:
    """Append one event to an incident's timeline."""
    conn.execute(
        dialect.q(
            "INSERT INTO timeline (incident_id, at, kind, actor, text, data)"
            " VALUES (?, ?, ?, ?, ?, ?)"
        ),
        (incident_id, ts(event.at), event.kind, event.actor, event.text, dumps(dict(event.data))),
    )


def queue(
    conn: Any, incident_id: int | None, spec: OutboxSpec, now: datetime, dialect: Dialect = SQLITE
) -> None:
    """Queue one outbox entry (of the incident, if any), due at once."""
    conn.execute(
        dialect.q(
            "INSERT INTO outbox (created_at, kind, incident_id, payload, next_attempt_at)"
            " VALUES (?, ?, ?, ?, ?)"
        ),
        (ts(now), spec.kind, incident_id, dumps(dict(spec.payload)), ts(now)),
    )
