"""Applying a Plan to the incidents, reporters, thread keys and timeline tables, and queueing
its outbox entries, written once for both stores (gateway.store.dialect); also a line on an
incident's timeline and one outbox entry, which the outbox's bookkeeping writes too.

Each store's apply_plan (gateway.store.incidents, gateway.store.postgres.incidents) checks
the plan (`check`), inserts a new incident its own way (SQLite reads back `lastrowid`;
PostgreSQL counts the id, or takes the one its caller counted) from `NEW_INCIDENT` and
`new_incident_row`, then hands over to `apply_to`. A thread key's reporter is looked up by
the statement that inserts the key, so on PostgreSQL nothing waits for a read (pipeline
mode). Runs on the store's connection inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from gateway import payloads
from gateway.domain import (
    INCIDENT_CHANGES,
    NewIncident,
    OutboxSpec,
    Plan,
    Reporter,
    TimelineEvent,
    dumps,
)
from gateway.store.db import ts
from gateway.store.dialect import SQLITE, Dialect
from gateway.store.sla_index import SlaIndex

# A new incident's columns and values (its id aside), written with `?` (Dialect.q).
NEW_INCIDENT = (
    "title, priority, status, mailbox, created_at, updated_at, rule, reasons, period,"
    " respond_by, next_update_by, flags",
    "?, ?, 'open', ?, ?, ?, ?, ?, ?, ?, ?, ?",
)
_KEY = (
    "INSERT INTO thread_keys (key, incident_id, reporter_id, direction) VALUES (?, ?,"
    " (SELECT id FROM reporters WHERE incident_id = ? AND channel = ? AND address = ?), ?)"
)


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


def check(plan: Plan) -> None:
    """Refuse a plan with an outbox entry whose payload is wrong, before anything is
    written (ValueError naming the problems)."""
    wrong = [p for spec in plan.outbox for p in payloads.problems(spec.kind, spec.payload)]
    if wrong:
        raise ValueError("; ".join(wrong))


def new_incident_row(n: NewIncident, now: datetime) -> tuple[Any, ...]:
    """The values of NEW_INCIDENT for a new incident opened at `now`."""
    return (
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
    )


def apply_to(
    conn: Any, incident_id: int | None, plan: Plan, now: datetime, index: SlaIndex
) -> int | None:
    """Queue the plan's outbox entries (of `incident_id`, if any), then write the rest of
    the plan to that incident: reopening, changes, a merge, the reporter, thread keys and
    timeline, and mark it in the SLA `index` (whose dialect this runs in) when its clocks
    may have moved. Returns `incident_id`."""
    d = index.d
    for spec in plan.outbox:
        queue(conn, incident_id, spec, now, d)
    if incident_id is None:
        return None
    if plan.reopen:
        conn.execute(
            d.q(
                "UPDATE incidents SET status = 'open', resolved_at = NULL, updated_at = ?"
                " WHERE id = ?"
            ),
            (ts(now), incident_id),
        )
    _update_incident(conn, incident_id, plan.changes, now, d)
    if plan.merge_source is not None:
        conn.execute(
            d.q("UPDATE incidents SET merged_into = ?, updated_at = ? WHERE id = ?"),
            (incident_id, ts(now), plan.merge_source),
        )
    reporter = plan.reporter
    _add_reporter(conn, incident_id, reporter, now, d)
    for key in plan.message_ids:
        conn.execute(
            d.insert_ignore(_KEY),
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
        add_timeline(conn, incident_id, event, d)
    index.touch(conn, incident_id, plan)  # its SLA items may have moved: re-plan it
    return incident_id


def _update_incident(
    conn: Any, incident_id: int, changes: Mapping[str, Any], now: datetime, d: Dialect
) -> None:
    unknown = set(changes) - INCIDENT_CHANGES
    if unknown:
        raise ValueError(f"not an incident field that can change: {sorted(unknown)}")
    if not changes:
        return
    values = [ts(v) if isinstance(v, datetime) else v for v in changes.values()]
    assignments = ", ".join(f"{name} = ?" for name in changes)  # names checked above
    conn.execute(
        d.q(f"UPDATE incidents SET {assignments}, updated_at = ? WHERE id = ?"),  # noqa: S608
        (*values, ts(now), incident_id),
    )


def _add_reporter(
    conn: Any, incident_id: int, reporter: Reporter | None, now: datetime, d: Dialect
) -> None:
    if reporter is None:
        return
    conn.execute(
        d.insert_ignore(
            "INSERT INTO reporters (incident_id, channel, address, created_at, room_id,"
            " thread_root) VALUES (?, ?, ?, ?, ?, ?)"
        ),
        (
            incident_id,
            reporter.channel,
            reporter.address,
            ts(now),
            reporter.room_id,
            reporter.thread_root,
        ),
    )
