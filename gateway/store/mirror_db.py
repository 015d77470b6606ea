"""What delivered ticket mirrors, Statuspage posts and security notices leave in the store.

Called by gateway.store.outbox inside the outbox completion's transaction, so an external ticket's
id, a status change or a Statuspage incident is recorded exactly once, together with the
entry being marked done. (The reads of them, which ticket and which page incident belong
to an incident, are in gateway.store.incident_reads.)
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from gateway.domain import OutboxEntry, OutboxKind
from gateway.store.db import ts

MIRROR_KINDS = frozenset(
    {
        OutboxKind.TICKET_UPDATE,
        OutboxKind.STATUSPAGE_OPEN,
        OutboxKind.STATUSPAGE_UPDATE,
        OutboxKind.STATUSPAGE_RESOLVE,
    }
)


def record_effect(
    conn: sqlite3.Connection, entry: OutboxEntry, result: dict[str, Any], now: datetime
) -> None:
    """Record one delivered mirror entry (see MIRROR_KINDS); skipped deliveries change
    nothing."""
    iid = entry.incident_id
    if iid is None:
        raise RuntimeError("iid is set here")
    if result.get("skipped"):
        return
    p = entry.payload
    if entry.kind is OutboxKind.TICKET_UPDATE:
        if p.get("status"):
            conn.execute("UPDATE tickets SET status = ? WHERE incident_id = ?", (p["status"], iid))
        if p.get("title"):
            conn.execute("UPDATE tickets SET title = ? WHERE incident_id = ?", (p["title"], iid))
    elif entry.kind is OutboxKind.STATUSPAGE_OPEN:
        conn.execute(
            "INSERT OR IGNORE INTO statuspage_incidents (incident_id, page_id, external_id, link,"
            " status, created_at) VALUES (?, ?, ?, ?, 'open', ?)",
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
            "UPDATE statuspage_incidents SET status = 'resolved' WHERE incident_id = ?", (iid,)
        )
