"""Store contract, links and limits: entries of a link that is down are left out and a
parked attempt counts none; held mail waits apart; the inbox is read in bounded batches
with each message's client; a failed plan is rescued before the plain fallback; automatic
answers are counted per address; the open alert incidents are found by their flag."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from gateway.domain import Attempt, Plan, PlanContext, Work
from gateway.ports import Store
from tests.store_contract.builders import NOW, message, opened, work


async def _one_page(store: Store) -> None:
    await store.process([work((await store.accept(message(1))).inbox_id)], NOW)


async def test_entries_of_a_link_that_is_down_are_left_out(store: Store) -> None:
    """due_outbox and next_outbox_due skip the kinds given; others still see the entry."""
    await _one_page(store)
    assert await store.due_outbox(NOW, 10, skip={"page.trigger"}) == []
    assert await store.next_outbox_due(skip={"page.trigger"}) is None
    assert await store.next_outbox_due(skip={"mail.send"}) == NOW
    [entry] = await store.due_outbox(NOW, 10, skip={"mail.send"})
    assert entry.kind == "page.trigger"


async def test_a_parked_attempt_counts_none_and_keeps_its_place(store: Store) -> None:
    """A parked entry stays pending, due as before, with no attempt counted and its error
    kept for operators; it is never dead-lettered for it."""
    await _one_page(store)
    [entry] = await store.due_outbox(NOW, 10)
    later = NOW + timedelta(seconds=5)
    await store.settle_outbox([Attempt(entry, error="connection refused", parked=True)], later)
    [again] = await store.due_outbox(later, 10)
    assert (again.id, again.attempts) == (entry.id, 0)
    assert await store.next_outbox_due() == NOW
    [row] = await store.outbox_rows("pending")
    assert (row["attempts"], row["last_error"]) == (0, "connection refused")
    stats = await store.queue_stats()
    assert (stats.outbox_pending, stats.outbox_dead, stats.outbox_retrying) == (1, 0, {})


async def test_held_mail_waits_apart_with_its_client(store: Store) -> None:
    """A message keeps its connecting client; a held plan leaves it out of the pending
    inbox and counts it as held."""
    accepted = await store.accept(replace(message(1), client="192.0.2.7"))
    [row] = await store.pending_inbox()
    assert (row.id, row.client, row.released) == (accepted.inbox_id, "192.0.2.7", False)
    await store.process(
        [work(accepted.inbox_id, lambda _c: Plan(outcome="held: rate limit", held=True))], NOW
    )
    assert await store.pending_inbox() == []
    stats = await store.queue_stats()
    assert (stats.inbox_pending, stats.inbox_held) == (0, 1)


async def test_the_pending_inbox_is_read_in_batches_bounded_in_bytes(store: Store) -> None:
    """With max_bytes only as many messages as fit are read, and always at least one."""
    for n in range(3):
        await store.accept(message(n))
    size = len(message(0).raw)
    assert len(await store.pending_inbox(10, max_bytes=2 * size)) == 2
    assert len(await store.pending_inbox(10, max_bytes=1)) == 1
    assert len(await store.pending_inbox(10)) == 3


async def test_a_failed_plan_is_rescued_before_the_plain_fallback(store: Store) -> None:
    """A rescue plan (seeing the store) replaces a plan that raised; when the rescue raises
    too, the plain fallback is applied."""

    def broken(_ctx: PlanContext) -> Plan:
        raise ValueError("a bug")

    def rescue(problem: str, ctx: PlanContext) -> Plan:
        assert ctx.next_id == 1 and "ValueError" in problem
        return opened(title="Unreadable emergency mail")

    def no_rescue(_problem: str, _ctx: PlanContext) -> Plan:
        raise RuntimeError("another bug")

    first = await store.accept(message(1))
    second = await store.accept(message(2))
    base = work(first.inbox_id, broken)
    [saved] = await store.process([replace(base, rescue=rescue)], NOW)
    assert saved.outcome == "opened"
    [fell] = await store.process(
        [Work(second.inbox_id, None, broken, base.fallback, no_rescue)], NOW
    )
    assert fell.outcome == "unreadable: processing failed: ValueError"
    assert [i.title for i in await store.incidents()] == ["Unreadable emergency mail"]


async def test_automatic_answers_are_counted_per_address(store: Store) -> None:
    """Each answer that fits is recorded, across messages, whatever the address's case;
    past the limit none fits until the window has passed."""
    fits: list[bool] = []

    def answer(address: str, at_s: float) -> Work:
        def plan(ctx: PlanContext) -> Plan:
            assert ctx.answers is not None
            fits.append(ctx.answers(address, NOW + timedelta(seconds=at_s), 3600.0, 2))
            return Plan(outcome="answered")

        return work(0, plan)

    for n, (address, at_s) in enumerate(
        [
            ("a@x.example", 0),
            ("A@x.example", 1),
            ("a@x.example", 2),
            ("b@x.example", 3),
            ("a@x.example", 3601),
        ]
    ):
        inbox_id = (await store.accept(message(n))).inbox_id
        await store.process([replace(answer(address, at_s), inbox_id=inbox_id)], NOW)
    assert fits == [True, True, False, True, True]


async def test_the_open_alert_incidents_are_found_by_their_flag(store: Store) -> None:
    """alert_ids lists the open incidents flagged "alert", newest first, and no others."""

    def alert(title: str) -> Plan:
        plan = opened(title=title, msgid=f"<{title}@x>")
        assert plan.new_incident is not None
        return replace(plan, new_incident=replace(plan.new_incident, flags=("alert",)))

    seen: list[list[int]] = []

    def look(ctx: PlanContext) -> Plan:
        assert ctx.alert_ids is not None
        seen.append(ctx.alert_ids())
        return Plan(outcome="looked")

    for n, plan in enumerate([alert("a"), opened(title="report", msgid="<r@x>"), alert("b")]):
        await store.process(
            [work((await store.accept(message(n))).inbox_id, lambda _c, p=plan: p)], NOW
        )
    await store.process([work((await store.accept(message(9))).inbox_id, look)], NOW)
    assert seen == [[3, 1]]
