"""The incidents, reporters and timeline tables: applying a Plan, and reading incidents back
(one, all, the open ones in bulk, the recent ones a storm may join).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from gateway import payloads
from gateway.domain import (
    INCIDENT_CHANGES,
    Channel,
    Incident,
    Plan,
    Reporter,
    TimelineEvent,
    dumps,
)
from gateway.store.db import ts
from gateway.store.rows import incident_of
from gateway.store.sla_index import SQLITE_INDEX as sla_index
from rules.types import Mailbox

_COLUMNS = (
    "id, title, priority, status, mailbox, created_at, rule, reasons, period, respond_by,"
    " next_update_by, flags, lead, comms, chat_root, merged_into"
)


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
        conn.execute(
            "INSERT INTO outbox (created_at, kind, incident_id, payload, next_attempt_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (ts(now), spec.kind, incident_id, dumps(dict(spec.payload)), ts(now)),
        )
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


def add_timeline(conn: sqlite3.Connection, incident_id: int, event: TimelineEvent) -> None:
    """Append one event to an incident's timeline."""
    conn.execute(
        "INSERT INTO timeline (incident_id, at, kind, actor, text, data) VALUES (?, ?, ?, ?, ?, ?)",
        (incident_id, ts(event.at), event.kind, event.actor, event.text, dumps(dict(event.data))),
    )


def load_incident(
    conn: sqlite3.Connection, incident_id: int, *, with_timeline: bool = True
) -> Incident | None:
    """One incident with its reporters (and timeline), or None."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM incidents WHERE id = ?",  # noqa: S608  (constant columns)
        (incident_id,),
    ).fetchone()
    if row is None:
        return None
    return _incident(conn, row, with_timeline)


def _incident(conn: sqlite3.Connection, row: Sequence[Any], with_timeline: bool) -> Incident:
    iid = int(row[0])
    reporters = []
    # Reporters of incidents merged into this one follow it too.
    for rid, channel, address, room_id, thread_root in conn.execute(
        "SELECT id, channel, address, room_id, thread_root FROM reporters WHERE incident_id = ?"
        " OR incident_id IN (SELECT id FROM incidents WHERE merged_into = ?) ORDER BY id",
        (iid, iid),
    ):
        keys = tuple(
            k
            for (k,) in conn.execute(
                "SELECT key FROM thread_keys WHERE reporter_id = ? AND direction = 'in'"
                " ORDER BY rowid",
                (rid,),
            )
        )
        reporters.append(Reporter(Channel(channel), address, keys, room_id, thread_root))
    timeline: list[TimelineEvent] = []
    if with_timeline:
        timeline = [
            TimelineEvent(datetime.fromisoformat(at), kind, actor, text, json.loads(data))
            for at, kind, actor, text, data in conn.execute(
                "SELECT at, kind, actor, text, data FROM timeline WHERE incident_id = ?"
                " ORDER BY id",
                (iid,),
            )
        ]
    (pages,) = conn.execute(
        "SELECT COUNT(*) FROM pages WHERE incident_id = ? AND action = 'trigger'", (iid,)
    ).fetchone()
    return incident_of(row, tuple(reporters), tuple(timeline), int(pages))


def list_incidents(conn: sqlite3.Connection, *, open_only: bool = False) -> list[Incident]:
    """Every incident (or the unresolved ones not merged away), newest first, no timelines."""
    if open_only:
        return open_incidents(conn)
    rows = conn.execute(f"SELECT {_COLUMNS} FROM incidents ORDER BY id DESC").fetchall()  # noqa: S608
    return [_incident(conn, row, with_timeline=False) for row in rows]


# Reporters of open incidents: a reporter follows its incident, or the one it was merged into.
_OPEN_REPORTERS = (
    "SELECT r.id, r.channel, r.address, r.room_id, r.thread_root,"
    " COALESCE(i.merged_into, i.id) AS owner"
    " FROM reporters r JOIN incidents i ON i.id = r.incident_id"
    " WHERE COALESCE(i.merged_into, i.id) IN (SELECT id FROM incidents"
    " WHERE status != 'resolved' AND merged_into IS NULL)"
)


def open_incidents(conn: sqlite3.Connection) -> list[Incident]:
    """The unresolved incidents not merged away, newest first, no timelines: in four queries
    instead of three per incident (the SLA scheduler reads every open incident each round)."""
    keys: dict[int, list[str]] = {}
    for rid, key in conn.execute(
        "SELECT reporter_id, key FROM thread_keys WHERE direction = 'in'"  # noqa: S608
        " AND reporter_id IN (SELECT id FROM (" + _OPEN_REPORTERS + ")) ORDER BY rowid"
    ):
        keys.setdefault(rid, []).append(key)
    reporters: dict[int, list[Reporter]] = {}
    for rid, channel, address, room_id, thread_root, owner in conn.execute(
        _OPEN_REPORTERS + " ORDER BY r.id"
    ):
        reporters.setdefault(owner, []).append(
            Reporter(Channel(channel), address, tuple(keys.get(rid, ())), room_id, thread_root)
        )
    pages = dict(
        conn.execute(
            "SELECT incident_id, COUNT(*) FROM pages WHERE action = 'trigger' GROUP BY incident_id"
        ).fetchall()
    )
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM incidents"  # noqa: S608  (constant columns)
        " WHERE status != 'resolved' AND merged_into IS NULL ORDER BY id DESC"
    ).fetchall()
    return [
        incident_of(row, tuple(reporters.get(row[0], ())), (), int(pages.get(row[0], 0)))
        for row in rows
    ]


RECENT_LIMIT = 50  # a storm joins one incident, so the one it joins is among the newest


def recent_open_incidents(
    conn: sqlite3.Connection,
    mailbox: Mailbox,
    since: datetime,
    title_matches: Callable[[str], bool],
    limit: int = RECENT_LIMIT,
) -> list[Incident]:
    """The newest open incidents of a mailbox opened since `since` whose title passes
    `title_matches` (for storm joining): bounded, and only those are read in full, so a
    storm of distinct reports does not make each message read every other."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM incidents WHERE status != 'resolved' AND merged_into IS NULL"  # noqa: S608
        " AND mailbox = ? AND created_at >= ? ORDER BY id DESC LIMIT ?",
        (mailbox.value, ts(since), limit),
    ).fetchall()
    return [_incident(conn, row, with_timeline=False) for row in rows if title_matches(row[1])]


def chat_root(conn: sqlite3.Connection, incident_id: int) -> str | None:
    """The announcement event that roots the incident's chat thread, if posted yet."""
    row = conn.execute("SELECT chat_root FROM incidents WHERE id = ?", (incident_id,)).fetchone()
    return None if row is None or row[0] is None else str(row[0])
