"""The SLA index on PostgreSQL: the `sla_next` table, each open incident's next due time.

The SQL of gateway.store.sla_index (which explains the design), ported: `%s` parameters,
`= ANY(%s)` for id lists. Runs on one connection inside the caller's transaction (the
caller holds the write lock, so marks and rounds never interleave).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from gateway.domain import Channel, Incident, Plan, Reporter
from gateway.store.db import from_ts, ts
from gateway.store.postgres.schema import Conn
from gateway.store.rows import incident_of
from gateway.store.sla_index import COLUMNS, STALE, moves_clocks


def touch(conn: Conn, incident_id: int, plan: Plan) -> None:
    """Mark the plan's incident (and the one merged into it) for re-planning, in the
    caller's transaction, when the plan may move its clocks."""
    if not moves_clocks(plan):
        return
    for iid in (incident_id, plan.merge_source):
        if iid is not None:
            conn.execute(
                "INSERT INTO sla_next (incident_id, due_at) VALUES (%s, %s)"
                " ON CONFLICT (incident_id) DO UPDATE SET due_at = excluded.due_at",
                (iid, STALE),
            )


def replan_all(conn: Conn) -> int:
    """Mark every open incident for re-planning (and drop entries of closed ones)."""
    conn.execute("DELETE FROM sla_next")
    cur = conn.execute(
        "INSERT INTO sla_next (incident_id, due_at) SELECT id, %s FROM incidents"
        " WHERE status != 'resolved' AND merged_into IS NULL",
        (STALE,),
    )
    return int(cur.rowcount)


def due_ids(conn: Conn, now: datetime, limit: int) -> list[int]:
    """The incidents whose next due time is `now` or earlier (stale ones first), at most
    `limit`, soonest first."""
    return [
        int(row[0])
        for row in conn.execute(
            "SELECT incident_id FROM sla_next WHERE due_at <= %s ORDER BY due_at, incident_id"
            " LIMIT %s",
            (ts(now), limit),
        ).fetchall()
    ]


def earliest(conn: Conn, now: datetime) -> datetime | None:
    """The earliest next due time in the index (`now` for a stale entry; None: empty)."""
    row = conn.execute("SELECT MIN(due_at) FROM sla_next").fetchone()
    if row is None or row[0] is None:
        return None
    return now if row[0] == STALE else from_ts(row[0])


def store_next(conn: Conn, times: Mapping[int, datetime | None]) -> None:
    """Record each incident's next due time; None takes it out of the index."""
    gone = [iid for iid, at in times.items() if at is None]
    if gone:
        conn.execute("DELETE FROM sla_next WHERE incident_id = ANY(%s)", (gone,))
    kept = [(iid, ts(at)) for iid, at in times.items() if at is not None]
    if kept:
        conn.cursor().executemany(
            "INSERT INTO sla_next (incident_id, due_at) VALUES (%s, %s)"
            " ON CONFLICT (incident_id) DO UPDATE SET due_at = excluded.due_at",
            kept,
        )


def schedule(conn: Conn) -> dict[int, datetime | None]:
    """Every indexed incident's next due time (None: marked for re-planning)."""
    return {
        int(iid): None if at == STALE else from_ts(at)
        for iid, at in conn.execute("SELECT incident_id, due_at FROM sla_next").fetchall()
    }


def fired_keys(conn: Conn, ids: Collection[int]) -> dict[int, set[tuple[str, datetime]]]:
    """The (kind, due_at) of every item already fired for each of the incidents."""
    out: dict[int, set[tuple[str, datetime]]] = {iid: set() for iid in ids}
    for iid, kind, due_at in conn.execute(
        "SELECT incident_id, kind, due_at FROM reminders WHERE incident_id = ANY(%s)",
        (list(ids),),
    ).fetchall():
        out[int(iid)].add((kind, datetime.fromisoformat(due_at)))
    return out


# The reporters of each incident, and of the incidents merged into it (indexed both).
_OWNERS = (
    "SELECT r.id, r.channel, r.address, r.room_id, r.thread_root, r.incident_id AS owner"
    " FROM reporters r JOIN incidents i ON i.id = r.incident_id"
    " WHERE r.incident_id = ANY(%(ids)s) AND i.merged_into IS NULL"
    " UNION ALL SELECT r.id, r.channel, r.address, r.room_id, r.thread_root, i.merged_into"
    " FROM incidents i JOIN reporters r ON r.incident_id = i.id"
    " WHERE i.merged_into = ANY(%(ids)s)"
)


def load(conn: Conn, ids: Collection[int]) -> list[Incident]:
    """The incidents with these ids (any status), with their reporters (and those of the
    incidents merged into them), no timelines: in four queries, in id order."""
    if not ids:
        return []
    args = {"ids": sorted(ids)}
    keys: dict[int, list[str]] = {}
    for rid, key in conn.execute(
        "SELECT reporter_id, key FROM thread_keys WHERE direction = 'in'"  # noqa: S608
        " AND reporter_id IN (SELECT id FROM (" + _OWNERS + ") o) ORDER BY seq",
        args,
    ).fetchall():
        keys.setdefault(rid, []).append(key)
    reporters: dict[int, list[Reporter]] = {}
    for rid, channel, address, room_id, thread_root, owner in conn.execute(
        "SELECT * FROM (" + _OWNERS + ") o ORDER BY id",  # noqa: S608  (constant text)
        args,
    ).fetchall():
        reporters.setdefault(owner, []).append(
            Reporter(Channel(channel), address, tuple(keys.get(rid, ())), room_id, thread_root)
        )
    pages = dict(
        conn.execute(
            "SELECT incident_id, COUNT(*) FROM pages WHERE action = 'trigger'"
            " AND incident_id = ANY(%(ids)s) GROUP BY incident_id",
            args,
        ).fetchall()
    )
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM incidents WHERE id = ANY(%(ids)s) ORDER BY id",  # noqa: S608
        args,
    ).fetchall()
    return [_of(row, reporters, pages) for row in rows]


def waiting(conn: Conn, since: datetime | None, until: datetime) -> list[Incident]:
    """The open incidents created from `since` (None: any time) to before `until`, for the
    out-of-hours digest (the partial index incidents_open_created finds them)."""
    rows = conn.execute(
        "SELECT id FROM incidents WHERE status != 'resolved' AND merged_into IS NULL"
        " AND created_at < %s AND created_at >= %s",
        (ts(until), ts(since) if since is not None else ""),
    ).fetchall()
    return load(conn, [int(row[0]) for row in rows])


def _of(
    row: Sequence[Any], reporters: Mapping[int, list[Reporter]], pages: Mapping[int, int]
) -> Incident:
    iid = int(row[0])
    return incident_of(row, tuple(reporters.get(iid, ())), (), int(pages.get(iid, 0)))
