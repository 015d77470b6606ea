"""The inbox table: accepting messages durably (one transaction per group), and processing
them: each message's thread, the pure pipeline's Plan, applying it, in one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial

from gateway.domain import (
    Accepted,
    InboxRow,
    NewMessage,
    Plan,
    PlanContext,
    ThreadKeys,
    Work,
)
from gateway.store import alert_db, answer_db, storm_db
from gateway.store.db import transaction, ts
from gateway.store.incidents import (
    apply_plan,
    list_incidents,
    load_incident,
    recent_open_incidents,
)
from gateway.store.rows import INBOX_COLUMNS, NEW_INBOX_COLUMNS, inbox_row_of, inbox_values
from gateway.store.threads import find_thread, next_incident_id


def accept_many(conn: sqlite3.Connection, messages: Sequence[NewMessage]) -> list[Accepted]:
    """Insert a batch of messages in one transaction (one fsync for the whole group)."""
    results = []
    with transaction(conn):
        for m in messages:
            cur = conn.execute(
                f"INSERT OR IGNORE INTO inbox ({NEW_INBOX_COLUMNS})"  # noqa: S608  (constant columns)
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                inbox_values(m),
            )
            if cur.rowcount:
                results.append(Accepted(int(cur.lastrowid or 0), duplicate=False))
            else:
                (existing,) = conn.execute(
                    "SELECT id FROM inbox WHERE dedup_key = ?", (m.dedup_key,)
                ).fetchone()
                results.append(Accepted(int(existing), duplicate=True))
    return results


def pending_inbox(
    conn: sqlite3.Connection, limit: int, max_bytes: int | None = None
) -> list[InboxRow]:
    """The oldest messages not yet processed: at most `limit`, and with `max_bytes` only as
    many as fit in that many bytes of raw content (always at least one). The sizes are read
    first (length() of a blob does not load it), so a queue of large mail is never all in
    memory at once."""
    if max_bytes is not None:
        sizes = conn.execute(
            "SELECT length(raw) FROM inbox WHERE state = 'pending' ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        total, fits = 0, 0
        for (size,) in sizes:
            total += size or 0
            if fits and total > max_bytes:
                break
            fits += 1
        limit = fits
    rows = conn.execute(
        f"SELECT {INBOX_COLUMNS} FROM inbox WHERE state = 'pending' ORDER BY id LIMIT ?",  # noqa: S608  (constant columns)
        (limit,),
    ).fetchall()
    return [inbox_row_of(r) for r in rows]


def process(conn: sqlite3.Connection, batch: Sequence[Work], now: datetime) -> list[Plan]:
    """Find each message's thread, ask the pure pipeline for a plan, apply it and mark the
    message processed. The whole batch is one transaction (one fsync); each message is a
    savepoint, so one that fails falls back alone. A crash leaves all or nothing."""
    plans = []
    with transaction(conn):
        for work in batch:
            conn.execute("SAVEPOINT message")
            try:
                plan = _process_one(conn, work.inbox_id, work.keys, work.make_plan, now)
            except Exception as exc:  # a bug in planning: keep the message for a human
                conn.execute("ROLLBACK TO message")
                plan = _fall_back(conn, work, f"processing failed: {type(exc).__name__}", now)
            conn.execute("RELEASE message")
            plans.append(plan)
    return plans


def _fall_back(conn: sqlite3.Connection, work: Work, problem: str, now: datetime) -> Plan:
    if work.rescue is not None:
        rescue = work.rescue
        try:
            return _process_one(conn, work.inbox_id, None, lambda ctx: rescue(problem, ctx), now)
        except Exception:  # the rescue failed as well: the plain fallback, which cannot
            conn.execute("ROLLBACK TO message")
    return _process_one(conn, work.inbox_id, None, _fixed(work.fallback(problem)), now)


def _fixed(plan: Plan) -> Callable[[PlanContext], Plan]:
    return lambda _ctx: plan


def _process_one(
    conn: sqlite3.Connection,
    inbox_id: int,
    keys: ThreadKeys | None,
    make_plan: Callable[[PlanContext], Plan],
    now: datetime,
) -> Plan:
    (state,) = conn.execute("SELECT state FROM inbox WHERE id = ?", (inbox_id,)).fetchone()
    if state != "pending":
        return Plan(outcome="already processed")
    context = PlanContext(
        thread=find_thread(conn, keys) if keys else None,
        next_id=next_incident_id(conn),
        find=lambda iid: load_incident(conn, iid, with_timeline=False),
        open_incidents=lambda: list_incidents(conn, open_only=True),
        history=partial(storm_db.history, conn, inbox_id),
        recent_open=partial(recent_open_incidents, conn),
        answers=partial(answer_db.answer_fits, conn),
        alert_ids=partial(alert_db.open_alert_ids, conn),
    )
    plan = make_plan(context)
    apply_plan(conn, plan, now)
    if plan.digest is not None:
        storm_db.record(conn, inbox_id, plan.digest)
    conn.execute(  # a held message waits apart for an operator (gateway.store.held)
        "UPDATE inbox SET state = ?, outcome = ?, processed_at = ? WHERE id = ?",
        ("held" if plan.held else "done", plan.outcome, ts(now), inbox_id),
    )
    return plan
