"""Fencing on PostgreSQL: two stores on one database play two nodes. An outbox entry is
claimed by one node at a time; a node whose claim expired and was taken over records
nothing; leases have one holder, expire by the database's clock, and their tokens grow."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.deliver.timeline import worded
from gateway.domain import Attempt
from gateway.store.postgres.store import PostgresStore
from tests.peers.postgres import PostgresServer
from tests.store_contract.builders import NOW, message, opened, work


@pytest.fixture
async def nodes(postgres: PostgresServer) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two open stores (nodes "a" and "b") on one fresh database, claims of two seconds."""
    dsn = postgres.new_database()
    a = PostgresStore(dsn, node="a", pool_size=2, claim_s=2.0)
    b = PostgresStore(dsn, node="b", pool_size=2, claim_s=2.0)
    await a.open()
    await b.open()
    yield a, b
    await a.close()
    await b.close()


async def _incident(store: PostgresStore) -> None:
    plan = opened()
    accepted = await store.accept(message(1))
    await store.process([work(accepted.inbox_id, lambda _c: plan)], NOW)


async def test_an_entry_is_claimed_by_one_node_at_a_time(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    """What node a claimed is not offered to node b while a's claim holds."""
    a, b = nodes
    await _incident(a)
    claimed = await a.due_outbox(NOW, 10)
    assert claimed
    assert await b.due_outbox(NOW, 10) == []
    assert await a.claim_valid(claimed[0].id)
    assert not await b.claim_valid(claimed[0].id)
    # b looks again when a's claim would expire, not at once and over and over
    due = await b.next_outbox_due()
    assert due is not None and due > NOW


async def test_a_stale_claim_records_nothing(nodes: tuple[PostgresStore, PostgresStore]) -> None:
    """Node a's claim expires (a was paused), node b claims and delivers; a's late outcome
    is refused: one page, one timeline line."""
    a, b = nodes
    await _incident(a)
    [entry, *_] = await a.due_outbox(NOW, 10)
    await asyncio.sleep(2.2)  # a's two-second claim runs out
    assert not await a.claim_valid(entry.id)
    again = [e for e in await b.due_outbox(NOW, 10) if e.id == entry.id]
    assert again
    await b.settle_outbox([worded(Attempt(again[0], result={"provider": "b"}), NOW)], NOW)
    await a.settle_outbox([worded(Attempt(entry, result={"provider": "a"}), NOW)], NOW)
    incident = await a.incident(1)
    assert incident is not None and incident.pages_sent == 1
    assert [e.kind for e in incident.timeline].count("paged") == 1
    [row] = [r for r in await a.outbox_rows() if r["id"] == entry.id]
    assert row["state"] == "done"


async def test_a_lease_has_one_holder_and_new_holders_get_larger_tokens(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    """b cannot take a's lease while it holds; after it expires b gets a larger token, and
    a's renewal then fails."""
    a, b = nodes
    first = await a.acquire_lease("sla", 1.0)
    assert first is not None
    assert await b.acquire_lease("sla", 1.0) is None
    renewed = await a.acquire_lease("sla", 1.0)
    assert renewed is not None and renewed.token == first.token
    await asyncio.sleep(1.1)
    taken = await b.acquire_lease("sla", 5.0)
    assert taken is not None and taken.token > first.token
    assert await a.acquire_lease("sla", 1.0) is None
    await b.release_lease("sla", taken.token)
    assert await a.acquire_lease("sla", 1.0) is not None


async def test_the_crypto_store_is_saved_only_under_the_matrix_lease(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    """Node a saves the crypto store under its `matrix` lease; once b has taken the lease
    over and saved its own, a's late save (a was paused) is refused and b's copy stays;
    a save under another lease's token is refused too."""
    a, b = nodes
    assert await a.load_crypto_files() == {}
    first = await a.acquire_lease("matrix", 1.0)
    assert first is not None
    assert await a.save_crypto_files(first.token, {"bot.db": b"v1", "bot.trusted": b"t"})
    assert await b.load_crypto_files() == {"bot.db": b"v1", "bot.trusted": b"t"}
    await asyncio.sleep(1.1)
    taken = await b.acquire_lease("matrix", 5.0)
    assert taken is not None
    assert await b.save_crypto_files(taken.token, {"bot.db": b"v2"})
    assert not await a.save_crypto_files(first.token, {"bot.db": b"v1-late"})
    sla = await b.acquire_lease("sla", 5.0)
    assert sla is not None
    assert not await a.save_crypto_files(sla.token, {"bot.db": b"other lease"})
    assert await a.load_crypto_files() == {"bot.db": b"v2", "bot.trusted": b"t"}
