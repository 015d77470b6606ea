"""Store contract, firing SLA items: an item whose Plan fails part-way through being applied
leaves nothing behind (each incident's items fire in a savepoint of the round's
transaction), so it fires again, once, when the incident is retried."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from functools import partial

from gateway.domain import Due, Incident
from gateway.plan.sla import incident_items, next_due_by_incident
from gateway.ports import Store
from rules.types import Priority
from tests.store_contract.sla_history import BOOK, MONDAY, SETTINGS, apply, opening


async def test_an_item_failing_half_applied_is_undone_and_fires_again(store: Store) -> None:
    """When applying incident 1's item raises after its reminder row and its outbox
    entries were written, those writes are undone, incident 2 still fires, and at the
    retry incident 1's item fires (its key was not kept) with its entries queued once."""
    for sender in ("a@x.example", "b@x.example"):
        await apply(store, opening(Priority.P1, MONDAY, sender), MONDAY)
    now = MONDAY + timedelta(minutes=15)
    queued_before = len(await store.outbox_rows())

    def broken(incidents: Sequence[Incident]) -> list[Due]:
        items = incident_items(incidents, now, BOOK, SETTINGS)
        # Not a column that can change: apply_plan raises after queueing the item's entries.
        return [
            replace(d, plan=replace(d.plan, changes={"no_such_column": 1}))
            if d.incident_id == 1
            else d
            for d in items
        ]

    def working(incidents: Sequence[Incident]) -> list[Due]:
        return incident_items(incidents, later, BOOK, SETTINGS)

    fired, _ = await store.fire_sla(
        broken, partial(next_due_by_incident, now=now, book=BOOK, settings=SETTINGS), now, 10
    )
    assert [(d.incident_id, d.kind) for d in fired] == [(2, "respond.soon")]
    assert all(d.plan.outbox for d in fired)  # the failed item had entries to queue too
    second_queued = len(await store.outbox_rows())
    assert second_queued == queued_before + len(fired[0].plan.outbox)

    later = now + timedelta(minutes=1)
    fired, _ = await store.fire_sla(
        working, partial(next_due_by_incident, now=later, book=BOOK, settings=SETTINGS), later, 10
    )
    assert [(d.incident_id, d.kind) for d in fired] == [(1, "respond.soon")]
    assert len(await store.outbox_rows()) == second_queued + len(fired[0].plan.outbox)
