"""An outbox round records each lane's outcome as the lane finishes, not when its slowest
entry is done: a ticket delivered while a page in the same round is still on the wire is
already recorded, so a node killed at that moment would not deliver the ticket again. A
settle that fails is tried again with the round's last, and the round then fails loudly."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway.deliver.outbox import OutboxWorker, RetryPolicy
from gateway.domain import OutboxEntry, OutboxKind
from gateway.store.sqlite import SqliteStore
from tests.test_outbox_pages_first import _opened, _page, _ticket
from tests.test_store import NOW, message, work


async def _store(path: Path) -> SqliteStore:
    store = SqliteStore(path / "gateway.sqlite3")
    await store.open()
    first = await store.accept(message(1))
    await store.process([work(first.inbox_id, lambda ctx: _opened((_ticket(1),)))], NOW)
    second = await store.accept(message(2))
    await store.process([work(second.inbox_id, lambda ctx: _opened((_page("INC-A"),)))], NOW)
    return store


async def _states(store: SqliteStore) -> dict[str, str]:
    return {str(r["kind"]): str(r["state"]) for r in await store.outbox_rows()}


async def test_a_quick_lane_is_recorded_while_a_slow_one_is_in_flight(tmp_path: Path) -> None:
    """The page hangs on the wire; the ticket, delivered meanwhile, is already `done` in
    the store; once the page returns it is recorded too, one attempt each."""
    store = await _store(tmp_path)
    release = asyncio.Event()
    calls: list[str] = []

    async def page(entry: OutboxEntry) -> dict[str, Any]:
        calls.append("page")
        await release.wait()
        return {"provider": "local"}

    async def ticket(entry: OutboxEntry) -> dict[str, Any]:
        calls.append("ticket")
        return {"provider": "local", "external_id": "T-1"}

    outbox = OutboxWorker(
        store,
        {OutboxKind.TICKET_CREATE: ticket, OutboxKind.PAGE_TRIGGER: page},
        RetryPolicy(),
        clock=lambda: NOW,
    )
    try:
        round_ = asyncio.create_task(outbox.deliver_due())
        for _ in range(500):
            if (await _states(store)).get("ticket.create") == "done":
                break
            await asyncio.sleep(0.01)
        assert await _states(store) == {"ticket.create": "done", "page.trigger": "pending"}
        release.set()
        assert await round_ == 2
        assert await _states(store) == {"ticket.create": "done", "page.trigger": "done"}
        assert sorted(calls) == ["page", "ticket"]
    finally:
        await store.close()


class _FlakySettle:
    """The store whose settle fails `failures` times (the database away for a moment)."""

    def __init__(self, store: SqliteStore, failures: int) -> None:
        self._store, self.failures = store, failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def settle_outbox(self, *args: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("store away")
        await self._store.settle_outbox(*args)


@pytest.mark.parametrize(("failures", "recorded"), [(1, True), (2, False)])
async def test_a_failed_settle_is_retried_at_the_end_of_the_round(
    tmp_path: Path, failures: int, recorded: bool
) -> None:
    """The first lane's settle fails: its outcome waits and goes with the round's last
    settle; when that fails too, the round raises and nothing is recorded as done."""
    store = await _store(tmp_path)

    async def deliver(entry: OutboxEntry) -> dict[str, Any]:
        return {"provider": "local", "external_id": "T-1"}

    flaky = _FlakySettle(store, failures)
    outbox = OutboxWorker(
        flaky,  # type: ignore[arg-type]  # the real store, its settle made to fail
        {OutboxKind.TICKET_CREATE: deliver, OutboxKind.PAGE_TRIGGER: deliver},
        RetryPolicy(),
        concurrency=1,  # one lane a round: its settle fails, finish() tries it again
        clock=lambda: NOW,
    )
    try:
        if recorded:
            assert await outbox.deliver_due() == 1
            assert (await _states(store))["page.trigger"] == "done"
        else:
            with pytest.raises(ConnectionError):
                await outbox.deliver_due()
            assert set((await _states(store)).values()) == {"pending"}
    finally:
        await store.close()
