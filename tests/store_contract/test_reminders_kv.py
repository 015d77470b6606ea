"""Store contract, SLA reminders (each fired exactly once) and small persisted values."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from gateway.domain import Due, Incident, Plan, TimelineEvent
from gateway.ports import Store
from tests.store_contract.builders import NOW, message, work
from tests.store_contract.conftest import Backend

DUE_AT = NOW + timedelta(minutes=15)


def remind(incidents: Sequence[Incident]) -> list[Due]:
    """One reminder per open incident, due at DUE_AT."""
    return [
        Due(
            i.ref,
            i.id,
            "respond",
            DUE_AT,
            Plan(
                outcome="reminded",
                incident_id=i.id,
                timeline=(TimelineEvent(DUE_AT, "reminded", "gateway", "Reminder"),),
            ),
            "Reminder",
        )
        for i in incidents
    ]


def next_due(
    incidents: Sequence[Incident], fired: Mapping[int, Collection[tuple[str, datetime]]]
) -> dict[int, datetime | None]:
    """Look again in an hour at every incident still open."""
    return {i.id: NOW + timedelta(hours=1) if i.status != "resolved" else None for i in incidents}


async def test_a_reminder_fires_once(store: Store) -> None:
    """The same due item fired twice is applied once; the snapshot lists its key."""
    await store.process([work((await store.accept(message(1))).inbox_id)], NOW)
    fired, again_at = await store.fire_sla(remind, next_due, DUE_AT, 100)
    await store.replan_sla()
    refired, _ = await store.fire_sla(remind, next_due, DUE_AT, 100)
    assert [d.kind for d in fired] == ["respond"] and refired == []
    assert again_at == NOW + timedelta(hours=1)
    incident = await store.incident(1)
    assert incident is not None and [e.kind for e in incident.timeline].count("reminded") == 1
    open_now, keys = await store.sla_snapshot()
    assert [i.id for i in open_now] == [1]
    assert [(s, k) for s, k, _ in keys] == [("INC-1", "respond")]


async def test_small_values_persist(backend: Backend, tmp_path: Path) -> None:
    """kv_set overwrites, kv_get reads it back (None when never set), across a restart."""
    first = backend(tmp_path)
    await first.open()
    assert await first.kv_get("imap.cursor") is None
    await first.kv_set("imap.cursor", "1")
    await first.kv_set("imap.cursor", "2")
    await first.close()
    second = backend(tmp_path)
    await second.open()
    try:
        assert await second.kv_get("imap.cursor") == "2"
    finally:
        await second.close()
