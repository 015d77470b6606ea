"""The store the configuration asks for: SQLite in the state folder (the default, one
host), or the shared PostgreSQL database (several nodes). PostgreSQL's driver is imported
only when it is configured."""

from __future__ import annotations

from gateway.config.model import Config
from gateway.ports import Store
from gateway.store.sqlite import SqliteStore


def make_store(config: Config) -> Store:
    """An unopened store for the configured backend."""
    pg = config.state.postgresql
    if config.state.backend != "postgresql" or pg is None:
        return SqliteStore(config.database_path())
    from gateway.store.postgres.store import PostgresStore, node_name  # noqa: PLC0415

    password = config.read_secret(pg.password) if pg.password is not None else None
    return PostgresStore(
        pg.dsn,
        password,
        node=node_name(pg.node),
        pool_size=pg.pool_size,
        connect_timeout_s=pg.connect_timeout_s,
        claim_s=pg.claim_s,
    )
