"""The incidents, reporters and timeline tables on SQLite: applying a Plan, and the incident
reads of gateway.store.incident_reads (shared with PostgreSQL) bound to SQLite's dialect.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from gateway import payloads
from gateway.domain import (
    INCIDENT_CHANGES,
    Plan,
    Reporter,
    dumps,
)
from gateway.store.db import ts
from gateway.store.incident_reads import SQLITE_READS
from gateway.store.incident_writes import add_timeline, queue
from gateway.store.sla_index import SQLITE_INDEX as sla_index


def apply_plan(conn: sqlite3.Connection, plan: Plan, now: datetime) -> int | None:
    """Write a plan's incident, reporter, thread keys, timeline and outbox entries (an
    answer in chat may have outbox entries and no incident)."""
    incident_id = plan.incident_id
    wrong = [p for spec in plan.outbox for p in payloads.problems(spec.kind, spec.payload)]
    if wrong:
        raise ValueError("; ".join(wrong))
    if plan.new_incident is not None:
        n = plan.new_incident
        cur = conn.execute(
            "INSERT INTO incidents (title, priority, status, mailbox, created_at, updated_at, rule,"
            " reasons, period, respond_by, next_update_by, flags)"
            " VALUES (?, ?, 'open', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                n.title,
                n.priority,
                n.mailbox,
                ts(now),
                ts(now),
                n.rule,
                dumps(list(n.reasons)),
                n.period,
                n.respond_by and ts(n.respond_by),
                n.next_update_by and ts(n.next_update_by),
                dumps(list(n.flags)),
            ),
        )
        incident_id = int(cur.lastrowid or 0)
    for spec in plan.outbox:
        queue(conn, incident_id, spec, now)
    if incident_id is None:
        return None
    if plan.reopen:
        conn.execute(
            "UPDATE incidents SET status = 'open', resolved_at = NULL, updated_at = ? WHERE id = ?",
            (ts(now), incident_id),
        )
    _update_incident(conn, incident_id, plan.changes, now)
    if plan.merge_source is not None:
        conn.execute(
            "UPDATE incidents SET merged_into = ?, updated_at = ? WHERE id = ?",
            (incident_id, ts(now), plan.merge_source),
        )
    reporter_id = _add_reporter(conn, incident_id, plan.reporter, now)
    for key in plan.message_ids:
        conn.execute(
            "INSERT OR IGNORE INTO thread_keys (key, incident_id, reporter_id, direction)"
            " VALUES (?, ?, ?, ?)",
            (
                key,
                incident_id,
                reporter_id,
                "in" if plan.reporter and key in plan.reporter.message_ids else "out",
            ),
        )
    for event in plan.timeline:
        add_timeline(conn, incident_id, event)
    sla_index.touch(conn, incident_id, plan)  # its SLA items may have moved: re-plan it
    return incident_id


def _update_incident(
    conn: sqlite3.Connection, incident_id: int, changes: Mapping[str, Any], now: datetime
) -> None:
    unknown = set(changes) - INCIDENT_CHANGES
    if unknown:
        raise ValueError(f"not an incident field that can change: {sorted(unknown)}")
    if not changes:
        return
    values = [ts(v) if isinstance(v, datetime) else v for v in changes.values()]
    assignments = ", ".join(f"{name} = ?" for name in changes)  # names checked above
    conn.execute(
        f"UPDATE incidents SET {assignments}, updated_at = ? WHERE id = ?",  # noqa: S608
        (*values, ts(now), incident_id),
    )


def _add_reporter(
    conn: sqlite3.Connection, incident_id: int, reporter: Reporter | None, now: datetime
) -> int | None:
    if reporter is None:
        return None
    conn.execute(
        "INSERT OR IGNORE INTO reporters (incident_id, channel, address, created_at, room_id,"
        " thread_root) VALUES (?, ?, ?, ?, ?, ?)",
        (
            incident_id,
            reporter.channel,
            reporter.address,
            ts(now),
            reporter.room_id,
            reporter.thread_root,
        ),
    )
    (rid,) = conn.execute(
        "SELECT id FROM reporters WHERE incident_id = ? AND channel = ? AND address = ?",
        (incident_id, reporter.channel, reporter.address),
    ).fetchone()
    return int(rid)


# The reads (gateway.store.incident_reads), in SQLite's dialect.
load_incident = SQLITE_READS.load_incident
list_incidents = SQLITE_READS.list_incidents
open_incidents = SQLITE_READS.open_incidents
recent_open_incidents = SQLITE_READS.recent_open_incidents
chat_root = SQLITE_READS.chat_root
ticket = SQLITE_READS.ticket
statuspage = SQLITE_READS.statuspage
