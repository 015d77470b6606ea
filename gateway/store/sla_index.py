"""The SLA index: the `sla_next` table, each open incident's next due time, in the SQL
both stores speak (gateway.store.dialect).

A scheduler round reads only the incidents whose time has come (`due_ids`, a range scan
of the index), never every open incident. The time is computed by the pure planner in the
scheduler's round (gateway.store.reminders.fire_due), which alone knows the rulebook and
the settings; every other change to an incident that can move it (opened, acknowledged,
updated, resolved, reopened, merged, its priority or clocks changed) marks it "re-plan at
once" (`touch`, the marker STALE, which sorts before every time) in the same transaction
as the change. So the stored time is never later than the true one: a stale entry costs
one re-planning of that incident, never a missed promise. `replan_all` marks every open
incident (at start and when the rulebook is reloaded: support hours move closings).

Runs on the store's connection inside the caller's transaction (on PostgreSQL the caller
holds the write lock, so marks and rounds never interleave). `SQLITE_INDEX` serves the
SQLite store; gateway.store.postgres.sla_index binds the same `SlaIndex` to PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from gateway.domain import Channel, Incident, Plan, Reporter
from gateway.store.db import from_ts, ts
from gateway.store.dialect import SQLITE, Dialect
from gateway.store.rows import INCIDENT_COLUMNS, incident_of

STALE = ""  # re-plan at the next round: sorts before every timestamp

_UPSERT = (
    "INSERT INTO sla_next (incident_id, due_at) VALUES (?, ?)"
    " ON CONFLICT (incident_id) DO UPDATE SET due_at = excluded.due_at"
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


class SlaIndex:
    """The index's queries in one store's dialect (`conn`: that store's connection)."""

    def __init__(self, dialect: Dialect) -> None:
        self.d = dialect

    def touch(self, conn: Any, incident_id: int, plan: Plan) -> None:
        """Mark the plan's incident (and the one merged into it) for re-planning, in the
        caller's transaction, when the plan may move its clocks."""
        if moves_clocks(plan):
            marks = [(iid, STALE) for iid in (incident_id, plan.merge_source) if iid is not None]
            self.d.executemany(conn, _UPSERT, marks)

    def replan_all(self, conn: Any) -> int:
        """Mark every open incident for re-planning (and drop entries of closed ones);
        returns how many are marked."""
        conn.execute("DELETE FROM sla_next")
        cur = conn.execute(
            self.d.q(
                "INSERT INTO sla_next (incident_id, due_at) SELECT id, ? FROM incidents"
                " WHERE status != 'resolved' AND merged_into IS NULL"
            ),
            (STALE,),
        )
        return int(cur.rowcount)

    def due_ids(self, conn: Any, now: datetime, limit: int) -> list[int]:
        """The incidents whose next due time is `now` or earlier (stale ones first), at
        most `limit`, soonest first."""
        rows = conn.execute(
            self.d.q(
                "SELECT incident_id FROM sla_next WHERE due_at <= ?"
                " ORDER BY due_at, incident_id LIMIT ?"
            ),
            (ts(now), limit),
        ).fetchall()
        return [int(row[0]) for row in rows]

    def earliest(self, conn: Any, now: datetime) -> datetime | None:
        """The earliest next due time in the index (`now` for a stale entry; None: empty)."""
        row = conn.execute("SELECT MIN(due_at) FROM sla_next").fetchone()
        if row is None or row[0] is None:
            return None
        return now if row[0] == STALE else from_ts(row[0])

    def store_next(self, conn: Any, times: Mapping[int, datetime | None]) -> None:
        """Record each incident's next due time; None takes it out of the index."""
        for part in self.d.parts(iid for iid, at in times.items() if at is None):
            cond, args = self.d.in_ids("incident_id", part)
            conn.execute(f"DELETE FROM sla_next WHERE {cond}", args)  # noqa: S608
        kept = [(iid, ts(at)) for iid, at in times.items() if at is not None]
        self.d.executemany(conn, _UPSERT, kept)

    def schedule(self, conn: Any) -> dict[int, datetime | None]:
        """Every indexed incident's next due time (None: marked for re-planning)."""
        rows = conn.execute("SELECT incident_id, due_at FROM sla_next").fetchall()
        return {int(iid): None if at == STALE else from_ts(at) for iid, at in rows}

    def fired_keys(self, conn: Any, ids: Collection[int]) -> dict[int, set[tuple[str, datetime]]]:
        """The (kind, due_at) of every item already fired for each of the incidents."""
        out: dict[int, set[tuple[str, datetime]]] = {iid: set() for iid in ids}
        for part in self.d.parts(ids):
            cond, args = self.d.in_ids("incident_id", part)
            for iid, kind, due_at in conn.execute(
                f"SELECT incident_id, kind, due_at FROM reminders WHERE {cond}",  # noqa: S608
                args,
            ).fetchall():
                out[int(iid)].add((kind, datetime.fromisoformat(due_at)))
        return out

    def load(self, conn: Any, ids: Collection[int]) -> list[Incident]:
        """The incidents with these ids (any status), with their reporters (and those of
        the incidents merged into them), no timelines: four queries per part, in id order."""
        return [incident for part in self.d.parts(ids) for incident in self._load(conn, part)]

    def _load(self, conn: Any, ids: tuple[int, ...]) -> list[Incident]:
        by_owner, owner_args = self.d.in_ids("r.incident_id", ids)
        by_merge, merge_args = self.d.in_ids("i.merged_into", ids)
        # The reporters of each incident, and of the incidents merged into it (indexed both).
        owners = (
            "SELECT r.id, r.channel, r.address, r.room_id, r.thread_root, r.incident_id AS owner"  # noqa: S608
            " FROM reporters r JOIN incidents i ON i.id = r.incident_id"
            f" WHERE {by_owner} AND i.merged_into IS NULL"
            " UNION ALL SELECT r.id, r.channel, r.address, r.room_id, r.thread_root,"
            f" i.merged_into FROM incidents i JOIN reporters r ON r.incident_id = i.id"
            f" WHERE {by_merge}"
        )
        both = owner_args + merge_args
        keys: dict[int, list[str]] = {}
        for rid, key in conn.execute(
            "SELECT reporter_id, key FROM thread_keys WHERE direction = 'in'"  # noqa: S608
            f" AND reporter_id IN (SELECT id FROM ({owners}) o)"
            f" ORDER BY {self.d.insertion_order}",
            both,
        ).fetchall():
            keys.setdefault(rid, []).append(key)
        reporters: dict[int, list[Reporter]] = {}
        for rid, channel, address, room_id, thread_root, owner in conn.execute(
            f"SELECT * FROM ({owners}) o ORDER BY id",  # noqa: S608  (placeholders only)
            both,
        ).fetchall():
            reporters.setdefault(owner, []).append(
                Reporter(Channel(channel), address, tuple(keys.get(rid, ())), room_id, thread_root)
            )
        of_ids, args = self.d.in_ids("incident_id", ids)
        pages = dict(
            conn.execute(
                "SELECT incident_id, COUNT(*) FROM pages WHERE action = 'trigger'"  # noqa: S608
                f" AND {of_ids} GROUP BY incident_id",
                args,
            ).fetchall()
        )
        of_ids, args = self.d.in_ids("id", ids)
        rows = conn.execute(
            f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE {of_ids} ORDER BY id",  # noqa: S608
            args,
        ).fetchall()
        return [_of(row, reporters, pages) for row in rows]

    def waiting(self, conn: Any, since: datetime | None, until: datetime) -> list[Incident]:
        """The open incidents created from `since` (None: any time) to before `until`, for
        the out-of-hours digest (the partial index incidents_open_created finds them)."""
        rows = conn.execute(
            self.d.q(
                "SELECT id FROM incidents WHERE status != 'resolved' AND merged_into IS NULL"
                " AND created_at < ? AND created_at >= ?"
            ),
            (ts(until), ts(since) if since is not None else ""),
        ).fetchall()
        return self.load(conn, [int(row[0]) for row in rows])


def _of(
    row: Sequence[Any], reporters: Mapping[int, list[Reporter]], pages: Mapping[int, int]
) -> Incident:
    iid = int(row[0])
    return incident_of(row, tuple(reporters.get(iid, ())), (), int(pages.get(iid, 0)))


SQLITE_INDEX = SlaIndex(SQLITE)  # the SQLite store's (PostgreSQL's: gateway.store.postgres)
