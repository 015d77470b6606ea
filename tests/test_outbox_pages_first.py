"""An outbox round takes the due pages first: a page never waits behind the tickets and
acknowledgements queued before it (a round ends only when its slowest entry is done)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.deliver.outbox import OutboxWorker, RetryPolicy
from gateway.domain import (
    NewIncident,
    OutboxEntry,
    OutboxKind,
    OutboxSpec,
    Plan,
    Priority,
)
from gateway.store.sqlite import SqliteStore
from rules.types import Mailbox
from tests.test_store import NOW, message, work


def _ticket(n: int) -> OutboxSpec:
    return OutboxSpec(
        OutboxKind.TICKET_CREATE,
        {
            "reference": f"INC-{n}",
            "title": f"[INC-{n}] Site down",
            "priority": "P1",
            "requester": "alice@tenant.example",
            "body": "All apps return 502.",
        },
    )


def _page(key: str) -> OutboxSpec:
    return OutboxSpec(
        OutboxKind.PAGE_TRIGGER,
        {"dedup_key": key, "summary": "P1", "severity": "critical", "source": "gw", "details": {}},
    )


def _opened(outbox: tuple[OutboxSpec, ...]) -> Plan:
    incident = NewIncident(
        "Site down", Priority.P1, Mailbox.EMERGENCY, None, ("why",), None, None, None
    )
    return Plan(outcome="opened", new_incident=incident, outbox=outbox)


async def test_pages_go_in_the_first_round_whatever_was_queued_before(tmp_path: Path) -> None:
    """Twelve tickets queued before two pages, four entries a round: the first round holds
    both pages (in their order), then the tickets follow oldest first."""
    store = SqliteStore(tmp_path / "gateway.sqlite3")
    await store.open()
    rounds: list[list[str]] = []
    current: list[str] = []

    async def deliver(entry: OutboxEntry) -> dict[str, Any]:
        current.append(str(entry.payload.get("dedup_key") or entry.payload.get("reference")))
        return {"provider": "local"}

    outbox = OutboxWorker(
        store,
        {OutboxKind.TICKET_CREATE: deliver, OutboxKind.PAGE_TRIGGER: deliver},
        RetryPolicy(),
        concurrency=4,
        clock=lambda: NOW,
    )
    try:
        first = await store.accept(message(1))
        tickets = tuple(_ticket(n) for n in range(1, 13))
        await store.process([work(first.inbox_id, lambda ctx: _opened(tickets))], NOW)
        second = await store.accept(message(2))
        pages = (_page("INC-A"), _page("INC-B"))
        await store.process([work(second.inbox_id, lambda ctx: _opened(pages))], NOW)
        while await outbox.deliver_due():
            rounds.append(list(current))
            current.clear()
    finally:
        await store.close()
    assert rounds[0] == ["INC-A", "INC-B", "INC-1", "INC-2"]
    assert [len(r) for r in rounds] == [4, 4, 4, 2]
    assert sorted(x for r in rounds for x in r) == sorted(
        [f"INC-{n}" for n in range(1, 13)] + ["INC-A", "INC-B"]
    )
