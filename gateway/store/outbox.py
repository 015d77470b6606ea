"""The outbox table on SQLite: what is due, settling a round of attempts with their effects
(pages, tickets, chat roots, timeline lines) exactly once, dead letters, and the queue counts.

What is the same on PostgreSQL is written once here for both (gateway.store.dialect) and
used by gateway.store.postgres.outbox: recording a delivered entry's effects
(`record_effect`, with gateway.store.mirror_db) and a dead one's (`record_dead`), the
timeline lines of an outcome (`add_lines`), sending a dead entry back (`retry_dead`),
`outbox_rows` and `queue_stats`. Claiming and settling differ (claims, fencing tokens,
batched updates on PostgreSQL) and stay apart.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from gateway.domain import (
    Attempt,
    OutboxEntry,
    OutboxKind,
    OutboxState,
    QueueStats,
    TimelineEvent,
    chat_key,
    dumps,
)
from gateway.read_ports import OUTBOX_COLUMNS
from gateway.store import mirror_db
from gateway.store.db import from_ts, transaction, ts
from gateway.store.dialect import SQLITE, Dialect
from gateway.store.incident_writes import add_timeline, queue
from gateway.store.rows import lane_clear_sql
from gateway.store.schema import lane_field

_PAGE_ACTIONS = {
    OutboxKind.PAGE_TRIGGER: "trigger",
    OutboxKind.PAGE_ACKNOWLEDGE: "acknowledge",
    OutboxKind.PAGE_RESOLVE: "resolve",
}
_OUT_KEY = "INSERT INTO thread_keys (key, incident_id, direction) VALUES (?, ?, 'out')"

# Pending entries a retry earlier in their lane does not hold back (gateway.store.rows).
_LANE_CLEAR = lane_clear_sql(lane_field)  # as the index outbox_lane spells it (schema 8)


def _not_kinds(skip: Collection[str]) -> tuple[str, tuple[str, ...]]:
    """A condition leaving out entries of the given kinds (those waiting for a link)."""
    if not skip:
        return "", ()
    return f" AND kind NOT IN ({', '.join('?' * len(skip))})", tuple(sorted(skip))


def due_outbox(
    conn: sqlite3.Connection, now: datetime, limit: int, skip: Collection[str] = ()
) -> list[OutboxEntry]:
    """Pending entries whose next attempt is due, oldest first (none of the `skip` kinds),
    leaving out those an earlier entry of their lane, waiting on a retry, holds back."""
    cond, args = _not_kinds(skip)
    rows = conn.execute(
        "SELECT id, kind, incident_id, payload, attempts FROM outbox"  # noqa: S608
        f" WHERE state = 'pending' AND next_attempt_at <= ?{cond} AND {_LANE_CLEAR}"
        " ORDER BY next_attempt_at, id LIMIT ?",
        (ts(now), *args, limit),
    ).fetchall()
    return [OutboxEntry(r[0], OutboxKind(r[1]), r[2], json.loads(r[3]), r[4]) for r in rows]


def next_outbox_due(conn: sqlite3.Connection, skip: Collection[str] = ()) -> datetime | None:
    """When the next pending entry (none of the `skip` kinds, none held back in its lane)
    is due, if any."""
    cond, args = _not_kinds(skip)
    (value,) = conn.execute(
        "SELECT MIN(next_attempt_at) FROM outbox"  # noqa: S608
        f" WHERE state = 'pending'{cond} AND {_LANE_CLEAR}",
        args,
    ).fetchone()
    return from_ts(value)


def settle_outbox(conn: sqlite3.Connection, attempts: Sequence[Attempt], now: datetime) -> None:
    """Record a round of attempts in one transaction. A delivery is marked done in the same
    transaction that records its effect, and only once (a second completion changes nothing)."""
    with transaction(conn):
        for a in attempts:
            if a.result is not None:
                cur = conn.execute(
                    "UPDATE outbox SET state = ?, attempts = attempts + 1, result = ?,"
                    " done_at = ?, last_error = NULL WHERE id = ? AND state = 'pending'",
                    (OutboxState.DONE, dumps(a.result), ts(now), a.entry.id),
                )
                if cur.rowcount and a.entry.incident_id is not None:
                    record_effect(conn, a.entry, a.result, now)
                    add_lines(conn, a)
            elif a.parked:
                conn.execute(
                    "UPDATE outbox SET last_error = ? WHERE id = ? AND state = 'pending'",
                    (a.error[:500], a.entry.id),
                )
            else:
                cur = conn.execute(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = ?,"
                    " next_attempt_at = ?, state = ? WHERE id = ? AND state = 'pending'",
                    (
                        a.error[:500],
                        ts(a.next_at or now),
                        OutboxState.DEAD if a.dead else OutboxState.PENDING,
                        a.entry.id,
                    ),
                )
                if cur.rowcount and a.dead:
                    record_dead(conn, a, now)


def record_dead(conn: Any, a: Attempt, now: datetime, dialect: Dialect = SQLITE) -> None:
    """A dead entry's timeline lines are recorded, and its alert (if any) is queued (on
    either store)."""
    add_lines(conn, a, dialect)
    if a.alert is not None:
        queue(conn, a.entry.incident_id, a.alert, now, dialect)


def retry_dead(
    conn: Any,
    outbox_id: int,
    now: datetime,
    note: Callable[[int, str, datetime], TimelineEvent],
    dialect: Dialect = SQLITE,
    *,
    claims: bool = False,
) -> str | None:
    """Send a dead entry back to pending with a fresh attempt count, due now, and put
    `note(outbox_id, kind, now)` on its incident's timeline, in one transaction, on either
    store (`claims`: the outbox has PostgreSQL's claim columns, and the entry's claim is
    released). Returns None when done, else the entry's state (or "unknown") to explain
    why nothing changed."""
    release = ", claim_until = NULL" if claims else ""
    with dialect.transaction(conn):
        row = conn.execute(
            dialect.q(
                "SELECT state, incident_id, kind FROM outbox WHERE id = ?"  # noqa: S608  (constant)
                + dialect.row_lock
            ),
            (outbox_id,),
        ).fetchone()
        if row is None:
            return "unknown"
        if row[0] != OutboxState.DEAD:
            return str(row[0])
        conn.execute(
            dialect.q(
                "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?"  # noqa: S608  (constant)
                f"{release} WHERE id = ?"
            ),
            (ts(now), outbox_id),
        )
        if row[1] is not None:
            add_timeline(conn, int(row[1]), note(outbox_id, str(row[2]), now), dialect)
    return None


def record_effect(
    conn: Any, entry: OutboxEntry, result: dict[str, Any], now: datetime, dialect: Dialect = SQLITE
) -> None:
    """Record what a delivered entry of an incident leaves in the store (a page, a ticket,
    a chat root and its thread key, a mirror's row), exactly once, on either store."""
    iid = entry.incident_id
    if iid is None:
        raise RuntimeError("iid is set here")
    p, ignore = entry.payload, dialect.insert_ignore
    if entry.kind in _PAGE_ACTIONS:
        conn.execute(
            ignore(
                "INSERT INTO pages (incident_id, outbox_id, provider, action, dedup_key, at,"
                " response) VALUES (?, ?, ?, ?, ?, ?, ?)"
            ),
            (
                iid,
                entry.id,
                result.get("provider", "?"),
                _PAGE_ACTIONS[entry.kind],
                p["dedup_key"],
                ts(now),
                dumps(result),
            ),
        )
    elif entry.kind is OutboxKind.TICKET_CREATE:
        conn.execute(
            ignore(
                "INSERT INTO tickets (incident_id, backend, external_id, link, title, status,"
                " body, created_at) VALUES (?, ?, ?, ?, ?, 'open', ?, ?)"
            ),
            (
                iid,
                result.get("backend", "builtin"),
                str(result.get("external_id", "")),
                result.get("link"),
                p["title"],
                p["body"],
                ts(now),
            ),
        )
    elif entry.kind is OutboxKind.CHAT_ANNOUNCE:
        event_id = str(result["event_id"])
        conn.execute(dialect.q("UPDATE incidents SET chat_root = ? WHERE id = ?"), (event_id, iid))
        conn.execute(ignore(_OUT_KEY), (chat_key(event_id), iid))
    elif entry.kind is OutboxKind.CHAT_ALARM and p.get("root"):  # gateway.plan.alarm_rooms
        conn.execute(ignore(_OUT_KEY), (chat_key(str(result["event_id"])), iid))
    elif entry.kind in mirror_db.MIRROR_KINDS:
        mirror_db.record_effect(conn, entry, result, now, dialect)


def add_lines(conn: Any, a: Attempt, dialect: Dialect = SQLITE) -> None:
    """The timeline lines the outcome was worded with (gateway.deliver.timeline)."""
    if a.entry.incident_id is not None:
        for event in a.timeline:
            add_timeline(conn, a.entry.incident_id, event, dialect)


def outbox_rows(
    conn: Any, state: str | None = None, dialect: Dialect = SQLITE
) -> list[dict[str, Any]]:
    """Outbox entries for operators (no payload bodies), on either store."""
    sql = f"SELECT {', '.join(OUTBOX_COLUMNS)} FROM outbox"  # noqa: S608  (constant names)
    args: tuple[Any, ...] = ()
    if state:
        sql, args = sql + " WHERE state = ?", (state,)
    rows = conn.execute(dialect.q(sql + " ORDER BY id"), args).fetchall()
    return [dict(zip(OUTBOX_COLUMNS, r, strict=True)) for r in rows]


def queue_stats(conn: Any) -> QueueStats:
    """Read-only counts, on either store (the pending ones use the partial indexes on
    state = 'pending')."""
    (inbox,) = conn.execute("SELECT COUNT(*) FROM inbox WHERE state = 'pending'").fetchone()
    pending, oldest = conn.execute(
        "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE state = 'pending'"
    ).fetchone()
    retrying = {
        str(kind): int(n)
        for kind, n in conn.execute(
            "SELECT kind, COUNT(*) FROM outbox WHERE state = 'pending' AND attempts > 0"
            " GROUP BY kind"
        ).fetchall()
    }
    (dead,) = conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'dead'").fetchone()
    (held,) = conn.execute("SELECT COUNT(*) FROM inbox WHERE state = 'held'").fetchone()
    return QueueStats(int(inbox), int(pending), from_ts(oldest), retrying, int(dead), int(held))
