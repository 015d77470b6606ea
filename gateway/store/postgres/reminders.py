"""SLA items fired exactly once, and small persisted values, on PostgreSQL.

The SQL of gateway.store.reminders and the kv functions of gateway.store.db, ported.
Firing takes the write lock (as processing does), so two nodes never plan the same round
twice; the unique key (subject, kind, due_at) keeps each item to one firing regardless.
"""

from __future__ import annotations

from datetime import datetime

from gateway.domain import Due, Incident, Planner, Waker
from gateway.store.db import ts
from gateway.store.postgres.incidents import apply_plan, open_incidents
from gateway.store.postgres.schema import WRITE_LOCK, Conn


def fire_due(
    conn: Conn, plan: Planner, wake: Waker, now: datetime
) -> tuple[list[Due], datetime | None]:
    """Fire what is due in one transaction; returns what fired and when to look again."""
    fired = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        for due in plan(open_incidents(conn)):
            cur = conn.execute(
                "INSERT INTO reminders (subject, incident_id, kind, due_at, fired_at)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (due.subject, due.incident_id, due.kind, ts(due.due_at), ts(now)),
            )
            if cur.rowcount:
                apply_plan(conn, due.plan, now)
                fired.append(due)
        return fired, wake(open_incidents(conn))


def snapshot(conn: Conn) -> tuple[list[Incident], set[tuple[str, str, str]]]:
    """The open incidents and the keys of the items already fired, from one snapshot."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        keys = {
            (str(s), str(k), str(d))
            for s, k, d in conn.execute("SELECT subject, kind, due_at FROM reminders").fetchall()
        }
        return open_incidents(conn), keys


def kv_get(conn: Conn, key: str) -> str | None:
    """A small persisted value (sync tokens, device ids, cursors)."""
    row = conn.execute("SELECT value FROM kv WHERE key = %s", (key,)).fetchone()
    return None if row is None else str(row[0])


def kv_set(conn: Conn, key: str, value: str) -> None:
    """Persist a small value (committed before returning)."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO kv (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE"
            " SET value = excluded.value",
            (key, value),
        )
