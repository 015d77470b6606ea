"""Store contract, the SLA index: each open incident's next due time, marked for re-planning
by every change in the change's own transaction, selected by the round when due, and
agreeing with the full scan over every open incident that it replaced."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from gateway.domain import Due, Incident, Plan, TimelineEvent
from gateway.plan.sla import digest_items, digest_window, incident_items, next_due_by_incident
from gateway.ports import Store
from gateway.run.scheduler import Scheduler
from rules.types import Priority
from tests.conftest import ManualClock
from tests.store_contract.conftest import Backend
from tests.store_contract.sla_history import (
    BOOK,
    MONDAY,
    SETTINGS,
    apply,
    changing,
    event_plan,
    full_scan,
    opening,
)

WITH_DIGEST = replace(SETTINGS, digest=True)


def scheduler(store: Store, clock: ManualClock, batch: int = 256) -> Scheduler:
    """The real scheduler on the store under test."""
    return Scheduler(store, BOOK, SETTINGS, lambda _fired: None, clock, batch=batch)


def kinds(fired: list[Due]) -> list[str]:
    return sorted(d.kind for d in fired)


async def test_changes_mark_and_rounds_index(store: Store) -> None:
    """A new incident is marked; the round indexes its first item; an acknowledgement
    marks it again and the next round indexes the next-update warning instead; a note
    (no field changed) leaves the time as it was."""
    await apply(store, opening(Priority.P1, MONDAY), MONDAY)
    assert await store.sla_schedule() == {1: None}
    s = scheduler(store, ManualClock(MONDAY))
    assert await s.fire() == ([], MONDAY + timedelta(minutes=15))
    assert await store.sla_schedule() == {1: MONDAY + timedelta(minutes=15)}
    await apply(store, changing(1, MONDAY, status="acknowledged"), MONDAY)
    assert await store.sla_schedule() == {1: None}
    assert await s.fire() == ([], MONDAY + timedelta(minutes=50))
    await apply(store, event_plan("note", 1, Priority.P1, MONDAY), MONDAY)
    assert await store.sla_schedule() == {1: MONDAY + timedelta(minutes=50)}


async def test_a_round_fires_what_is_due_once_and_indexes_what_is_next(store: Store) -> None:
    """Twenty minutes after a P1's report: the overdue reminder and the first escalation
    step fire once; the index then holds the second step's time."""
    await apply(store, opening(Priority.P1, MONDAY), MONDAY)
    clock = ManualClock(MONDAY + timedelta(minutes=20))
    fired, next_at = await scheduler(store, clock).fire()
    assert kinds(fired) == ["escalate.1", "respond.overdue"]
    assert next_at == MONDAY + timedelta(minutes=35)
    again, _ = await scheduler(store, clock).fire()  # a restart re-plans: nothing twice
    assert again == [] and await store.sla_schedule() == {1: next_at}


async def test_resolved_and_merged_incidents_leave_the_index(store: Store) -> None:
    """A resolved incident and one merged into another are marked by the change and
    dropped from the index by the next round; the incident they joined stays."""
    for sender in ("a@x.example", "b@x.example", "c@x.example"):
        await apply(store, opening(Priority.P2, MONDAY, sender), MONDAY)
    s = scheduler(store, ManualClock(MONDAY))
    await s.fire()
    await apply(store, changing(1, MONDAY, status="resolved"), MONDAY)
    merge = Plan(
        outcome="merged",
        incident_id=3,
        merge_source=2,
        timeline=(TimelineEvent(MONDAY, "merged", "@eng:x", "merged INC-2"),),
    )
    await apply(store, merge, MONDAY)
    assert await store.sla_schedule() == {1: None, 2: None, 3: None}
    await s.fire()
    assert set(await store.sla_schedule()) == {3}


async def test_replan_marks_every_open_incident(store: Store) -> None:
    """Re-planning (at start, at a rulebook reload) marks each open incident and only
    those, whatever the index held before."""
    for sender in ("a@x.example", "b@x.example"):
        await apply(store, opening(Priority.P3, MONDAY, sender), MONDAY)
    await apply(store, changing(2, MONDAY, status="resolved"), MONDAY)
    await scheduler(store, ManualClock(MONDAY)).fire()
    assert set(await store.sla_schedule()) == {1}
    assert await store.replan_sla() == 1
    assert await store.sla_schedule() == {1: None}


async def test_the_digest_fires_once_with_the_incidents_of_its_window(store: Store) -> None:
    """At Monday's opening the digest lists the open incidents reported since Friday's
    close (not Friday's in-hours one, not a resolved one), once."""
    friday, sunday = MONDAY - timedelta(days=3, hours=1), MONDAY - timedelta(hours=30)
    await apply(store, opening(Priority.P3, friday, "a@x.example"), friday)
    await apply(store, opening(Priority.P3, sunday, "b@x.example"), sunday)
    await apply(store, opening(Priority.P4, sunday, "c@x.example"), sunday)
    await apply(store, changing(3, sunday, status="resolved"), sunday)
    at = MONDAY - timedelta(minutes=55)  # 09:05
    window = digest_window(at, BOOK, WITH_DIGEST)
    assert window is not None
    plan = partial(digest_items, now=at, book=BOOK, settings=WITH_DIGEST)
    [item] = await store.fire_digest(plan, window[1], window[0], at)
    assert "INC-2" in item.text and "INC-1" not in item.text and "INC-3" not in item.text
    assert await store.fire_digest(plan, window[1], window[0], at) == []


EVENTS = st.one_of(
    st.tuples(st.just("open"), st.just(0), st.sampled_from(list(Priority))),
    st.tuples(
        st.sampled_from(["ack", "update", "sev", "resolve", "reopen", "note"]),
        st.integers(1, 4),
        st.sampled_from(list(Priority)),
    ),
)
STEPS = st.one_of(st.integers(0, 30), st.integers(30, 900))


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    start_minutes=st.integers(0, 7 * 24 * 60),
    history=st.lists(st.tuples(STEPS, EVENTS), min_size=1, max_size=12),
)
def test_the_index_agrees_with_the_full_scan(
    backend: Backend,
    tmp_path: Path,
    start_minutes: int,
    history: list[tuple[int, tuple[str, int, Priority]]],
) -> None:
    """For a random history written through the store, at every step the incidents the
    index selects (their time has come, or a change marked them) cover what the full scan
    would act on, a current time is selected exactly then, and the round fires exactly
    the items the full scan would."""
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    asyncio.run(_agree(backend(folder), MONDAY + timedelta(minutes=start_minutes), history))


async def _agree(
    store: Store, start: datetime, history: list[tuple[int, tuple[str, int, Priority]]]
) -> None:
    await store.open()
    try:
        clock = ManualClock(start)
        s = scheduler(store, clock, batch=2)  # small batches: rounds run until caught up
        opened = 0
        for minutes, (name, iid, priority) in history:
            now = clock.advance(minutes=minutes)
            if name == "open":
                opened += 1
                await apply(store, opening(priority, now, f"r{opened}@x.example"), now)
            elif iid <= opened:
                await apply(store, event_plan(name, iid, priority, now), now)
            scan = await full_scan(store, now)
            schedule = await store.sla_schedule()
            current = {i for i, at in schedule.items() if at is not None and at <= now}
            marked = {i for i, at in schedule.items() if at is None}
            acted = {i for i, _, _ in scan}
            assert acted <= current | marked
            assert current == acted - marked
            fired: set[tuple[int | None, str, datetime]] = set()
            while True:
                items, next_at = await s.fire()
                fired |= {(d.incident_id, d.kind, d.due_at) for d in items}
                if next_at is None or next_at > now:
                    break
            assert fired == scan
    finally:
        await store.close()


async def test_an_incident_that_trips_the_planner_holds_up_no_other(store: Store) -> None:
    """When planning one incident raises (a bug), the round still fires the others' items,
    logs the failure by reference (the error's type only) and tries that incident again a
    minute later."""
    for sender in ("a@x.example", "b@x.example"):
        await apply(store, opening(Priority.P1, MONDAY, sender), MONDAY)
    now = MONDAY + timedelta(minutes=15)

    def planner(incidents: Sequence[Incident]) -> list[Due]:
        if any(i.id == 1 for i in incidents):
            raise ValueError("tenant text that must not be logged")
        return incident_items(incidents, now, BOOK, SETTINGS)

    with capture_logs() as logs:
        fired, _ = await store.fire_sla(
            planner, partial(next_due_by_incident, now=now, book=BOOK, settings=SETTINGS), now, 10
        )
    assert [(d.incident_id, d.kind) for d in fired] == [(2, "respond.soon")]
    assert [(e["event"], e["incident"], e["error"]) for e in logs] == [
        ("sla.incident_failed", "INC-1", "ValueError")
    ]
    schedule = await store.sla_schedule()
    assert schedule[1] == now + timedelta(minutes=1)
    assert schedule[2] == MONDAY + timedelta(minutes=20)
