"""The Store contract's backends: every implementation of gateway.ports.Store runs the same
tests. A backend is a factory: a folder in, an unopened Store out; the same folder gives
the same database, so a test can close a store and open it again."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.ports import Store
from gateway.store.sqlite import SqliteStore

Backend = Callable[[Path], Store]


def _sqlite(folder: Path) -> Store:
    return SqliteStore(folder / "gateway.sqlite3")


BACKENDS: dict[str, Backend] = {"sqlite": _sqlite}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each backend in turn."""
    factory: Backend = BACKENDS[request.param]
    return factory


@pytest.fixture
async def store(backend: Backend, tmp_path: Path) -> AsyncIterator[Store]:
    """An open store of the backend under test, on an empty database."""
    s = backend(tmp_path)
    await s.open()
    yield s
    await s.close()
