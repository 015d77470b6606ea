"""The incidents, reporters and timeline tables on SQLite: applying a Plan (a new incident's
id is SQLite's rowid; the rest is gateway.store.incident_writes'), and the incident reads
of gateway.store.incident_reads, both shared with PostgreSQL, bound to SQLite's dialect.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from gateway.domain import Plan
from gateway.store.incident_reads import SQLITE_READS
from gateway.store.incident_writes import NEW_INCIDENT, apply_to, check, new_incident_row
from gateway.store.sla_index import SQLITE_INDEX as sla_index


def apply_plan(conn: sqlite3.Connection, plan: Plan, now: datetime) -> int | None:
    """Write a plan's incident, reporter, thread keys, timeline and outbox entries (an
    answer in chat may have outbox entries and no incident)."""
    check(plan)
    incident_id = plan.incident_id
    if plan.new_incident is not None:
        columns, values = NEW_INCIDENT
        cur = conn.execute(
            f"INSERT INTO incidents ({columns}) VALUES ({values})",  # noqa: S608  (constants)
            new_incident_row(plan.new_incident, now),
        )
        incident_id = int(cur.lastrowid or 0)
    return apply_to(conn, incident_id, plan, now, sla_index)


# The reads (gateway.store.incident_reads), in SQLite's dialect.
load_incident = SQLITE_READS.load_incident
list_incidents = SQLITE_READS.list_incidents
open_incidents = SQLITE_READS.open_incidents
recent_open_incidents = SQLITE_READS.recent_open_incidents
chat_root = SQLITE_READS.chat_root
ticket = SQLITE_READS.ticket
statuspage = SQLITE_READS.statuspage
