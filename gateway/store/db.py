"""Synchronous SQLite on the store's one connection: the shared helpers (timestamps, the
write transaction) and the kv table of small persisted values.

The SQL is split by table group: inbox.py (accepting and processing messages), threads.py
(finding a message's incident), incidents.py (incidents, reporters, timeline; applying a
Plan), outbox.py (delivery bookkeeping and queue counts), mirror_db.py, storm_db.py and
reminders.py. Much of it is written once for both stores in SQLite's and PostgreSQL's
common SQL (gateway.store.dialect): incident_reads.py, incident_writes.py, sla_index.py,
the outbox's effects, held mail, firing SLA items. Only gateway.store.sqlite calls these (on
SQLite), from its single database thread; the CLI uses the read functions on its own
read-only connection while the daemon runs (WAL allows it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime


def ts(value: datetime) -> str:
    """A sortable UTC timestamp string."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def from_ts(value: str | None) -> datetime | None:
    """A stored timestamp back as a datetime (None stays None)."""
    return None if value is None else datetime.fromisoformat(value)


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def kv_get(conn: sqlite3.Connection, key: str) -> str | None:
    """A small persisted value (sync tokens, device ids)."""
    row = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def kv_set(conn: sqlite3.Connection, key: str, value: str) -> None:
    """Persist a small value, durably."""
    with transaction(conn):
        conn.execute(
            "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE"
            " SET value = excluded.value",
            (key, value),
        )
