"""The operator's read port (gateway.read_ports) on PostgreSQL: one plain connection of the
CLI's own, never the daemon's pool, and no lease.

Every read is one READ ONLY, REPEATABLE READ transaction, so a read command cannot change
the shared state whatever it runs, and an incident and its timeline come from one
snapshot. The operator (for `outbox retry` and `held release`) makes the same single
conditional updates the daemon's store makes. Statements and lock waits are bounded
(SET LOCAL, so nothing outlives the transaction, also behind a connection pooler), and a
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
_TIMEOUTS = (
    f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS};"
    f" SET LOCAL lock_timeout = {STATEMENT_TIMEOUT_MS}"
)


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
def _bounded(conn: schema.Conn) -> Iterator[None]:
    # One transaction whose statements and lock waits are bounded. SET LOCAL ends with the
    # transaction (safe behind a pooler), and READ ONLY / REPEATABLE READ come from the
    # connection's settings (psycopg's BEGIN carries them).
    with conn.transaction():
        conn.execute(_TIMEOUTS)
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
    """The read port on the database at `dsn` (read-only transactions unless `write`); raises
    StateUnavailable when it does not answer or holds no state yet."""
    kwargs: dict[str, Any] = {
        "autocommit": True,
        "connect_timeout": max(1, round(connect_timeout_s)),
        "application_name": "chatops-gateway-cli",
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
                conn.read_only = True
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            with _bounded(conn):
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
    return QueryReader(conn, POSTGRESQL, snapshot=_bounded, guard=_guard, writing=_bounded)
