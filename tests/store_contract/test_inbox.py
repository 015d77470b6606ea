"""Store contract, inbox: durable accept, re-send de-duplication, order, and closing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.ports import Store, StoreClosed
from tests.store_contract.builders import message
from tests.store_contract.conftest import Backend


async def test_accepts_get_distinct_ids_and_wait_in_order(store: Store) -> None:
    """Concurrent accepts each get their own id; pending_inbox lists them oldest first."""
    results = await asyncio.gather(*(store.accept(message(i)) for i in range(50)))
    ids = [r.inbox_id for r in results]
    assert len(set(ids)) == 50 and not any(r.duplicate for r in results)
    pending = await store.pending_inbox(limit=100)
    assert [row.id for row in pending] == sorted(ids)
    assert [row.id for row in await store.pending_inbox(limit=5)] == sorted(ids)[:5]


async def test_a_resend_with_the_same_key_is_the_same_message(store: Store) -> None:
    """A message with a known re-send key returns the first id, flagged duplicate."""
    first = await store.accept(message(1, "k1"))
    again = await store.accept(message(2, "k1"))
    assert (again.inbox_id, again.duplicate, first.duplicate) == (first.inbox_id, True, False)
    assert len(await store.pending_inbox()) == 1


async def test_the_accepted_message_comes_back_intact(store: Store) -> None:
    """Envelope, mailbox, channel, bytes and time are returned as accepted."""
    sent = message(7)
    accepted = await store.accept(sent)
    [row] = await store.pending_inbox()
    assert (row.id, row.channel, row.mailbox, row.mail_from, row.rcpt_to, row.raw) == (
        accepted.inbox_id,
        sent.channel,
        sent.mailbox,
        sent.mail_from,
        sent.rcpt_to,
        sent.raw,
    )
    assert row.received_at == sent.received_at


async def test_accepted_messages_survive_a_restart(backend: Backend, tmp_path: Path) -> None:
    """What accept returned for is still there after the store is closed and reopened."""
    first = backend(tmp_path)
    await first.open()
    accepted = await first.accept(message(1))
    await first.close()
    second = backend(tmp_path)
    await second.open()
    try:
        assert [row.id for row in await second.pending_inbox()] == [accepted.inbox_id]
    finally:
        await second.close()


async def test_a_closed_store_refuses_messages(backend: Backend, tmp_path: Path) -> None:
    """After close, accept raises StoreClosed instead of pretending to keep the message."""
    s = backend(tmp_path)
    await s.open()
    await s.close()
    with pytest.raises(StoreClosed):
        await s.accept(message(1))
