"""`chatops-gateway migrate-state --from-sqlite PATH --config FILE`: copy a single-host
SQLite state into the PostgreSQL database the configuration names (gateway.store.postgres.
migrate), so an operator who started on the README's defaults can grow to several nodes.
The Matrix crypto store (the `matrix-crypto` folder beside the SQLite file) goes with it,
so the nodes continue as the same bot device in encrypted rooms."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.cli.views import UsageError
from gateway.config.model import CRYPTO_FOLDER, Config
from gateway.store import schema
from gateway.store.folder import read_folder


def migrate_state(config: Config, source: Path) -> int:
    """Copy `source` into the configured PostgreSQL database; prints what was copied."""
    import psycopg  # noqa: PLC0415  (only this command and the PostgreSQL store need it)

    from gateway.store.postgres.migrate import MigrationRefused, copy_state  # noqa: PLC0415

    pg = config.state.postgresql
    if config.state.backend != "postgresql" or pg is None:
        raise UsageError("the configuration's [state] backend is not 'postgresql'")
    if not source.is_file():
        raise UsageError(f"{source}: no such SQLite state file")
    password = config.read_secret(pg.password) if pg.password is not None else None
    try:
        sqlite_conn = schema.connect(str(source), readonly=True)
    except sqlite3.Error as exc:
        raise UsageError(f"{source}: cannot open ({exc})") from None
    try:
        with psycopg.connect(
            pg.dsn,
            password=password,
            autocommit=True,
            connect_timeout=max(1, round(pg.connect_timeout_s)),
        ) as target:
            copied = copy_state(sqlite_conn, target, read_folder(source.parent / CRYPTO_FOLDER))
    except MigrationRefused as exc:
        raise UsageError(str(exc)) from None
    except psycopg.OperationalError:
        raise UsageError("cannot reach the PostgreSQL database of [state.postgresql]") from None
    finally:
        sqlite_conn.close()
    for table, rows in copied.rows.items():
        print(f"{table:<22} {rows:>8} rows")
    print(f"copied {source} into PostgreSQL; start the nodes with this configuration")
    return 0
