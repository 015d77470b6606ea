"""What delivered ticket mirrors, Statuspage posts and security notices leave in the store,
on either store (gateway.store.dialect).

Called by gateway.store.outbox.record_effect (for PostgreSQL too) inside the outbox
completion's transaction, so an external ticket's id, a status change or a Statuspage
incident is recorded exactly once, together with the entry being marked done. (The reads
of them, which ticket and which page incident belong to an incident, are in
gateway.store.incident_reads.)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.domain import OutboxEntry, OutboxKind
from gateway.store.db import ts
from gateway.store.dialect import SQLITE, Dialect

MIRROR_KINDS = frozenset(
    {
        OutboxKind.TICKET_UPDATE,
        OutboxKind.STATUSPAGE_OPEN,
        OutboxKind.STATUSPAGE_UPDATE,
        OutboxKind.STATUSPAGE_RESOLVE,
    }
)


def record_effect(
    conn: Any, entry: OutboxEntry, result: dict[str, Any], now: datetime, dialect: Dialect = SQLITE
) -> None:
    """Record one delivered mirror entry (see MIRROR_KINDS), on either store; skipped
    deliveries change nothing."""
    iid = entry.incident_id
    if iid is None:
        raise RuntimeError("iid is set here")
    if result.get("skipped"):
        return
    p, q = entry.payload, dialect.q
    if entry.kind is OutboxKind.TICKET_UPDATE:
        if p.get("status"):
            conn.execute(
                q("UPDATE tickets SET status = ? WHERE incident_id = ?"), (p["status"], iid)
            )
        if p.get("title"):
            conn.execute(q("UPDATE tickets SET title = ? WHERE incident_id = ?"), (p["title"], iid))
    elif entry.kind is OutboxKind.STATUSPAGE_OPEN:
        conn.execute(
            dialect.insert_ignore(
                "INSERT INTO statuspage_incidents (incident_id, page_id, external_id, link,"
                " status, created_at) VALUES (?, ?, ?, ?, 'open', ?)"
            ),
            (
                iid,
                str(result.get("page_id", "")),
                str(result["external_id"]),
                result.get("link"),
                ts(now),
            ),
        )
    elif entry.kind is OutboxKind.STATUSPAGE_RESOLVE:
        conn.execute(
            q("UPDATE statuspage_incidents SET status = 'resolved' WHERE incident_id = ?"), (iid,)
        )
