"""Store contract, retention: the self-test's rows go once they are old; reports, incidents
and whatever is still pending stay."""

from __future__ import annotations

from datetime import timedelta

from gateway.domain import CANARY_OUTCOME, Attempt, OutboxKind, OutboxSpec, Plan
from gateway.ports import Store
from tests.store_contract.builders import NOW, message, work


def _canary(n: int) -> Plan:
    return Plan(outcome=CANARY_OUTCOME, outbox=(OutboxSpec(OutboxKind.CANARY, {"nonce": f"n{n}"}),))


async def test_old_canaries_are_pruned_and_nothing_else(store: Store) -> None:
    """Three processed canaries (two delivered, one still in the outbox) next to a report
    that opened an incident: pruning with a cut-off after them removes the canaries' inbox
    rows and the delivered canaries' outbox rows only; their re-send keys are free again."""
    batch = []
    for n in (1, 2, 3):
        accepted = await store.accept(message(n, key=f"canary-{n}"))
        batch.append(work(accepted.inbox_id, lambda _c, n=n: _canary(n)))
    batch.append(work((await store.accept(message(9, key="report"))).inbox_id))
    await store.process(batch, NOW)
    due = await store.due_outbox(NOW, 10)
    delivered = [e for e in due if e.kind is OutboxKind.CANARY and e.payload["nonce"] != "n3"]
    await store.settle_outbox([Attempt(e, result={"canary": "ok"}) for e in delivered], NOW)

    assert await store.prune_canaries(NOW - timedelta(seconds=1)) == 0
    assert await store.prune_canaries(NOW + timedelta(days=1)) == 3

    left = sorted((r["kind"], r["state"]) for r in await store.outbox_rows())
    assert left == [("canary", "pending"), ("page.trigger", "pending")]
    assert (await store.accept(message(1, key="canary-1"))).duplicate is False
    assert (await store.accept(message(9, key="report"))).duplicate is True
    assert await store.incident(1) is not None
    assert await store.prune_canaries(NOW + timedelta(days=1)) == 0
