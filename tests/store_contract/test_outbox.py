"""Store contract, outbox: a delivery is recorded exactly once with its effect; failures
are rescheduled; dead letters stay dead; what the egress handlers read back."""

from __future__ import annotations

from datetime import timedelta

from gateway.deliver.timeline import worded
from gateway.domain import (
    Attempt,
    OutboxKind,
    OutboxSpec,
    Plan,
    PlanContext,
    ThreadKeys,
    chat_key,
)
from gateway.ports import Store
from tests.store_contract.builders import NOW, message, opened, work


async def _one_incident(store: Store, *outbox: OutboxSpec) -> None:
    plan = opened(outbox=outbox) if outbox else opened()
    await store.process([work((await store.accept(message(1))).inbox_id, lambda _c: plan)], NOW)


async def test_a_page_is_recorded_once(store: Store) -> None:
    """Completing a page twice records one page and one timeline line; it is not due again."""
    await _one_incident(store)
    [entry] = await store.due_outbox(NOW, 10)
    await store.settle_outbox([worded(Attempt(entry, result={"provider": "local"}), NOW)], NOW)
    await store.settle_outbox([worded(Attempt(entry, result={"provider": "local"}), NOW)], NOW)
    incident = await store.incident(1)
    assert incident is not None and incident.pages_sent == 1
    assert [e.kind for e in incident.timeline].count("paged") == 1
    assert await store.due_outbox(NOW + timedelta(days=1), 10) == []
    assert await store.next_outbox_due() is None


async def test_a_failure_is_retried_then_dead_lettered(store: Store) -> None:
    """A failed attempt is due again at its retry time; a dead one never is, and is counted."""
    await _one_incident(store)
    [entry] = await store.due_outbox(NOW, 10)
    retry_at = NOW + timedelta(seconds=30)
    await store.settle_outbox([Attempt(entry, error="503", next_at=retry_at)], NOW)
    assert await store.due_outbox(NOW, 10) == []
    assert await store.next_outbox_due() == retry_at
    [again] = await store.due_outbox(retry_at, 10)
    assert again.attempts == 1
    await store.settle_outbox([worded(Attempt(again, error="400", dead=True), retry_at)], retry_at)
    assert await store.due_outbox(NOW + timedelta(days=1), 10) == []
    [row] = await store.outbox_rows("dead")
    assert (row["last_error"], row["attempts"], row["kind"]) == ("400", 2, "page.trigger")
    stats = await store.queue_stats()
    assert (stats.outbox_pending, stats.outbox_dead) == (0, 1)
    incident = await store.incident(1)
    assert incident is not None and "dead_lettered" in [e.kind for e in incident.timeline]


async def test_a_dead_entry_may_raise_an_alert(store: Store) -> None:
    """The alert a dead entry carries is queued in the same step."""
    await _one_incident(store)
    [entry] = await store.due_outbox(NOW, 10)
    alert = OutboxSpec(
        OutboxKind.CHAT_SEND, {"room_id": "!ops", "body": "dead", "purpose": "alert"}
    )
    await store.settle_outbox([Attempt(entry, error="400", dead=True, alert=alert)], NOW)
    [queued] = await store.due_outbox(NOW, 10)
    assert queued.kind is OutboxKind.CHAT_SEND and queued.payload["body"] == "dead"


async def test_an_announcement_roots_the_chat_thread(store: Store) -> None:
    """A delivered announcement records the chat root, and replies in it find the incident."""
    await _one_incident(
        store, OutboxSpec(OutboxKind.CHAT_ANNOUNCE, {"room_id": "!r", "body": "INC-1"})
    )
    assert await store.chat_root(1) is None
    [entry] = await store.due_outbox(NOW, 10)
    await store.settle_outbox([Attempt(entry, result={"event_id": "$ev1"})], NOW)
    assert await store.chat_root(1) == "$ev1"
    seen: list[int | None] = []

    def make(ctx: PlanContext) -> Plan:
        seen.append(ctx.thread.id if ctx.thread else None)
        return Plan(outcome="replied")

    row = await store.accept(message(2))
    await store.process([work(row.inbox_id, make, ThreadKeys((chat_key("$ev1"),)))], NOW)
    assert seen == [1]


async def test_a_created_ticket_is_read_back(store: Store) -> None:
    """A delivered ticket creation is recorded once and read back by the egress handlers."""
    spec = OutboxSpec(
        OutboxKind.TICKET_CREATE,
        {
            "reference": "INC-1",
            "title": "Site down",
            "priority": "P1",
            "requester": "a@x",
            "body": "b",
        },
    )
    await _one_incident(store, spec)
    assert await store.ticket(1) is None and await store.statuspage(1) is None
    [entry] = await store.due_outbox(NOW, 10)
    result = {"backend": "zendesk", "external_id": "42", "link": "https://t.example/42"}
    await store.settle_outbox([Attempt(entry, result=result)], NOW)
    ticket = await store.ticket(1)
    assert ticket is not None
    assert (ticket.backend, ticket.external_id, ticket.link, ticket.status) == (
        "zendesk",
        "42",
        "https://t.example/42",
        "open",
    )


def _follow_up(kind: OutboxKind, payload: dict[str, object]) -> Plan:
    """A Plan for incident 1 that queues one more entry."""
    return Plan(outcome="updated", incident_id=1, outbox=(OutboxSpec(kind, payload),))


async def _queue(store: Store, n: int, plan: Plan) -> None:
    inbox_id = (await store.accept(message(n))).inbox_id
    await store.process([work(inbox_id, lambda _c: plan)], NOW)


async def test_an_acknowledgement_waits_for_its_trigger_in_retry(store: Store) -> None:
    """A trigger waiting on a retry delay holds back its page's acknowledgement (and
    nothing else): the acknowledgement must not overtake it."""
    await _one_incident(store)
    [trigger] = await store.due_outbox(NOW, 10)
    retry_at = NOW + timedelta(seconds=30)
    await store.settle_outbox([Attempt(trigger, error="429", next_at=retry_at)], NOW)
    await _queue(store, 2, _follow_up(OutboxKind.PAGE_ACKNOWLEDGE, {"dedup_key": "INC-1"}))
    await _queue(store, 3, _follow_up(OutboxKind.PAGE_ACKNOWLEDGE, {"dedup_key": "INC-9"}))
    due = await store.due_outbox(NOW, 10)
    assert [(e.kind, e.payload["dedup_key"]) for e in due] == [
        (OutboxKind.PAGE_ACKNOWLEDGE, "INC-9")
    ]
    assert await store.next_outbox_due() == NOW
    await store.settle_outbox([Attempt(due[0], result={"provider": "local"})], NOW)
    assert await store.next_outbox_due() == retry_at  # not "now": nothing else may go
    [again] = await store.due_outbox(retry_at, 10)
    assert again.kind is OutboxKind.PAGE_TRIGGER
    await store.settle_outbox([Attempt(again, result={"provider": "local"})], retry_at)
    [ack] = await store.due_outbox(retry_at, 10)
    assert (ack.kind, ack.payload["dedup_key"]) == (OutboxKind.PAGE_ACKNOWLEDGE, "INC-1")


async def test_a_chat_post_waits_for_the_earlier_post_in_its_room(store: Store) -> None:
    """Posts in one room keep their order through a retry; another room is not held up."""
    await _one_incident(
        store, OutboxSpec(OutboxKind.CHAT_SEND, {"room_id": "!a", "body": "1", "purpose": "update"})
    )
    [first] = await store.due_outbox(NOW, 10)
    retry_at = NOW + timedelta(seconds=5)
    await store.settle_outbox([Attempt(first, error="502", next_at=retry_at)], NOW)
    await _queue(
        store,
        2,
        _follow_up(OutboxKind.CHAT_SEND, {"room_id": "!a", "body": "2", "purpose": "update"}),
    )
    await _queue(
        store,
        3,
        _follow_up(OutboxKind.CHAT_SEND, {"room_id": "!b", "body": "3", "purpose": "update"}),
    )
    assert [e.payload["body"] for e in await store.due_outbox(NOW, 10)] == ["3"]
    due = await store.due_outbox(retry_at, 10)
    assert [e.payload["body"] for e in due] == ["3", "1"]
    await store.settle_outbox([Attempt(e, result={"event_id": "$e"}) for e in due], retry_at)
    assert [e.payload["body"] for e in await store.due_outbox(retry_at, 10)] == ["2"]


async def test_a_dead_trigger_does_not_hold_back_its_acknowledgement(store: Store) -> None:
    """Only pending entries hold a lane: after a dead letter the rest still go out."""
    await _one_incident(store)
    [trigger] = await store.due_outbox(NOW, 10)
    await store.settle_outbox([Attempt(trigger, error="400", dead=True)], NOW)
    await _queue(store, 2, _follow_up(OutboxKind.PAGE_ACKNOWLEDGE, {"dedup_key": "INC-1"}))
    assert [e.kind for e in await store.due_outbox(NOW, 10)] == [OutboxKind.PAGE_ACKNOWLEDGE]
