"""The operator's read port (gateway.read_ports) over one database connection, the same for
every backend, and its SQLite wiring.

A backend supplies its `Queries` (the read and operator functions it already has, each
taking a connection first), a `snapshot` that runs a read in one transaction, a `guard`
that turns its driver's errors into StateUnavailable, and optionally `writing`, around each
operator write; `QueryReader` does the rest.
On SQLite the reader opens the file read-only (`mode=ro`), as the CLI always has, so it
works while the daemon runs (WAL) and cannot change anything; the operator opens it for
writing, with the daemon's durability settings.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from gateway.domain import Incident, TimelineEvent
from gateway.read_ports import HeldRow, StateUnavailable
from gateway.store import db, held, incidents, outbox, schema

T = TypeVar("T")
Note = Callable[[int, str, datetime], TimelineEvent]


@dataclass(frozen=True)
class Queries:
    """One backend's functions behind the read port (the connection comes first)."""

    incidents: Callable[[Any], list[Incident]]
    incident: Callable[[Any, int], Incident | None]
    outbox: Callable[[Any, str | None], list[dict[str, Any]]]
    held: Callable[[Any, int], list[HeldRow]]
    kv_get: Callable[[Any, str], str | None]
    retry_dead: Callable[[Any, int, datetime, Note], str | None]
    release_held: Callable[[Any, int, datetime], str | None]


class QueryReader:
    """StateReader and StateOperator on one connection (writes only if it was opened for
    writing: a read-only connection refuses them)."""

    def __init__(
        self,
        conn: Any,
        queries: Queries,
        *,
        snapshot: Callable[[Any], AbstractContextManager[object]],
        guard: Callable[[], AbstractContextManager[object]],
        writing: Callable[[Any], AbstractContextManager[object]] | None = None,
    ) -> None:
        self._conn = conn
        self._q = queries
        self._snapshot = snapshot
        self._guard = guard
        self._writing = writing or (lambda _conn: nullcontext())

    def _read(self, fn: Callable[..., T], *args: Any) -> T:
        with self._guard(), self._snapshot(self._conn):
            return fn(self._conn, *args)

    def _write(self, fn: Callable[..., T], *args: Any) -> T:
        # The write function makes its own transaction; `writing` may wrap it in one more.
        with self._guard(), self._writing(self._conn):
            return fn(self._conn, *args)

    def incidents(self) -> list[Incident]:
        """Every incident, newest first, without timelines."""
        return self._read(self._q.incidents)

    def incident(self, incident_id: int) -> Incident | None:
        """One incident with reporters and timeline, or None."""
        return self._read(self._q.incident, incident_id)

    def outbox(self, state: str | None = None) -> list[dict[str, Any]]:
        """Outbox entries for operators, oldest first."""
        return self._read(self._q.outbox, state)

    def held(self, limit: int = 1000) -> list[HeldRow]:
        """Held messages, oldest first."""
        return self._read(self._q.held, limit)

    def kv_get(self, key: str) -> str | None:
        """A small persisted value."""
        return self._read(self._q.kv_get, key)

    def retry_dead(self, outbox_id: int, now: datetime, note: Note) -> str | None:
        """Send a dead entry back for delivery (None), or say why not."""
        return self._write(self._q.retry_dead, outbox_id, now, note)

    def release_held(self, inbox_id: int, now: datetime) -> str | None:
        """Release a held message (None), or say why not."""
        return self._write(self._q.release_held, inbox_id, now)

    def close(self) -> None:
        """Let the connection go."""
        self._conn.close()


def _list_incidents(conn: sqlite3.Connection) -> list[Incident]:
    return incidents.list_incidents(conn)


SQLITE = Queries(
    incidents=_list_incidents,
    incident=incidents.load_incident,
    outbox=outbox.outbox_rows,
    held=held.held_rows,
    kv_get=db.kv_get,
    retry_dead=outbox.retry_dead,
    release_held=held.release,
)


@contextmanager
def _sqlite_snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    # A deferred transaction reads one WAL snapshot: an incident and its timeline agree.
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")


@contextmanager
def _sqlite_guard() -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "readonly" in str(exc):
            raise StateUnavailable("the state is open read-only here") from None
        if "no such" in str(exc):  # a table or column of a newer schema
            raise StateUnavailable(
                "the state database is of another version: has the daemon of this "
                "version run with this configuration?"
            ) from None
        raise StateUnavailable(f"cannot read the state database ({exc})") from None
    except sqlite3.DatabaseError as exc:
        raise StateUnavailable(f"cannot read the state database ({exc})") from None


def open_sqlite(path: Path, *, write: bool = False) -> QueryReader:
    """The read port on the SQLite file at `path` (read-only unless `write`); raises
    StateUnavailable when there is no state there yet."""
    if not path.exists():
        raise StateUnavailable(f"no state at {path}: has the daemon run with this configuration?")
    with _sqlite_guard():
        conn = schema.connect(str(path), readonly=not write)
    return QueryReader(conn, SQLITE, snapshot=_sqlite_snapshot, guard=_sqlite_guard)
