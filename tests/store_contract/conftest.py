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

from gateway.ports import Store
from gateway.store.postgres.store import PostgresStore
from gateway.store.sqlite import SqliteStore

Backend = Callable[[Path], Store]


def _sqlite(folder: Path) -> Store:
    return SqliteStore(folder / "gateway.sqlite3")


def _postgresql(request: pytest.FixtureRequest) -> Backend:
    server = request.getfixturevalue("postgres")

    def factory(folder: Path) -> Store:
        name = "c_" + hashlib.sha256(str(folder).encode()).hexdigest()[:16]
        return PostgresStore(server.new_database(name), pool_size=4)

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
