"""Store contract, batches: what one message of a batch changes is seen by the next (new
incident numbers, open alerts), a write the database refuses fails only its own message,
the inbox is handed out within a byte budget, and a round of outcomes is settled at once."""

from __future__ import annotations

from collections.abc import Callable

from gateway.deliver.timeline import worded
from gateway.domain import (
    Attempt,
    NewIncident,
    OutboxKind,
    OutboxSpec,
    Plan,
    PlanContext,
    TimelineEvent,
)
from gateway.ports import Store
from rules.types import Mailbox, Priority
from tests.store_contract.builders import NOW, PAGE, message, opened, work


def _alert(title: str) -> Plan:
    return Plan(
        outcome="alert opened",
        new_incident=NewIncident(
            title, Priority.P1, Mailbox.EMERGENCY, None, ("alert",), None, None, None, ("alert",)
        ),
    )


async def test_incidents_opened_in_one_batch_get_the_numbers_their_plans_saw(
    store: Store,
) -> None:
    """Three messages of one batch each open an incident: each planner is told the number its
    incident then gets, and each incident is stored under it."""
    ids = [(await store.accept(message(n))).inbox_id for n in range(3)]
    seen: list[int] = []

    def make(title: str) -> Callable[[PlanContext], Plan]:
        def plan(ctx: PlanContext) -> Plan:
            seen.append(ctx.next_id)
            return opened(title, f"<{title}@x>")

        return plan

    await store.process([work(i, make(f"t{n}")) for n, i in enumerate(ids)], NOW)
    assert seen == [1, 2, 3]
    for n in range(3):
        incident = await store.incident(n + 1)
        assert incident is not None and incident.title == f"t{n}"
        assert [r.message_ids for r in incident.reporters] == [(f"<t{n}@x>",)]


async def test_a_write_the_database_refuses_fails_only_its_message(store: Store) -> None:
    """A plan whose timeline line names an incident that does not exist is refused by the
    database: that message falls back, the messages before and after it are applied."""
    ids = [(await store.accept(message(n))).inbox_id for n in range(3)]
    orphan = Plan(
        outcome="noted",
        incident_id=999,
        timeline=(TimelineEvent(NOW, "note", "x", "a line for nobody"),),
    )
    batch = [
        work(ids[0], lambda _c: opened("one", "<1@x>")),
        work(ids[1], lambda _c: orphan),
        work(ids[2], lambda _c: opened("three", "<3@x>")),
    ]
    plans = await store.process(batch, NOW)
    assert plans[0].outcome == "opened" and plans[2].outcome == "opened"
    assert plans[1].outcome.startswith("unreadable: processing failed:")
    assert [(i.id, i.title) for i in await store.incidents()] == [(2, "three"), (1, "one")]
    assert await store.pending_inbox() == []


async def test_an_alert_opened_earlier_in_a_batch_is_seen_by_the_next_message(
    store: Store,
) -> None:
    """The open alert incidents a planner is shown include one opened by an earlier message
    of the same batch (and not before it was opened)."""
    ids = [(await store.accept(message(n))).inbox_id for n in range(4)]
    shown: list[list[int]] = []

    def look(plan: Plan) -> Callable[[PlanContext], Plan]:
        def make(ctx: PlanContext) -> Plan:
            assert ctx.alert_ids is not None
            shown.append(ctx.alert_ids())
            return plan

        return make

    batch = [
        work(ids[0], look(Plan(outcome="ignored"))),
        work(ids[1], look(_alert("Disk full"))),
        work(ids[2], look(Plan(outcome="ignored"))),
        work(ids[3], look(_alert("CPU high"))),
    ]
    await store.process(batch, NOW)
    assert shown == [[], [], [1], [1]]


async def test_the_inbox_is_handed_out_within_a_byte_budget(store: Store) -> None:
    """With a byte budget, the oldest messages that fit in it are handed out, but always
    at least one; without, up to the limit."""
    for n in range(3):
        await store.accept(message(n))
    size = len(message(0).raw)
    assert len(await store.pending_inbox(10, max_bytes=size)) == 1
    assert len(await store.pending_inbox(10, max_bytes=2 * size + 1)) == 2
    assert len(await store.pending_inbox(10, max_bytes=1)) == 1
    assert len(await store.pending_inbox(2)) == 2
    assert [r.raw for r in await store.pending_inbox(10, max_bytes=10 * size)] == [
        message(n).raw for n in range(3)
    ]


async def test_a_round_of_mixed_outcomes_is_settled_at_once(store: Store) -> None:
    """One settle records a delivery (with its effect), a retry, a parked entry and a dead
    letter, each on its own entry."""
    accepted = await store.accept(message(1))
    pages = tuple(
        OutboxSpec(OutboxKind.PAGE_TRIGGER, {**PAGE, "dedup_key": f"INC-1-{n}"}) for n in range(4)
    )
    await store.process([work(accepted.inbox_id, lambda _c: opened(outbox=pages))], NOW)
    entries = sorted(await store.due_outbox(NOW, 10), key=lambda e: e.id)
    assert len(entries) == 4
    later = NOW.replace(hour=11)
    attempts = [
        Attempt(entries[0], result={"provider": "pagerduty"}),
        Attempt(entries[1], error="503", next_at=later),
        Attempt(entries[2], error="link down", parked=True),
        Attempt(entries[3], error="400", dead=True),
    ]
    await store.settle_outbox([worded(a, NOW) for a in attempts], NOW)
    rows = {r["id"]: r for r in await store.outbox_rows()}
    states = [(rows[e.id]["state"], rows[e.id]["attempts"]) for e in entries]
    assert states == [("done", 1), ("pending", 1), ("pending", 0), ("dead", 1)]
    assert rows[entries[1].id]["last_error"] == "503"
    assert rows[entries[2].id]["last_error"] == "link down"
    incident = await store.incident(1)
    assert incident is not None and incident.pages_sent == 1
    kinds = [e.kind for e in incident.timeline]
    assert kinds.count("paged") == 1 and kinds.count("dead_lettered") == 1
    due = [e.id for e in await store.due_outbox(NOW, 10)]
    assert due == [entries[2].id]  # the parked one keeps its place; the retry waits
