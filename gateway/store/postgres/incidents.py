"""Incidents, reporters, timeline and thread keys on PostgreSQL: applying a Plan, and the
reads of gateway.store.incident_reads (one incident, all, the open ones, the recent ones a
storm may join, chat root, ticket, Statuspage incident, a message's thread, the next id)
bound to PostgreSQL's dialect.

Applying a Plan is gateway.store.incident_writes' (shared with SQLite) but for a new
incident's id: counted here under the write lock and read back with RETURNING, or counted
by the caller (batches in pipeline mode). Runs on one connection inside the caller's
transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from gateway.domain import Plan
from gateway.store.dialect import POSTGRES
from gateway.store.incident_reads import IncidentReads
from gateway.store.incident_writes import NEW_INCIDENT, apply_to, check, new_incident_row
from gateway.store.postgres import sla_index
from gateway.store.postgres.schema import Conn


def apply_plan(conn: Conn, plan: Plan, now: datetime, new_id: int | None = None) -> int | None:
    """Write a plan's incident, reporter, thread keys, timeline and outbox entries (the
    caller holds the write lock, so the new incident's id is the one the planner saw).
    With `new_id`, the id the caller counted for a new incident: nothing is read back, so
    in pipeline mode the writes go without waiting (a wrong id fails on the key)."""
    check(plan)
    incident_id = plan.incident_id
    if plan.new_incident is not None:
        columns, values = NEW_INCIDENT
        cur = conn.execute(
            POSTGRES.q(
                f"INSERT INTO incidents (id, {columns}) VALUES"  # noqa: S608  (constants)
                f" (COALESCE(?, (SELECT COALESCE(MAX(id), 0) + 1 FROM incidents)), {values})"
                " RETURNING id"
            ),
            (new_id, *new_incident_row(plan.new_incident, now)),
        )
        incident_id = new_id if new_id is not None else _one_int(cur.fetchone())
    return apply_to(conn, incident_id, plan, now, sla_index.INDEX)


def _one_int(row: Sequence[Any] | None) -> int:
    if row is None:
        raise RuntimeError("expected one row")
    return int(row[0])


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
