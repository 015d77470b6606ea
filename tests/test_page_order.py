"""An engineer's acknowledgement never overtakes its page: when PagerDuty answers the
trigger 429 (Retry-After), the `!ack` queued meanwhile waits for the trigger's retry.
PagerDuty ignores an acknowledgement for an alert it does not know, so an overtaking
acknowledgement is lost and the on-call engineer is paged for an incident already taken."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from adapters.pagerduty import PagerDutyPager
from gateway.deliver.egress import make_handlers
from gateway.deliver.outbox import OutboxWorker, RetryPolicy
from gateway.domain import OutboxKind, OutboxSpec, Plan
from gateway.store import outbox, schema
from gateway.store.sqlite import SqliteStore
from tests.fakes.pagerduty import FakePagerDuty
from tests.store_contract.builders import NOW, message, work

ROUTING_KEY = "R0ut1ngKeyS3cretAbCdEfGh01234567"


class Mailer:
    """No mail in this test."""

    async def send(self, data: bytes, mail_from: str, rcpt_to: object) -> dict[str, str]:
        raise AssertionError("no mail expected")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """An open SQLite store."""
    s = SqliteStore(tmp_path / "gateway.sqlite3")
    await s.open()
    yield s
    await s.close()


async def test_an_ack_waits_for_the_trigger_pagerduty_throttled(store: SqliteStore) -> None:
    """Trigger answered 429 Retry-After 2; the ack queued meanwhile is not sent before the
    trigger's retry; PagerDuty ends with the alert acknowledged, events in order."""
    now = NOW

    def clock() -> datetime:
        return now

    async with FakePagerDuty(routing_keys={ROUTING_KEY}) as fake, aiohttp.ClientSession() as s:
        pager = PagerDutyPager(ROUTING_KEY, session=s, base_url=fake.url, timeout_s=5)
        outbox = OutboxWorker(
            store, make_handlers(pager, Mailer(), "pagerduty"), RetryPolicy(), clock=clock
        )
        await store.process([work((await store.accept(message(1))).inbox_id)], now)
        fake.fail_next(429, retry_after="2")
        assert await outbox.deliver_due() == 1  # the trigger, throttled
        ack = Plan(
            outcome="acknowledged",
            incident_id=1,
            outbox=(OutboxSpec(OutboxKind.PAGE_ACKNOWLEDGE, {"dedup_key": "INC-1"}),),
        )
        await store.process([work((await store.accept(message(2))).inbox_id, lambda _c: ack)], now)
        assert await outbox.deliver_due() == 0  # the ack waits for its trigger
        assert fake.events == []
        now += timedelta(seconds=2)
        assert await outbox.drain(30)
    assert [e["event_action"] for e in fake.events] == ["trigger", "acknowledge"]
    assert fake.alerts == {"INC-1": "acknowledged"}


def test_the_lane_check_looks_lanes_up_in_their_index(tmp_path: Path) -> None:
    """The due-outbox query finds an entry's earlier lane-mates through the index
    `outbox_lane`, not by reading every pending payload: the check and the index spell the
    lane the same way (a change of one without the other fails here)."""
    conn = sqlite3.connect(tmp_path / "gateway.sqlite3", isolation_level=None)
    schema.migrate(conn)
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    outbox.due_outbox(conn, NOW, 32)
    conn.set_trace_callback(None)
    [query] = [s for s in seen if s.lstrip().upper().startswith("SELECT")]
    plan = " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + query))
    assert "USING INDEX outbox_lane" in plan, plan
    conn.close()
