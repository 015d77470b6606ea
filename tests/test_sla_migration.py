"""The migration that adds the SLA index, on a state written before it (SQLite schema 6,
PostgreSQL schema 3): every open incident is indexed for re-planning, closed and merged
ones are not, and the first round fires exactly what the full scan would have fired,
nothing already fired again, and indexes each open incident's next due time."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg

from gateway.ports import Store
from gateway.run.scheduler import Scheduler
from gateway.store import schema
from gateway.store.db import ts
from gateway.store.postgres import schema as pg_schema
from gateway.store.postgres.store import PostgresStore
from gateway.store.sqlite import SqliteStore
from rules.engine import next_update_due, respond_due
from rules.types import Priority
from tests.conftest import ManualClock
from tests.peers.postgres import PostgresServer
from tests.store_contract.sla_history import BOOK, MONDAY, SETTINGS, full_scan

Execute = Callable[[str, Sequence[Any]], object]


def old_state(execute: Execute, mark: str) -> None:
    """Rows as the daemon before the index wrote them: an open P1 whose response warning
    already fired, an acknowledged P2, a resolved P1, and an incident merged into the
    first. `mark` is the backend's parameter mark."""
    columns = (
        "id, title, priority, status, mailbox, created_at, updated_at, reasons, period,"
        " respond_by, next_update_by"
    )
    marks = ", ".join([mark] * 11)
    for iid, priority, status in (
        (1, Priority.P1, "open"),
        (2, Priority.P2, "acknowledged"),
        (3, Priority.P1, "resolved"),
        (4, Priority.P3, "open"),
    ):
        execute(
            f"INSERT INTO incidents ({columns}) VALUES ({marks})",
            (
                iid,
                "Site down",
                priority.value,
                status,
                "emergency",
                ts(MONDAY),
                ts(MONDAY),
                "[]",
                "in_hours",
                ts(respond_due(priority, MONDAY, BOOK)),
                ts(next_update_due(priority, MONDAY, BOOK)),
            ),
        )
    execute(f"UPDATE incidents SET merged_into = 1 WHERE id = {mark}", (4,))
    execute(
        "INSERT INTO reminders (subject, incident_id, kind, due_at, fired_at)"
        f" VALUES ({mark}, {mark}, {mark}, {mark}, {mark})",
        ("INC-1", 1, "respond.soon", ts(MONDAY + timedelta(minutes=15)), ts(MONDAY)),
    )


async def first_round(store: Store) -> None:
    """Open the store (migrating it), check the index, run the first round."""
    await store.open()
    try:
        assert await store.sla_schedule() == {1: None, 2: None}
        now = MONDAY + timedelta(minutes=31)
        expected = await full_scan(store, now)
        s = Scheduler(store, BOOK, SETTINGS, lambda _fired: None, ManualClock(now))
        fired, _ = await s.fire()
        assert {(d.incident_id, d.kind, d.due_at) for d in fired} == expected
        # The P1's warning fired before the migration and does not fire again.
        assert sorted((d.incident_id, d.kind) for d in fired) == [
            (1, "escalate.1"),
            (1, "respond.overdue"),
        ]
        schedule = await store.sla_schedule()
        assert set(schedule) == {1, 2}
        assert all(at is not None and at > now for at in schedule.values())
    finally:
        await store.close()


async def test_sqlite_state_from_before_the_index(tmp_path: Path) -> None:
    """A schema-6 SQLite state: migrated to 7, its open incidents indexed and planned."""
    path = tmp_path / "gateway.sqlite3"
    conn = schema.connect(str(path))
    for number, script in enumerate(schema.MIGRATIONS[:6], start=1):
        conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    conn.execute("BEGIN")
    old_state(lambda sql, args: conn.execute(sql, tuple(args)), "?")
    conn.execute("COMMIT")
    conn.close()
    await first_round(SqliteStore(path))
    check = sqlite3.connect(path)
    try:
        assert check.execute("PRAGMA user_version").fetchone() == (len(schema.MIGRATIONS),)
    finally:
        check.close()


async def test_postgresql_state_from_before_the_index(postgres: PostgresServer) -> None:
    """A schema-3 PostgreSQL state: migrated to 4, its open incidents indexed and planned."""
    dsn = postgres.new_database()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations ("
            " version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for number, script in enumerate(pg_schema.MIGRATIONS[:3], start=1):
            with conn.transaction():
                conn.execute(script.encode())
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))
        with conn.transaction():
            old_state(lambda sql, args: conn.execute(sql.encode(), tuple(args)), "%s")
    await first_round(PostgresStore(dsn, pool_size=2))
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert pg_schema.version(conn) == len(pg_schema.MIGRATIONS)
