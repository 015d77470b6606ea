"""The Store contract's backends: every implementation of gateway.ports.Store runs the same
tests. A backend is a factory: a folder in, an unopened Store out; the same folder gives
the same database, so a test can close a store and open it again. The PostgreSQL backend
runs against a real server the suite starts (tests/peers/postgres.py), a database per
test."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.config.model import Config, parse_config
from gateway.ports import Store
from gateway.store.postgres.store import PostgresStore
from gateway.store.sqlite import SqliteStore

Backend = Callable[[Path], Store]


def _sqlite(folder: Path) -> Store:
    return SqliteStore(folder / "gateway.sqlite3")


def _pg_name(folder: Path) -> str:
    return "c_" + hashlib.sha256(str(folder).encode()).hexdigest()[:16]


def _postgresql(request: pytest.FixtureRequest) -> Backend:
    server = request.getfixturevalue("postgres")

    def factory(folder: Path) -> Store:
        return PostgresStore(server.new_database(_pg_name(folder)), pool_size=4)

    return factory


@pytest.fixture(params=["postgresql", "sqlite"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each backend in turn."""
    if request.param == "postgresql":
        return _postgresql(request)
    return _sqlite


@pytest.fixture
async def store(backend: Backend, tmp_path: Path) -> AsyncIterator[Store]:
    """An open store of the backend under test, on an empty database."""
    s = backend(tmp_path)
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def state_config(
    backend: Backend, request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[Path], Config]:
    """The configuration whose `[state]` names the database `backend(folder)` opens, for
    the operator's read port (gateway.store.factory.open_reader)."""
    if request.node.callspec.params["backend"] == "sqlite":
        return lambda folder: parse_config({"state": {"dir": str(folder)}})
    server = request.getfixturevalue("postgres")

    def config(folder: Path) -> Config:
        dsn = server.new_database(_pg_name(folder))
        return parse_config({"state": {"backend": "postgresql", "postgresql": {"dsn": dsn}}})

    return config
