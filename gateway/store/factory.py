"""The store the configuration asks for: SQLite in the state folder (the default, one
host), or the shared PostgreSQL database (several nodes). PostgreSQL's driver is imported
only when it is configured."""

from __future__ import annotations

from gateway.config.model import Config
from gateway.ports import Store
from gateway.read_ports import StateOperator, StateReader
from gateway.store.reader import open_sqlite
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


def open_reader(config: Config) -> StateReader:
    """The operator CLI's read port on the configured backend's state, on a connection of
    its own (no lease, nothing of the daemon's) that cannot write. Raises StateUnavailable
    (gateway.read_ports) when there is no state yet or the database does not answer."""
    return _open(config, write=False)


def open_operator(config: Config) -> StateOperator:
    """The same, able to make the operator's two writes (`outbox retry`, `held release`)."""
    return _open(config, write=True)


def _open(config: Config, *, write: bool) -> StateOperator:
    pg = config.state.postgresql
    if config.state.backend != "postgresql" or pg is None:
        return open_sqlite(config.database_path(), write=write)
    from gateway.store.postgres.reader import open_postgresql  # noqa: PLC0415  (psycopg)

    password = config.read_secret(pg.password) if pg.password is not None else None
    return open_postgresql(pg.dsn, password, pg.connect_timeout_s, write=write)
