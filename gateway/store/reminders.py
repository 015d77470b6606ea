"""The reminders table: firing due SLA items exactly once, and reading what fired.

Synchronous SQLite on the store's connection, like gateway.store.db. `fire_due` takes the
incidents the SLA index (gateway.store.sla_index) says are due, asks the pure planner what
is due for them inside one transaction, records each item under its unique key
(subject, kind, due_at) and applies its Plan only when the key is new: a reminder is never
sent twice, across restarts too, and one that fell due while the daemon was down fires
once on the first round after start. In the same transaction it stores each of those
incidents' next due time. `fire_digest` does the same for the out-of-hours digest, which
belongs to no incident.

`Firing` is written once for both stores (gateway.store.dialect): each binds it to its own
SLA index, apply_plan and write transaction (gateway.store.postgres.reminders).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import structlog

from gateway.domain import Due, Incident, NextDue, Plan, Planner
from gateway.store.db import transaction, ts
from gateway.store.dialect import SQLITE, Dialect
from gateway.store.incidents import apply_plan, open_incidents
from gateway.store.sla_index import SQLITE_INDEX, SlaIndex

log = structlog.get_logger("gateway.store.reminders")

# An incident whose items could not be planned or applied (a bug) is tried again this much
# later, and so would be one whose next time were not after the round's (never: the planner
# fires what is due before it times what is next), instead of at once, round after round.
STUCK_RETRY = timedelta(minutes=1)


class Firing:
    """Firing SLA items on one store: its dialect, its SLA index, its apply_plan and its
    write transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL: one holding the write lock,
    so two nodes never plan the same round twice)."""

    def __init__(
        self,
        dialect: Dialect,
        index: SlaIndex,
        apply: Callable[[Any, Plan, datetime], object],
        write: Callable[[Any], AbstractContextManager[Any]],
    ) -> None:
        self.d, self.index, self.apply, self.write = dialect, index, apply, write

    def fire_due(
        self, conn: Any, plan: Planner, next_due: NextDue, now: datetime, limit: int
    ) -> tuple[list[Due], datetime | None]:
        """Fire what is due for (at most `limit` of) the incidents due at `now`, and store
        their next due times, in one transaction; returns what fired and the earliest next
        due time in the index (`now` when more is due at once). Without anything due it
        only reads the index."""
        index = self.index
        first = index.earliest(conn, now)
        if first is None or first > now:
            return [], first
        with self.write(conn):
            ids = index.due_ids(conn, now, limit)
            incidents = index.load(conn, ids)
            fired, failed = [], set()
            for incident, items in by_incident(plan, incidents):
                try:
                    with self.d.savepoint(conn, "incident"):
                        fired += self._fire(conn, items(), now)
                except Exception as exc:  # a bug with this incident: the others still fire
                    failed.add(failure(incident, exc))
            if any(d.plan.changes for d in fired):  # a holding reply moved a next-update time
                incidents = index.load(conn, ids)
            planned = next_due(
                [i for i in incidents if i.id not in failed], index.fired_keys(conn, ids)
            )
            # An id not planned (gone) leaves the index; one that failed is tried again later.
            times = {iid: after(planned.get(iid), now) for iid in ids}
            index.store_next(conn, times | {iid: now + STUCK_RETRY for iid in failed})
            return fired, index.earliest(conn, now)

    def fire_digest(
        self, conn: Any, plan: Planner, since: datetime | None, until: datetime, now: datetime
    ) -> list[Due]:
        """Fire the out-of-hours digest once: `plan` gets the open incidents created from
        `since` to before `until` (the out-of-hours stretch it covers)."""
        with self.write(conn):
            return self._fire(conn, plan(self.index.waiting(conn, since, until)), now)

    def replan_all(self, conn: Any) -> int:
        """Mark every open incident for re-planning at the next round; returns how many."""
        with self.write(conn):
            return self.index.replan_all(conn)

    def _fire(self, conn: Any, due: list[Due], now: datetime) -> list[Due]:
        fired = []
        for item in due:
            cur = conn.execute(
                self.d.insert_ignore(
                    "INSERT INTO reminders (subject, incident_id, kind, due_at, fired_at)"
                    " VALUES (?, ?, ?, ?, ?)"
                ),
                (item.subject, item.incident_id, item.kind, ts(item.due_at), ts(now)),
            )
            if cur.rowcount:
                self.apply(conn, item.plan, now)
                fired.append(item)
        return fired


_SQLITE = Firing(SQLITE, SQLITE_INDEX, apply_plan, transaction)
fire_due = _SQLITE.fire_due
fire_digest = _SQLITE.fire_digest
replan_all = _SQLITE.replan_all


def by_incident(
    plan: Planner, incidents: Sequence[Incident]
) -> Iterator[tuple[Incident, Callable[[], list[Due]]]]:
    """Each incident with what is due for it: planned together, or, when that fails,
    one by one (so one incident a bug trips over cannot hold up the others)."""
    try:
        due = plan(incidents)
    except Exception:
        for incident in incidents:
            yield incident, partial(plan, [incident])
        return
    grouped: dict[int | None, list[Due]] = {}
    for item in due:
        grouped.setdefault(item.incident_id, []).append(item)
    for incident in incidents:
        yield incident, partial(grouped.pop, incident.id, [])


def failure(incident: Incident, exc: Exception) -> int:
    """Log an incident whose items could not be planned or applied (the type only: the
    message may quote a tenant); it is tried again STUCK_RETRY later."""
    log.error("sla.incident_failed", incident=incident.ref, error=type(exc).__name__)
    return incident.id


def after(at: datetime | None, now: datetime) -> datetime | None:
    """An incident's next due time as indexed: never `now` or earlier (STUCK_RETRY)."""
    return at if at is None or at > now else now + STUCK_RETRY


def snapshot(conn: sqlite3.Connection) -> tuple[list[Incident], set[tuple[str, str, str]]]:
    """The open incidents and the keys of the items already fired (one read transaction)."""
    with read_transaction(conn):
        keys = set(conn.execute("SELECT subject, kind, due_at FROM reminders").fetchall())
        return open_incidents(conn), keys


@contextmanager
def read_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN (deferred: no write lock) … COMMIT, so both reads see the same state."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


def fired_for(conn: sqlite3.Connection, incident_id: int) -> list[tuple[str, datetime, datetime]]:
    """(kind, due_at, fired_at) of every item fired for an incident, in firing order."""
    return [
        (kind, datetime.fromisoformat(due), datetime.fromisoformat(at))
        for kind, due, at in conn.execute(
            "SELECT kind, due_at, fired_at FROM reminders WHERE incident_id = ? ORDER BY id",
            (incident_id,),
        )
    ]
