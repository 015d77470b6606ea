"""SLA items fired exactly once, and small persisted values, on PostgreSQL.

The SQL of gateway.store.reminders and the kv functions of gateway.store.db, ported.
Firing takes the write lock (as processing does), so two nodes never plan the same round
twice; the unique key (subject, kind, due_at) keeps each item to one firing regardless.
"""

from __future__ import annotations

from datetime import datetime

from gateway.domain import Due, Incident, NextDue, Planner
from gateway.store.db import ts
from gateway.store.postgres import sla_index
from gateway.store.postgres.incidents import apply_plan, open_incidents
from gateway.store.postgres.schema import WRITE_LOCK, Conn
from gateway.store.reminders import STUCK_RETRY, after, by_incident, failure


def fire_due(
    conn: Conn, plan: Planner, next_due: NextDue, now: datetime, limit: int
) -> tuple[list[Due], datetime | None]:
    """Fire what is due for (at most `limit` of) the incidents due at `now`, and store
    their next due times, in one transaction (gateway.store.reminders.fire_due)."""
    first = sla_index.earliest(conn, now)
    if first is None or first > now:
        return [], first
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        ids = sla_index.due_ids(conn, now, limit)
        incidents = sla_index.load(conn, ids)
        fired, failed = [], set()
        for incident, items in by_incident(plan, incidents):
            try:
                with conn.transaction():  # a savepoint
                    fired += _fire(conn, items(), now)
            except Exception as exc:  # a bug with this incident: the others still fire
                failed.add(failure(incident, exc))
        if any(d.plan.changes for d in fired):  # a holding reply moved a next-update time
            incidents = sla_index.load(conn, ids)
        planned = next_due(
            [i for i in incidents if i.id not in failed], sla_index.fired_keys(conn, ids)
        )
        times = {iid: after(planned.get(iid), now) for iid in ids}
        sla_index.store_next(conn, times | {iid: now + STUCK_RETRY for iid in failed})
        return fired, sla_index.earliest(conn, now)


def fire_digest(
    conn: Conn, plan: Planner, since: datetime | None, until: datetime, now: datetime
) -> list[Due]:
    """Fire the out-of-hours digest once (gateway.store.reminders.fire_digest)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        return _fire(conn, plan(sla_index.waiting(conn, since, until)), now)


def replan_all(conn: Conn) -> int:
    """Mark every open incident for re-planning at the next round; returns how many."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        return sla_index.replan_all(conn)


def _fire(conn: Conn, due: list[Due], now: datetime) -> list[Due]:
    fired = []
    for item in due:
        cur = conn.execute(
            "INSERT INTO reminders (subject, incident_id, kind, due_at, fired_at)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (item.subject, item.incident_id, item.kind, ts(item.due_at), ts(now)),
        )
        if cur.rowcount:
            apply_plan(conn, item.plan, now)
            fired.append(item)
    return fired


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
