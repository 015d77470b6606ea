"""Store contract, processing: each message planned and applied once, a failing planner
falls back alone, and threads are found by the keys a message offers."""

from __future__ import annotations

from collections.abc import Callable

from gateway.domain import (
    Digest,
    OutboxKind,
    OutboxSpec,
    Plan,
    PlanContext,
    Status,
    ThreadKeys,
    TimelineEvent,
)
from gateway.ports import Store
from tests.store_contract.builders import NOW, PAGE, message, opened, work


async def test_processing_applies_a_plan_once(store: Store) -> None:
    """The planner runs once per message; processing it again changes nothing."""
    accepted = await store.accept(message(1))
    calls: list[int] = []

    def make(ctx: PlanContext) -> Plan:
        calls.append(ctx.next_id)
        return opened()

    [first] = await store.process([work(accepted.inbox_id, make)], NOW)
    [second] = await store.process([work(accepted.inbox_id, make)], NOW)
    assert calls == [1] and first.outcome == "opened" and second.outcome == "already processed"
    assert await store.pending_inbox() == []
    incident = await store.incident(1)
    assert incident is not None and incident.title == "Site down"
    assert incident.status is Status.OPEN and [e.kind for e in incident.timeline] == ["reported"]
    assert [r.address for r in incident.reporters] == ["alice@x.example"]


async def test_a_failing_planner_falls_back_alone(store: Store) -> None:
    """In a batch, a message whose planning raises is kept by its fallback; the others apply."""
    ids = [(await store.accept(message(n))).inbox_id for n in range(3)]

    def boom(_ctx: PlanContext) -> Plan:
        raise RuntimeError("bug")

    batch = [
        work(ids[0], lambda _c: opened("one", "<1@x>")),
        work(ids[1], boom),
        work(ids[2], lambda _c: opened("three", "<3@x>")),
    ]
    plans = await store.process(batch, NOW)
    assert [p.outcome for p in plans] == [
        "opened",
        "unreadable: processing failed: RuntimeError",
        "opened",
    ]
    assert [i.title for i in await store.incidents()] == ["three", "one"]


async def test_a_reply_finds_its_thread_by_message_id(store: Store) -> None:
    """A message whose keys name a Message-ID of an incident is planned with that thread."""
    first = await store.accept(message(1))
    await store.process([work(first.inbox_id)], NOW)
    reply = await store.accept(message(2))
    seen: list[int | None] = []

    def make(ctx: PlanContext) -> Plan:
        seen.append(ctx.thread.id if ctx.thread else None)
        return Plan(outcome="joined")

    await store.process([work(reply.inbox_id, make, ThreadKeys(("<a@x>",), "", "bob@y"))], NOW)
    assert seen == [1]


async def test_a_subject_tag_attaches_only_a_reporter(store: Store) -> None:
    """[INC-1] in the subject finds the incident for one of its reporters, not a stranger."""
    await store.process([work((await store.accept(message(1))).inbox_id)], NOW)
    seen: dict[str, int | None] = {}
    for n, sender in ((2, "alice@x.example"), (3, "mallory@evil.example")):
        row = await store.accept(message(n))

        def make(ctx: PlanContext, sender: str = sender) -> Plan:
            seen[sender] = ctx.thread.id if ctx.thread else None
            return Plan(outcome="seen")

        keys = ThreadKeys((), "Re: [INC-1] Site down", sender)
        await store.process([work(row.inbox_id, make, keys)], NOW)
    assert seen == {"alice@x.example": 1, "mallory@evil.example": None}


async def test_changes_and_resolution_are_applied(store: Store) -> None:
    """A Plan's changes update the incident; a resolved one leaves the open list."""
    await store.process([work((await store.accept(message(1))).inbox_id)], NOW)
    await store.process(
        [
            work(
                (await store.accept(message(2))).inbox_id,
                lambda _c: opened("Mail slow", "<b@x>", outbox=()),
            )
        ],
        NOW,
    )
    change = Plan(
        outcome="resolved",
        incident_id=1,
        changes={"status": "resolved", "resolved_at": NOW},
        timeline=(TimelineEvent(NOW, "resolved", "eng", "Fixed"),),
        outbox=(),
    )
    await store.process([work((await store.accept(message(3))).inbox_id, lambda _c: change)], NOW)
    assert [i.id for i in await store.incidents(open_only=True)] == [2]
    assert [i.id for i in await store.incidents()] == [2, 1]
    resolved = await store.incident(1)
    assert resolved is not None and resolved.status is Status.RESOLVED
    assert [e.kind for e in resolved.timeline] == ["reported", "resolved"]
    assert await store.incident(99) is None


async def test_an_outbox_entry_is_queued_with_its_plan(store: Store) -> None:
    """The Plan's outbox specs become pending entries due at once, tied to the incident."""
    await store.process([work((await store.accept(message(1))).inbox_id)], NOW)
    [entry] = await store.due_outbox(NOW, 10)
    assert (entry.kind, entry.incident_id, dict(entry.payload), entry.attempts) == (
        OutboxKind.PAGE_TRIGGER,
        1,
        PAGE,
        0,
    )
    stats = await store.queue_stats()
    assert (stats.inbox_pending, stats.outbox_pending, stats.outbox_dead) == (0, 1, 0)


async def test_a_digest_is_counted_for_the_messages_after_it(store: Store) -> None:
    """A Plan's digest is recorded when applied; later messages count it, never their own.
    The global count (`everyone`) counts untrusted buckets only (prefix `u:`)."""
    counts: list[tuple[int, int, int]] = []

    def make(bucket: str) -> Callable[[PlanContext], Plan]:
        def plan(ctx: PlanContext) -> Plan:
            assert ctx.history is not None
            seen = ctx.history(bucket, "h1", NOW, 3600.0, 100)
            counts.append((seen.from_sender, seen.same_content, seen.everyone))
            return Plan(outcome="joined INC-1", digest=Digest(bucket, "h1", NOW))

        return plan

    for n, bucket in enumerate(
        ["u:- s@x.example", "u:- s@x.example", "t:t@x.example", "u:- s@x.example", "t:t@x.example"]
    ):
        await store.process([work((await store.accept(message(n))).inbox_id, make(bucket))], NOW)
    assert counts == [(0, 0, 0), (1, 1, 1), (0, 0, 2), (2, 2, 2), (1, 1, 3)]


async def test_a_payload_its_kind_does_not_allow_falls_back(store: Store) -> None:
    """A Plan queuing a payload without its kind's required keys is not applied; the
    message is kept by its fallback and nothing is queued."""
    bad = opened(outbox=(OutboxSpec(OutboxKind.MAIL_SEND, {"purpose": "acknowledgement"}),))
    row = await store.accept(message(1))
    [plan] = await store.process([work(row.inbox_id, lambda _c: bad)], NOW)
    assert plan.outcome == "unreadable: processing failed: ValueError"
    assert await store.due_outbox(NOW, 10) == [] and await store.incidents() == []
