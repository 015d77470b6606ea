"""Incidents, reporters, timeline and thread keys on PostgreSQL: applying a Plan, and the
reads of gateway.store.incident_reads (one incident, all, the open ones, the recent ones a
storm may join, chat root, ticket, Statuspage incident, a message's thread, the next id)
bound to PostgreSQL's dialect.

Applying a Plan is gateway.store.incidents.apply_plan's SQL, ported: `%s` parameters, ON
CONFLICT instead of INSERT OR IGNORE, RETURNING instead of lastrowid, and the caller may
count a new incident's id itself. Runs on one connection inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from gateway.store.dialect import POSTGRES
from gateway.store.incident_reads import IncidentReads
from gateway.store.incident_writes import add_timeline, queue
from gateway.store.postgres import sla_index
from gateway.store.postgres.schema import Conn


def apply_plan(conn: Conn, plan: Plan, now: datetime, new_id: int | None = None) -> int | None:
    """Write a plan's incident, reporter, thread keys, timeline and outbox entries (the
    caller holds the write lock, so the new incident's id is the one the planner saw).
    With `new_id`, the id the caller counted for a new incident: nothing is read back, so
    in pipeline mode the writes go without waiting (a wrong id fails on the key)."""
    incident_id = plan.incident_id
    wrong = [p for spec in plan.outbox for p in payloads.problems(spec.kind, spec.payload)]
    if wrong:
        raise ValueError("; ".join(wrong))
    if plan.new_incident is not None:
        n = plan.new_incident
        cur = conn.execute(
            "INSERT INTO incidents (id, title, priority, status, mailbox, created_at,"
            " updated_at, rule, reasons, period, respond_by, next_update_by, flags)"
            " VALUES (COALESCE(%s, (SELECT COALESCE(MAX(id), 0) + 1 FROM incidents)), %s, %s,"
            " 'open', %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (
                new_id,
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
        incident_id = new_id if new_id is not None else _one_int(cur.fetchone())
    for spec in plan.outbox:
        queue(conn, incident_id, spec, now, POSTGRES)
    if incident_id is None:
        return None
    _apply_to_incident(conn, incident_id, plan, now)
    return incident_id


def _apply_to_incident(conn: Conn, incident_id: int, plan: Plan, now: datetime) -> None:
    if plan.reopen:
        conn.execute(
            "UPDATE incidents SET status = 'open', resolved_at = NULL, updated_at = %s"
            " WHERE id = %s",
            (ts(now), incident_id),
        )
    _update_incident(conn, incident_id, plan.changes, now)
    if plan.merge_source is not None:
        conn.execute(
            "UPDATE incidents SET merged_into = %s, updated_at = %s WHERE id = %s",
            (incident_id, ts(now), plan.merge_source),
        )
    _add_reporter(conn, incident_id, plan.reporter, now)
    reporter = plan.reporter
    for key in plan.message_ids:
        # The reporter's id is looked up by the statement itself: nothing waits for it.
        conn.execute(
            "INSERT INTO thread_keys (key, incident_id, reporter_id, direction)"
            " VALUES (%s, %s, (SELECT id FROM reporters WHERE incident_id = %s"
            " AND channel = %s AND address = %s), %s) ON CONFLICT DO NOTHING",
            (
                key,
                incident_id,
                incident_id,
                None if reporter is None else reporter.channel,
                None if reporter is None else reporter.address,
                "in" if reporter and key in reporter.message_ids else "out",
            ),
        )
    for event in plan.timeline:
        add_timeline(conn, incident_id, event, POSTGRES)
    sla_index.touch(conn, incident_id, plan)  # its SLA items may have moved: re-plan it


def _one_int(row: Sequence[Any] | None) -> int:
    if row is None:
        raise RuntimeError("expected one row")
    return int(row[0])


def _update_incident(
    conn: Conn, incident_id: int, changes: Mapping[str, Any], now: datetime
) -> None:
    unknown = set(changes) - INCIDENT_CHANGES
    if unknown:
        raise ValueError(f"not an incident field that can change: {sorted(unknown)}")
    if not changes:
        return
    values = [ts(v) if isinstance(v, datetime) else v for v in changes.values()]
    assignments = ", ".join(f"{name} = %s" for name in changes)  # names checked above
    conn.execute(
        f"UPDATE incidents SET {assignments}, updated_at = %s WHERE id = %s",  # noqa: S608
        (*values, ts(now), incident_id),
    )


def _add_reporter(conn: Conn, incident_id: int, reporter: Reporter | None, now: datetime) -> None:
    if reporter is None:
        return
    conn.execute(
        "INSERT INTO reporters (incident_id, channel, address, created_at, room_id, thread_root)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (
            incident_id,
            reporter.channel,
            reporter.address,
            ts(now),
            reporter.room_id,
            reporter.thread_root,
        ),
    )


# The reads (gateway.store.incident_reads), in PostgreSQL's dialect.
_READS = IncidentReads(POSTGRES)
load_incident = _READS.load_incident
list_incidents = _READS.list_incidents
open_incidents = _READS.open_incidents
recent_open_incidents = _READS.recent_open_incidents
chat_root = _READS.chat_root
ticket = _READS.ticket
statuspage = _READS.statuspage
find_thread = _READS.find_thread
next_incident_id = _READS.next_incident_id
