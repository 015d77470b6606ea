"""The reminders table: firing due SLA items exactly once, and reading what fired.

Synchronous SQLite on the store's connection, like gateway.store.db. `fire_due` asks the pure
planner what is due inside one transaction, records each item under its unique key
(subject, kind, due_at) and applies its Plan only when the key is new: a reminder is never
sent twice, across restarts too, and one that fell due while the daemon was down fires
once on the first round after start.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from gateway.domain import Due, Incident, Planner, Waker
from gateway.store.db import transaction, ts
from gateway.store.incidents import apply_plan, open_incidents


def fire_due(
    conn: sqlite3.Connection, plan: Planner, wake: Waker, now: datetime
) -> tuple[list[Due], datetime | None]:
    """Fire what is due in one transaction; returns what fired and when to look again."""
    fired = []
    with transaction(conn):
        for due in plan(open_incidents(conn)):
            cur = conn.execute(
                "INSERT OR IGNORE INTO reminders (subject, incident_id, kind, due_at, fired_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (due.subject, due.incident_id, due.kind, ts(due.due_at), ts(now)),
            )
            if cur.rowcount:
                apply_plan(conn, due.plan, now)
                fired.append(due)
    return fired, wake(open_incidents(conn))


def snapshot(conn: sqlite3.Connection) -> tuple[list[Incident], set[tuple[str, str, str]]]:
    """The open incidents and the keys of the items already fired (one read transaction)."""
    with read_transaction(conn):
        keys = set(conn.execute("SELECT subject, kind, due_at FROM reminders").fetchall())
        return open_incidents(conn), keys


@contextmanager
def read_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN (deferred: no write lock) … COMMIT, so both reads see the same state."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


def fired_for(conn: sqlite3.Connection, incident_id: int) -> list[tuple[str, datetime, datetime]]:
    """(kind, due_at, fired_at) of every item fired for an incident, in firing order."""
    return [
        (kind, datetime.fromisoformat(due), datetime.fromisoformat(at))
        for kind, due, at in conn.execute(
            "SELECT kind, due_at, fired_at FROM reminders WHERE incident_id = ? ORDER BY id",
            (incident_id,),
        )
    ]
