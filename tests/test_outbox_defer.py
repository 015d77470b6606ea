"""During a storm of incoming mail the outbox waits for a lull before its round (intake's
commits go first), at most `max_defer_s`; outside a storm it delivers at once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from gateway.deliver.outbox import OutboxWorker, RetryPolicy
from gateway.domain import OutboxEntry, OutboxKind
from gateway.store.sqlite import SqliteStore
from tests.conftest import eventually
from tests.test_store import NOW, message, work


async def test_outbox_waits_for_the_storm_to_pass(tmp_path: Path) -> None:
    """While intake reports a storm, no delivery is attempted; once it ends, the page goes."""
    store = SqliteStore(tmp_path / "gateway.sqlite3")
    await store.open()
    storm = True
    delivered: list[int] = []

    async def page(entry: OutboxEntry) -> dict[str, Any]:
        delivered.append(entry.id)
        return {"provider": "local"}

    outbox = OutboxWorker(
        store,
        {OutboxKind.PAGE_TRIGGER: page},
        RetryPolicy(),
        clock=lambda: NOW,
        busy=lambda: storm,
        max_defer_s=3600.0,
    )
    accepted = await store.accept(message(1))
    await store.process([work(accepted.inbox_id)], NOW)
    task = asyncio.create_task(outbox.run())
    try:
        await asyncio.sleep(0.2)
        assert delivered == []
        storm = False
        await eventually(lambda: len(delivered) == 1)
    finally:
        outbox.stop()
        await task
        await store.close()
    assert await store_has_nothing_due(tmp_path)


async def store_has_nothing_due(tmp_path: Path) -> bool:
    store = SqliteStore(tmp_path / "gateway.sqlite3")
    await store.open()
    try:
        return await store.due_outbox(NOW, 10) == []
    finally:
        await store.close()
