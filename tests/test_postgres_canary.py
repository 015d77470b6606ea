"""The self-test on several nodes: any node's outbox may claim a canary's entry, so the
node that sent it also looks in the shared database; a canary another node delivered
counts as through, and one nobody delivered still fails."""

from __future__ import annotations

import asyncio
from email.parser import BytesParser

from gateway.domain import Attempt, Channel, NewMessage, Plan, Work
from gateway.run.canary import CanaryMonitor, recogniser
from gateway.store.postgres.store import PostgresStore
from rules.types import Mailbox
from tests.peers.postgres import PostgresServer
from tests.store_contract.builders import NOW

KEY = b"k" * 32


async def _other_node_delivers(store: PostgresStore) -> None:
    """Node b: the inbox worker plans the canary, its outbox claims and delivers it."""
    recognise = recogniser(KEY)
    for row in await store.pending_inbox():
        plan = recognise(row)
        assert plan is not None

        def fixed(_ctx: object, p: Plan = plan) -> Plan:
            return p

        await store.process([Work(row.id, None, fixed, lambda _p: Plan(outcome="?"))], NOW)
    for entry in await store.due_outbox(NOW, 10):
        result = {"canary": entry.payload["nonce"]}
        await store.settle_outbox([Attempt(entry, result=result)], NOW)


async def test_a_canary_another_node_delivered_counts(postgres: PostgresServer) -> None:
    """Node a's monitor sees its canary through although node b's outbox delivered it;
    without looking in the database it would have failed."""
    dsn = postgres.new_database()
    a, b = PostgresStore(dsn, node="a"), PostgresStore(dsn, node="b")
    await a.open()
    await b.open()
    delivered: list[asyncio.Task[None]] = []

    async def submit(mail_from: str, rcpt_to: str, raw: bytes) -> None:
        assert BytesParser().parsebytes(raw)["X-Chatops-Canary"]
        await a.accept(
            NewMessage(Channel.EMAIL, Mailbox.SUPPORT, mail_from, (rcpt_to,), raw, None, NOW)
        )
        delivered.append(asyncio.create_task(_other_node_delivers(b)))

    try:
        blind = CanaryMonitor(KEY, submit, "gw@localhost", "support@localhost", 60, 1.0)
        assert await blind.once() is False
        await asyncio.gather(*delivered)
        seeing = CanaryMonitor(
            KEY,
            submit,
            "gw@localhost",
            "support@localhost",
            60,
            60.0,
            elsewhere=a.canary_through,
            poll_s=0.05,
        )
        assert await seeing.once() is True and seeing.state == "ok"
        assert await a.canary_through("0" * 32) is False
    finally:
        await asyncio.gather(*delivered)
        await a.close()
        await b.close()
