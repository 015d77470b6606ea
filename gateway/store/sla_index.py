"""The SLA index on SQLite: the `sla_next` table, each open incident's next due time.

A scheduler round reads only the incidents whose time has come (`due_ids`, a range scan
of the index), never every open incident. The time is computed by the pure planner in the
scheduler's round (gateway.store.reminders.fire_due), which alone knows the rulebook and
the settings; every other change to an incident that can move it (opened, acknowledged,
updated, resolved, reopened, merged, its priority or clocks changed) marks it "re-plan at
once" (`touch`, the marker STALE, which sorts before every time) in the same transaction
as the change. So the stored time is never later than the true one: a stale entry costs
one re-planning of that incident, never a missed promise. `replan_all` marks every open
incident (at start and when the rulebook is reloaded: support hours move closings).

Runs on the store's connection inside the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from gateway.domain import Channel, Incident, Plan, Reporter
from gateway.store.db import from_ts, ts
from gateway.store.rows import incident_of

STALE = ""  # re-plan at the next round: sorts before every timestamp

# The columns gateway.store.rows.incident_of reads, in its order.
COLUMNS = (
    "id, title, priority, status, mailbox, created_at, rule, reasons, period, respond_by,"
    " next_update_by, flags, lead, comms, chat_root, merged_into"
)


def moves_clocks(plan: Plan) -> bool:
    """Whether applying `plan` may move its incident's SLA items (anything but a plain
    timeline entry, reply or message on an incident whose fields stay the same)."""
    return bool(
        plan.new_incident is not None
        or plan.reopen
        or plan.changes
        or plan.merge_source is not None
    )


def touch(conn: sqlite3.Connection, incident_id: int, plan: Plan) -> None:
    """Mark the plan's incident (and the one merged into it) for re-planning, in the
    caller's transaction, when the plan may move its clocks."""
    if not moves_clocks(plan):
        return
    for iid in (incident_id, plan.merge_source):
        if iid is not None:
            conn.execute(
                "INSERT INTO sla_next (incident_id, due_at) VALUES (?, ?)"
                " ON CONFLICT (incident_id) DO UPDATE SET due_at = excluded.due_at",
                (iid, STALE),
            )


def replan_all(conn: sqlite3.Connection) -> int:
    """Mark every open incident for re-planning (and drop entries of closed ones); returns
    how many are marked."""
    conn.execute("DELETE FROM sla_next")
    cur = conn.execute(
        "INSERT INTO sla_next (incident_id, due_at) SELECT id, ? FROM incidents"
        " WHERE status != 'resolved' AND merged_into IS NULL",
        (STALE,),
    )
    return int(cur.rowcount)


def due_ids(conn: sqlite3.Connection, now: datetime, limit: int) -> list[int]:
    """The incidents whose next due time is `now` or earlier (stale ones first), at most
    `limit`, soonest first."""
    return [
        int(iid)
        for (iid,) in conn.execute(
            "SELECT incident_id FROM sla_next WHERE due_at <= ? ORDER BY due_at, incident_id"
            " LIMIT ?",
            (ts(now), limit),
        )
    ]


def earliest(conn: sqlite3.Connection, now: datetime) -> datetime | None:
    """The earliest next due time in the index (`now` for a stale entry; None: empty)."""
    (first,) = conn.execute("SELECT MIN(due_at) FROM sla_next").fetchone()
    if first is None:
        return None
    return now if first == STALE else from_ts(first)


def store_next(conn: sqlite3.Connection, times: Mapping[int, datetime | None]) -> None:
    """Record each incident's next due time; None takes it out of the index."""
    conn.executemany(
        "DELETE FROM sla_next WHERE incident_id = ?",
        [(iid,) for iid, at in times.items() if at is None],
    )
    conn.executemany(
        "INSERT INTO sla_next (incident_id, due_at) VALUES (?, ?)"
        " ON CONFLICT (incident_id) DO UPDATE SET due_at = excluded.due_at",
        [(iid, ts(at)) for iid, at in times.items() if at is not None],
    )


def schedule(conn: sqlite3.Connection) -> dict[int, datetime | None]:
    """Every indexed incident's next due time (None: marked for re-planning)."""
    return {
        int(iid): None if at == STALE else from_ts(at)
        for iid, at in conn.execute("SELECT incident_id, due_at FROM sla_next")
    }


def fired_keys(
    conn: sqlite3.Connection, ids: Collection[int]
) -> dict[int, set[tuple[str, datetime]]]:
    """The (kind, due_at) of every item already fired for each of the incidents."""
    out: dict[int, set[tuple[str, datetime]]] = {iid: set() for iid in ids}
    for part in _parts(ids):
        for iid, kind, due_at in conn.execute(
            "SELECT incident_id, kind, due_at FROM reminders"  # noqa: S608  (placeholders)
            f" WHERE incident_id IN ({_marks(part)})",
            part,
        ):
            out[int(iid)].add((kind, datetime.fromisoformat(due_at)))
    return out


def load(conn: sqlite3.Connection, ids: Collection[int]) -> list[Incident]:
    """The incidents with these ids (any status), with their reporters (and those of the
    incidents merged into them), no timelines: four queries per 500 ids, in id order."""
    return [incident for part in _parts(ids) for incident in _load(conn, part)]


def _load(conn: sqlite3.Connection, args: tuple[int, ...]) -> list[Incident]:
    marks = _marks(args)
    # The reporters of each incident, and of the incidents merged into it (indexed both).
    owners = (
        "SELECT r.id, r.channel, r.address, r.room_id, r.thread_root, r.incident_id AS owner"  # noqa: S608
        " FROM reporters r JOIN incidents i ON i.id = r.incident_id"
        f" WHERE r.incident_id IN ({marks}) AND i.merged_into IS NULL"
        " UNION ALL SELECT r.id, r.channel, r.address, r.room_id, r.thread_root,"
        " i.merged_into FROM incidents i JOIN reporters r ON r.incident_id = i.id"
        f" WHERE i.merged_into IN ({marks})"
    )
    keys: dict[int, list[str]] = {}
    for rid, key in conn.execute(
        "SELECT reporter_id, key FROM thread_keys WHERE direction = 'in'"  # noqa: S608
        f" AND reporter_id IN (SELECT id FROM ({owners})) ORDER BY rowid",
        args * 2,
    ):
        keys.setdefault(rid, []).append(key)
    reporters: dict[int, list[Reporter]] = {}
    for rid, channel, address, room_id, thread_root, owner in conn.execute(
        "SELECT * FROM (" + owners + ") ORDER BY id",  # noqa: S608  (placeholders only)
        args * 2,
    ):
        reporters.setdefault(owner, []).append(
            Reporter(Channel(channel), address, tuple(keys.get(rid, ())), room_id, thread_root)
        )
    pages = dict(
        conn.execute(
            "SELECT incident_id, COUNT(*) FROM pages WHERE action = 'trigger'"  # noqa: S608
            f" AND incident_id IN ({marks}) GROUP BY incident_id",
            args,
        ).fetchall()
    )
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM incidents WHERE id IN ({marks}) ORDER BY id",  # noqa: S608
        args,
    ).fetchall()
    return [_of(row, reporters, pages) for row in rows]


def waiting(conn: sqlite3.Connection, since: datetime | None, until: datetime) -> list[Incident]:
    """The open incidents created from `since` (None: any time) to before `until`, for the
    out-of-hours digest (the partial index incidents_open_created finds them)."""
    rows = conn.execute(
        "SELECT id FROM incidents WHERE status != 'resolved' AND merged_into IS NULL"
        " AND created_at < ? AND created_at >= ?",
        (ts(until), ts(since) if since is not None else ""),
    ).fetchall()
    return load(conn, [int(iid) for (iid,) in rows])


def _of(
    row: Sequence[Any], reporters: Mapping[int, list[Reporter]], pages: Mapping[int, int]
) -> Incident:
    iid = int(row[0])
    return incident_of(row, tuple(reporters.get(iid, ())), (), int(pages.get(iid, 0)))


_PART = 500  # ids per query (well under SQLite's limit on bound parameters)


def _parts(ids: Collection[int]) -> list[tuple[int, ...]]:
    ordered = sorted(ids)
    return [tuple(ordered[at : at + _PART]) for at in range(0, len(ordered), _PART)]


def _marks(ids: Collection[int]) -> str:
    return ", ".join("?" * len(ids))
