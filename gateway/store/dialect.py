"""What differs between the SQL of the two stores, so that a query shared by both is
written once: the placeholder (`?` for sqlite3, `%s` for psycopg), an id list (`IN (?, …)`
in parts under SQLite's limit on bound values, `= ANY(%s)` with one array), batched
statements, the column that keeps rows in insertion order, whether a statement can gather
a reporter's thread keys in an ARRAY(), how an INSERT leaves an existing row alone, how
a read locks the row it is about to change, and savepoints.

Shared queries are written with `?` and run through `Dialect.q`; they use only what both
speak (standard SQL, `INSERT … ON CONFLICT … DO UPDATE`, ISO-8601 text for instants).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from gateway.store.db import transaction

__all__ = ["POSTGRES", "SQLITE", "Dialect"]

Key = TypeVar("Key", int, str)  # what `in_ids` and `parts` take: row ids or text keys


@dataclass(frozen=True)
class Dialect:
    """One store's SQL spelling (see the module doc)."""

    name: str
    placeholder: str  # "?" or "%s"
    insertion_order: str  # the thread_keys column that orders rows as inserted
    max_ids: int | None  # ids per `in_ids` part (None: any number in one)
    cursor_batches: bool  # executemany is the cursor's (psycopg), not the connection's
    key_arrays: bool  # ARRAY(SELECT …) gathers rows into one column (PostgreSQL)
    or_ignore: bool  # INSERT OR IGNORE (SQLite), not INSERT … ON CONFLICT DO NOTHING
    # Appended to a SELECT of a row the transaction goes on to change: PostgreSQL locks the
    # row; SQLite's write transaction (BEGIN IMMEDIATE) already holds the whole database.
    row_lock: str

    def insert_ignore(self, sql: str) -> str:
        """`sql`, an `INSERT INTO …` written with `?`, made to leave a row already there
        alone, as each store always spelt it: INSERT OR IGNORE on SQLite (which also skips
        a row breaking NOT NULL), ON CONFLICT DO NOTHING on PostgreSQL."""
        if not sql.startswith("INSERT INTO "):
            raise ValueError("not an INSERT INTO statement")
        if self.or_ignore:
            return self.q("INSERT OR IGNORE INTO " + sql.removeprefix("INSERT INTO "))
        return self.q(sql + " ON CONFLICT DO NOTHING")

    def q(self, sql: str) -> str:
        """`sql`, written with `?`, in this dialect's placeholders."""
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def in_ids(self, column: str, ids: Sequence[Key]) -> tuple[str, tuple[Any, ...]]:
        """A condition that `column` is one of `ids`, and its parameters."""
        if self.max_ids is None:
            return f"{column} = ANY({self.placeholder})", (list(ids),)
        return f"{column} IN ({', '.join('?' * len(ids))})", tuple(ids)

    def parts(self, ids: Iterable[Key]) -> list[tuple[Key, ...]]:
        """`ids` sorted, in as many parts as `in_ids` needs (none for none)."""
        ordered = tuple(sorted(ids))
        if not ordered:
            return []
        size = self.max_ids or len(ordered)
        return [ordered[at : at + size] for at in range(0, len(ordered), size)]

    def transaction(self, conn: Any) -> AbstractContextManager[Any]:
        """A write transaction on `conn` (SQLite: BEGIN IMMEDIATE … COMMIT)."""
        return conn.transaction() if self.cursor_batches else transaction(conn)

    def savepoint(self, conn: Any, name: str) -> AbstractContextManager[Any]:
        """A savepoint inside the caller's transaction: on an exception what ran inside is
        undone and the exception goes on (PostgreSQL: psycopg's nested transaction)."""
        return conn.transaction() if self.cursor_batches else _savepoint(conn, name)

    def executemany(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run `sql` (written with `?`) once per row, batched by the driver."""
        if not rows:
            return
        (conn.cursor() if self.cursor_batches else conn).executemany(self.q(sql), rows)


@contextmanager
def _savepoint(conn: Any, name: str) -> Iterator[None]:
    conn.execute(f"SAVEPOINT {name}")
    try:
        yield
    except Exception:
        conn.execute(f"ROLLBACK TO {name}")
        conn.execute(f"RELEASE {name}")
        raise
    conn.execute(f"RELEASE {name}")


# Well under SQLite's default limit of 32,766 bound values (a query may bind a list twice).
SQLITE = Dialect(
    "sqlite", "?", "rowid", 500, cursor_batches=False, key_arrays=False, or_ignore=True, row_lock=""
)
POSTGRES = Dialect(
    "postgresql",
    "%s",
    "seq",
    None,
    cursor_batches=True,
    key_arrays=True,
    or_ignore=False,
    row_lock=" FOR UPDATE",
)
