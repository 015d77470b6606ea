"""A crash between the external create and our commit: after a restart the outbox tries
again, the backend finds the ticket it made, and exactly one ticket exists and is recorded."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.deliver.mirror_egress import ticket_handlers
from gateway.deliver.outbox import OutboxWorker, RetryPolicy
from gateway.domain import NewIncident, OutboxKind, OutboxSpec, Plan
from gateway.store import db, incidents, schema
from gateway.store.sqlite import SqliteStore
from rules.types import Mailbox, Priority
from tests.test_ticket_backends import FAKES, case

NOW = datetime.now(UTC)


@pytest.fixture(params=sorted(FAKES))
def vendor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _incident_with_ticket_entry(path: Path) -> None:
    conn = schema.connect(str(path))
    schema.migrate(conn)
    plan = Plan(
        outcome="opened INC-1",
        new_incident=NewIncident(
            "Our site is down", Priority.P1, Mailbox.EMERGENCY, None, ("why",), None, None, None
        ),
        outbox=(
            OutboxSpec(
                OutboxKind.TICKET_CREATE,
                {
                    "reference": "INC-1",
                    "title": "[INC-1] Our site is down",
                    "priority": "P1",
                    "requester": "alice@tenant.example",
                    "body": "All apps return 502.",
                    "at": NOW.isoformat(),
                },
            ),
        ),
    )
    with db.transaction(conn):
        incidents.apply_plan(conn, plan, NOW)
    conn.close()


async def test_crash_after_create_leaves_exactly_one_ticket(tmp_path: Path, vendor: str) -> None:
    """The first attempt creates the ticket and dies before settling; the retry after the
    restart reconciles by our key: one ticket, one create request, its id recorded."""
    path = tmp_path / "gateway.sqlite3"
    _incident_with_ticket_entry(path)
    async with case(vendor) as c:
        store = SqliteStore(path)
        await store.open()
        [entry] = await store.due_outbox(NOW, 10)
        await ticket_handlers(c.backend, store, "inst")[OutboxKind.TICKET_CREATE](entry)
        await store.close()  # the crash: the answer never reached the database

        store = SqliteStore(path)
        await store.open()
        try:
            worker = OutboxWorker(
                store,
                ticket_handlers(c.backend, store, "inst"),
                RetryPolicy(),
                clock=lambda: datetime.now(UTC),
            )
            assert await worker.deliver_due() == 1
            row = await store.ticket(1)
            rows = await store.outbox_rows("done")
        finally:
            await store.close()
        [ticket] = c.tickets()
        assert row is not None and row.backend == vendor
        assert row.external_id == str(ticket.get("id", ticket.get("number")))
        assert len(rows) == 1 and c.fake.count("POST") == 1
