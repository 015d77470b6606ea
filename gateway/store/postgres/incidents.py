"""Incidents, reporters, timeline, thread keys and mirror rows on PostgreSQL: applying a
Plan, finding a message's thread, reading incidents back.

The SQL of gateway.store.incidents, gateway.store.threads and the reads of
gateway.store.mirror_db, ported: `%s` parameters, ON CONFLICT instead of INSERT OR IGNORE,
RETURNING instead of lastrowid. Runs on one connection inside the caller's transaction.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from gateway import payloads
from gateway.domain import (
    INCIDENT_CHANGES,
    Channel,
    Incident,
    PageRow,
    Plan,
    Reporter,
    ThreadKeys,
    TicketRow,
    TimelineEvent,
    dumps,
)
from gateway.store.db import ts
from gateway.store.postgres import sla_index
from gateway.store.postgres.schema import Conn
from gateway.store.rows import incident_of
from rules.types import Mailbox

_COLUMNS = (
    "id, title, priority, status, mailbox, created_at, rule, reasons, period, respond_by,"
    " next_update_by, flags, lead, comms, chat_root, merged_into"
)
_SUBJECT_TAG = re.compile(r"\[INC-(\d{1,12})\]", re.IGNORECASE)
RECENT_LIMIT = 50


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
        conn.execute(
            "INSERT INTO outbox (created_at, kind, incident_id, payload, next_attempt_at)"
            " VALUES (%s, %s, %s, %s, %s)",
            (ts(now), spec.kind, incident_id, dumps(dict(spec.payload)), ts(now)),
        )
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
        add_timeline(conn, incident_id, event)
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


def add_timeline(conn: Conn, incident_id: int, event: TimelineEvent) -> None:
    """Append one event to an incident's timeline."""
    conn.execute(
        "INSERT INTO timeline (incident_id, at, kind, actor, text, data)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (incident_id, ts(event.at), event.kind, event.actor, event.text, dumps(dict(event.data))),
    )


def load_incident(conn: Conn, incident_id: int, *, with_timeline: bool = True) -> Incident | None:
    """One incident with its reporters (and timeline), or None."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM incidents WHERE id = %s",  # noqa: S608
        (incident_id,),
    ).fetchone()
    return None if row is None else _incident(conn, row, with_timeline)


def _incident(conn: Conn, row: Sequence[Any], with_timeline: bool) -> Incident:
    iid = int(row[0])
    reporters = []
    # Reporters of incidents merged into this one follow it too.
    # Each reporter with its own keys, in one query (one round trip).
    for channel, address, room_id, thread_root, keys in conn.execute(
        "SELECT r.channel, r.address, r.room_id, r.thread_root, ARRAY(SELECT t.key"
        " FROM thread_keys t WHERE t.reporter_id = r.id AND t.direction = 'in' ORDER BY t.seq)"
        " FROM reporters r WHERE r.incident_id = %s"
        " OR r.incident_id IN (SELECT id FROM incidents WHERE merged_into = %s) ORDER BY r.id",
        (iid, iid),
    ).fetchall():
        reporters.append(Reporter(Channel(channel), address, tuple(keys), room_id, thread_root))
    timeline: list[TimelineEvent] = []
    if with_timeline:
        timeline = [
            TimelineEvent(datetime.fromisoformat(at), kind, actor, text, json.loads(data))
            for at, kind, actor, text, data in conn.execute(
                "SELECT at, kind, actor, text, data FROM timeline WHERE incident_id = %s"
                " ORDER BY id",
                (iid,),
            ).fetchall()
        ]
    pages = _one_int(
        conn.execute(
            "SELECT COUNT(*) FROM pages WHERE incident_id = %s AND action = 'trigger'", (iid,)
        ).fetchone()
    )
    return incident_of(row, tuple(reporters), tuple(timeline), pages)


def list_incidents(conn: Conn, *, open_only: bool = False) -> list[Incident]:
    """Every incident (or the unresolved ones not merged away), newest first, no timelines."""
    if open_only:
        return open_incidents(conn)
    rows = conn.execute(f"SELECT {_COLUMNS} FROM incidents ORDER BY id DESC").fetchall()  # noqa: S608
    return [_incident(conn, row, with_timeline=False) for row in rows]


_OPEN_REPORTERS = (
    "SELECT r.id, r.channel, r.address, r.room_id, r.thread_root,"
    " COALESCE(i.merged_into, i.id) AS owner"
    " FROM reporters r JOIN incidents i ON i.id = r.incident_id"
    " WHERE COALESCE(i.merged_into, i.id) IN (SELECT id FROM incidents"
    " WHERE status != 'resolved' AND merged_into IS NULL)"
)


def open_incidents(conn: Conn) -> list[Incident]:
    """The unresolved incidents not merged away, newest first, no timelines, in bulk."""
    keys: dict[int, list[str]] = {}
    for rid, key in conn.execute(
        "SELECT reporter_id, key FROM thread_keys WHERE direction = 'in'"  # noqa: S608
        " AND reporter_id IN (SELECT id FROM (" + _OPEN_REPORTERS + ") o) ORDER BY seq"
    ).fetchall():
        keys.setdefault(rid, []).append(key)
    reporters: dict[int, list[Reporter]] = {}
    for rid, channel, address, room_id, thread_root, owner in conn.execute(
        _OPEN_REPORTERS + " ORDER BY r.id"
    ).fetchall():
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


def recent_open_incidents(
    conn: Conn,
    mailbox: Mailbox,
    since: datetime,
    title_matches: Callable[[str], bool],
    limit: int = RECENT_LIMIT,
) -> list[Incident]:
    """The newest open incidents of a mailbox opened since `since` whose title passes
    `title_matches` (storm joining), bounded."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM incidents WHERE status != 'resolved' AND merged_into IS NULL"  # noqa: S608
        " AND mailbox = %s AND created_at >= %s ORDER BY id DESC LIMIT %s",
        (mailbox.value, ts(since), limit),
    ).fetchall()
    return [_incident(conn, row, with_timeline=False) for row in rows if title_matches(row[1])]


def chat_root(conn: Conn, incident_id: int) -> str | None:
    """The announcement event that roots the incident's chat thread, if posted yet."""
    row = conn.execute("SELECT chat_root FROM incidents WHERE id = %s", (incident_id,)).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def ticket(conn: Conn, incident_id: int) -> TicketRow | None:
    """The incident's ticket, once its creation is recorded."""
    row = conn.execute(
        "SELECT backend, external_id, link, status FROM tickets WHERE incident_id = %s",
        (incident_id,),
    ).fetchone()
    return None if row is None else TicketRow(*row)


def statuspage(conn: Conn, incident_id: int) -> PageRow | None:
    """The incident's Statuspage incident, if one was opened."""
    row = conn.execute(
        "SELECT external_id, link, status FROM statuspage_incidents WHERE incident_id = %s",
        (incident_id,),
    ).fetchone()
    return None if row is None else PageRow(*row)


def find_thread(conn: Conn, keys: ThreadKeys) -> Incident | None:
    """The incident a message belongs to (gateway.store.threads.find_thread, ported)."""
    if keys.incident_id is not None:
        return load_incident(conn, keys.incident_id, with_timeline=False)
    if keys.issued is not None:
        return _mail_thread(conn, keys)
    found = _keyed(conn, keys.message_ids)
    for key in keys.message_ids:
        if key in found:
            return load_incident(conn, found[key], with_timeline=False)
    for match in _SUBJECT_TAG.finditer(keys.subject):
        incident = load_incident(conn, int(match.group(1)), with_timeline=False)
        if incident and any(r.address == keys.sender for r in incident.reporters):
            return incident
    return None


def _mail_thread(conn: Conn, keys: ThreadKeys) -> Incident | None:
    for iid in keys.issued or ():
        incident = load_incident(conn, iid, with_timeline=False)
        if incident:
            return incident
    if not keys.sender_authentic:
        return None
    found = _keyed(conn, keys.message_ids, direction="in")
    candidates = [found[key] for key in keys.message_ids if key in found]
    candidates += [int(m.group(1)) for m in _SUBJECT_TAG.finditer(keys.subject)]
    for iid in candidates:
        incident = load_incident(conn, iid, with_timeline=False)
        if incident and any(r.address == keys.sender for r in incident.reporters):
            return incident
    return None


def _keyed(conn: Conn, message_ids: Sequence[str], direction: str | None = None) -> dict[str, int]:
    """The incidents of those thread keys that are stored (one query for all of them)."""
    if not message_ids:
        return {}
    rows = conn.execute(
        "SELECT key, incident_id FROM thread_keys WHERE key = ANY(%s)"
        " AND (%s::text IS NULL OR direction = %s)",
        (list(message_ids), direction, direction),
    ).fetchall()
    return {str(key): int(iid) for key, iid in rows}


def next_incident_id(conn: Conn) -> int:
    """The id the next incident will get (the caller holds the write lock)."""
    return _one_int(conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM incidents").fetchone())
