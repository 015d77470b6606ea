"""SLA items fired exactly once, and small persisted values, on PostgreSQL.

Firing is gateway.store.reminders.Firing, bound to PostgreSQL: it takes the write lock (as
processing does), so two nodes never plan the same round twice; the unique key (subject,
kind, due_at) keeps each item to one firing regardless. The snapshot and the kv functions
of gateway.store.db are ported here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from gateway.domain import Incident
from gateway.store.dialect import POSTGRES
from gateway.store.postgres import sla_index
from gateway.store.postgres.incidents import apply_plan, open_incidents
from gateway.store.postgres.schema import WRITE_LOCK, Conn
from gateway.store.reminders import Firing


@contextmanager
def _locked(conn: Conn) -> Iterator[None]:
    """A transaction holding the write lock (as processing takes it)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        yield


_POSTGRES = Firing(POSTGRES, sla_index.INDEX, apply_plan, _locked)
fire_due = _POSTGRES.fire_due
fire_digest = _POSTGRES.fire_digest
replan_all = _POSTGRES.replan_all


def snapshot(conn: Conn) -> tuple[list[Incident], set[tuple[str, str, str]]]:
    """The open incidents and the keys of the items already fired, from one snapshot."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        keys = {
            (str(s), str(k), str(d))
            for s, k, d in conn.execute("SELECT subject, kind, due_at FROM reminders").fetchall()
        }
        return open_incidents(conn), keys


def kv_get(conn: Conn, key: str) -> str | None:
    """A small persisted value (sync tokens, device ids, cursors)."""
    row = conn.execute("SELECT value FROM kv WHERE key = %s", (key,)).fetchone()
    return None if row is None else str(row[0])


def kv_set(conn: Conn, key: str, value: str) -> None:
    """Persist a small value (committed before returning)."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO kv (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE"
            " SET value = excluded.value",
            (key, value),
        )
