"""PostgreSQL store, the paths that save round trips: mail accepted on one node wakes the
node that processes (LISTEN/NOTIFY), a batch the database refuses part of is redone one
message at a time, and a claim is trusted locally only well within its time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from gateway.domain import Plan, TimelineEvent
from gateway.store.postgres.store import PostgresStore
from tests.peers.postgres import PostgresServer
from tests.pg_nodes import query
from tests.store_contract.builders import NOW, message, opened, work


@pytest.fixture
async def nodes(
    postgres: PostgresServer,
) -> AsyncIterator[tuple[PostgresStore, PostgresStore, str]]:
    """Two open stores (nodes "a" and "b") on one fresh database, and its DSN."""
    dsn = postgres.new_database()
    a = PostgresStore(dsn, node="a", pool_size=2, claim_s=2.0)
    b = PostgresStore(dsn, node="b", pool_size=2, claim_s=2.0)
    await a.open()
    await b.open()
    yield a, b, dsn
    await a.close()
    await b.close()


async def test_mail_accepted_by_another_node_wakes_the_listener(
    nodes: tuple[PostgresStore, PostgresStore, str],
) -> None:
    """Node b's listener is woken by node a's accept, and not by b's own (its intake wakes
    its worker itself): notifications come in commit order, so after a's it has seen two
    wake-ups, the one on connecting and a's."""
    a, b, _ = nodes
    woken: list[int] = []
    seen = asyncio.Event()

    def wake() -> None:
        woken.append(1)
        seen.set()

    listener = asyncio.create_task(b.listen(wake))
    try:
        await asyncio.wait_for(seen.wait(), 30)  # connected and listening
        seen.clear()
        await b.accept(message(1))
        await a.accept(message(2))
        await asyncio.wait_for(seen.wait(), 30)
        await asyncio.sleep(0.2)  # a stray wake-up for b's own accept would show by now
        assert len(woken) == 2
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


async def test_a_refused_write_redoes_the_batch_one_message_at_a_time(
    nodes: tuple[PostgresStore, PostgresStore, str],
) -> None:
    """The database refusing one message's write is noticed late (pipelined), so the batch
    is rolled back and redone one message at a time, which is logged; nothing is doubled."""
    a, _, dsn = nodes
    ids = [(await a.accept(message(n))).inbox_id for n in range(2)]
    orphan = Plan(
        outcome="noted", incident_id=999, timeline=(TimelineEvent(NOW, "note", "x", "lost"),)
    )
    with capture_logs() as logs:
        plans = await a.process(
            [work(ids[0], lambda _c: opened("one", "<1@x>")), work(ids[1], lambda _c: orphan)],
            NOW,
        )
    assert [e["event"] for e in logs if e["event"] == "inbox.batch_retried"] == [
        "inbox.batch_retried"
    ]
    assert plans[0].outcome == "opened" and plans[1].outcome.startswith("unreadable:")
    assert query(dsn, "SELECT COUNT(*) FROM incidents") == [(1,)]
    assert query(dsn, "SELECT COUNT(*) FROM outbox") == [(1,)]


async def test_a_claim_near_its_end_is_checked_in_the_database(
    nodes: tuple[PostgresStore, PostgresStore, str],
) -> None:
    """Within its time a claim holds without asking; once the database has let another
    node take the entry, the first node's check says so."""
    a, b, _ = nodes
    accepted = await a.accept(message(1))
    await a.process([work(accepted.inbox_id)], NOW)
    [entry] = await a.due_outbox(NOW, 10)
    assert await a.claim_valid(entry.id, margin_s=0.1)
    await asyncio.sleep(2.1)  # the two-second claim ran out
    assert [e.id for e in await b.due_outbox(NOW, 10)] == [entry.id]
    assert not await a.claim_valid(entry.id, margin_s=0.1)
