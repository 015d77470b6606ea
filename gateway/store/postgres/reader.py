"""The operator's read port (gateway.read_ports) on PostgreSQL: one plain connection of the
CLI's own, never the daemon's pool, and no lease.

The reader's session is read-only (`default_transaction_read_only`), so a read command
cannot change the shared state whatever it runs; each read is one REPEATABLE READ
transaction, so an incident and its timeline come from one snapshot. The operator (for
`outbox retry` and `held release`) is an ordinary session whose writes are the same single
conditional updates the daemon's store makes. Statements are bounded by a timeout, so a
command never hangs on a lock or a stalled server. The queries are this package's own
(gateway.store.postgres.incidents, .outbox, .held, .reminders); QueryReader
(gateway.store.reader) is shared with SQLite.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from gateway.domain import Incident
from gateway.read_ports import StateUnavailable
from gateway.store.postgres import held, incidents, outbox, reminders, schema
from gateway.store.reader import Queries, QueryReader

STATEMENT_TIMEOUT_MS = 30_000


def _list_incidents(conn: schema.Conn) -> list[Incident]:
    return incidents.list_incidents(conn)


POSTGRESQL = Queries(
    incidents=_list_incidents,
    incident=incidents.load_incident,
    outbox=outbox.outbox_rows,
    held=held.held_rows,
    kv_get=reminders.kv_get,
    retry_dead=outbox.retry_dead,
    release_held=held.release,
)


@contextmanager
def _snapshot(conn: schema.Conn) -> Iterator[None]:
    with conn.transaction():
        yield


@contextmanager
def _guard() -> Iterator[None]:
    try:
        yield
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):
        raise StateUnavailable(
            "the PostgreSQL database holds no state of this version: has the daemon of this "
            "version run with this configuration?"
        ) from None
    except psycopg.errors.ReadOnlySqlTransaction:
        raise StateUnavailable("the state is open read-only here") from None
    except psycopg.errors.QueryCanceled:
        raise StateUnavailable(
            f"the PostgreSQL database did not answer within {STATEMENT_TIMEOUT_MS // 1000} s"
        ) from None
    except psycopg.OperationalError:
        raise StateUnavailable("lost the PostgreSQL database of [state.postgresql]") from None


def open_postgresql(
    dsn: str, password: str | None, connect_timeout_s: float, *, write: bool = False
) -> QueryReader:
    """The read port on the database at `dsn` (a read-only session unless `write`); raises
    StateUnavailable when it does not answer or holds no state yet."""
    options = f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c lock_timeout={STATEMENT_TIMEOUT_MS}"
    if not write:
        options += " -c default_transaction_read_only=on"
    kwargs: dict[str, Any] = {
        "autocommit": True,
        "connect_timeout": max(1, round(connect_timeout_s)),
        "application_name": "chatops-gateway-cli",
        "options": options,
    }
    if password is not None:
        kwargs["password"] = password
    try:
        conn = psycopg.connect(dsn, **kwargs)
    except psycopg.OperationalError:
        raise StateUnavailable(
            "cannot reach the PostgreSQL database of [state.postgresql]"
        ) from None
    try:
        with _guard():
            if not write:
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            found = schema.version(conn)
    except BaseException:
        conn.close()
        raise
    if found == 0:
        conn.close()
        raise StateUnavailable(
            "the PostgreSQL database of [state.postgresql] holds no state yet: has the "
            "daemon run with this configuration?"
        )
    return QueryReader(conn, POSTGRESQL, snapshot=_snapshot, guard=_guard)
