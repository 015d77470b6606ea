"""The SQLite store: durable accept with group commit, re-send de-duplication, one-shot
processing, outbox bookkeeping, and migrations."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.deliver.timeline import worded
from gateway.domain import (
    Attempt,
    Channel,
    NewIncident,
    NewMessage,
    OutboxKind,
    OutboxSpec,
    Plan,
    PlanContext,
    Reporter,
    ThreadKeys,
    TimelineEvent,
    Work,
)
from gateway.ports import StoreClosed
from gateway.store import schema, threads
from gateway.store.sqlite import SqliteStore
from rules.types import Mailbox, Priority

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def message(n: int, key: str | None = None) -> NewMessage:
    return NewMessage(
        Channel.EMAIL,
        Mailbox.EMERGENCY,
        f"s{n}@x.example",
        ("emergency@localhost",),
        f"Subject: {n}\r\n\r\nbody".encode(),
        key,
        NOW,
    )


def work(inbox_id: int, make=None) -> Work:  # type: ignore[no-untyped-def]
    """A unit of work whose plan opens an incident (or whatever `make` returns)."""
    return Work(
        inbox_id,
        None,
        make or (lambda ctx: plan()),
        lambda problem: Plan(outcome=f"unreadable: {problem}"),
    )


def plan(title: str = "Site down", msgid: str = "<a@x>") -> Plan:
    return Plan(
        outcome="opened",
        new_incident=NewIncident(
            title, Priority.P1, Mailbox.EMERGENCY, "apps-down", ("why",), None, None, None
        ),
        reporter=Reporter(Channel.EMAIL, "alice@x.example", (msgid,)),
        timeline=(TimelineEvent(NOW, "reported", "alice@x.example", "Reported"),),
        outbox=(
            OutboxSpec(
                OutboxKind.PAGE_TRIGGER,
                {
                    "dedup_key": "INC-1",
                    "summary": "[INC-1] P1: Site down",
                    "severity": "critical",
                    "source": "gw",
                    "details": {},
                },
            ),
        ),
        message_ids=(msgid,),
    )


async def test_concurrent_accepts_are_all_committed(store: SqliteStore, tmp_path: Path) -> None:
    """Two hundred concurrent accepts each get their own id and all are on disk."""
    results = await asyncio.gather(*(store.accept(message(i)) for i in range(200)))
    assert len({r.inbox_id for r in results}) == 200
    conn = sqlite3.connect(tmp_path / "gateway.sqlite3")
    assert conn.execute("SELECT COUNT(*) FROM inbox").fetchone() == (200,)
    conn.close()


async def test_resend_with_same_key_is_a_duplicate(store: SqliteStore) -> None:
    """A message with a known re-send key returns the first id, flagged duplicate."""
    first = await store.accept(message(1, "k1"))
    again = await store.accept(message(2, "k1"))
    assert (again.inbox_id, again.duplicate, first.duplicate) == (first.inbox_id, True, False)
    assert len(await store.pending_inbox()) == 1


async def test_accept_after_close_fails(tmp_path: Path) -> None:
    """A closed store refuses new messages instead of pretending to keep them."""
    s = SqliteStore(tmp_path / "g.sqlite3")
    await s.open()
    await s.close()
    with pytest.raises(StoreClosed):
        await s.accept(message(1))


async def test_processing_is_applied_once(store: SqliteStore) -> None:
    """Processing the same inbox row twice applies its plan once."""
    accepted = await store.accept(message(1))
    calls = []

    def make(ctx: PlanContext) -> Plan:
        calls.append(ctx.next_id)
        return plan()

    await store.process([work(accepted.inbox_id, make)], NOW)
    [second] = await store.process([work(accepted.inbox_id, make)], NOW)
    assert calls == [1] and second.outcome == "already processed"
    assert len(await store.incidents()) == 1
    assert await store.pending_inbox() == []


async def test_thread_found_by_message_id_and_by_tag_only_for_reporters(store: SqliteStore) -> None:
    """Known Message-IDs find the incident; [INC-1] does so only for one of its reporters."""
    accepted = await store.accept(message(1))
    await store.process([work(accepted.inbox_id)], NOW)
    conn = store._conn
    assert conn is not None
    by_id = threads.find_thread(conn, ThreadKeys(("<a@x>",), "", "bob@y.example"))
    by_tag = threads.find_thread(conn, ThreadKeys((), "Re: [INC-1] x", "alice@x.example"))
    stranger = threads.find_thread(conn, ThreadKeys((), "Re: [INC-1] x", "mallory@evil.example"))
    assert by_id is not None and by_id.ref == "INC-1"
    assert by_tag is not None and stranger is None


async def test_outbox_completion_records_the_page_once(store: SqliteStore) -> None:
    """Completing a page entry records one page; a second completion changes nothing."""
    accepted = await store.accept(message(1))
    await store.process([work(accepted.inbox_id)], NOW)
    [entry] = await store.due_outbox(NOW, 10)
    await store.settle_outbox([worded(Attempt(entry, result={"provider": "local"}), NOW)], NOW)
    await store.settle_outbox([worded(Attempt(entry, result={"provider": "local"}), NOW)], NOW)
    incident = await store.incident(1)
    assert incident is not None and incident.pages_sent == 1
    assert [e.kind for e in incident.timeline].count("paged") == 1
    assert await store.due_outbox(NOW + timedelta(days=1), 10) == []


async def test_outbox_retry_then_dead_letter(store: SqliteStore) -> None:
    """A failed attempt is rescheduled; a dead one is never due again."""
    accepted = await store.accept(message(1))
    await store.process([work(accepted.inbox_id)], NOW)
    [entry] = await store.due_outbox(NOW, 10)
    await store.settle_outbox(
        [Attempt(entry, error="503", next_at=NOW + timedelta(seconds=30))], NOW
    )
    assert await store.due_outbox(NOW, 10) == []
    [again] = await store.due_outbox(NOW + timedelta(seconds=31), 10)
    assert again.attempts == 1
    await store.settle_outbox([worded(Attempt(again, error="400", dead=True), NOW)], NOW)
    assert await store.due_outbox(NOW + timedelta(days=1), 10) == []
    [row] = await store.outbox_rows("dead")
    assert row["last_error"] == "400" and row["attempts"] == 2


async def test_a_failing_plan_falls_back_alone(store: SqliteStore) -> None:
    """In a batch, a message whose planning raises is kept by its fallback; the others apply."""
    ids = [(await store.accept(message(n))).inbox_id for n in range(3)]

    def boom(ctx: PlanContext) -> Plan:
        raise RuntimeError("bug")

    plans = await store.process([work(ids[0]), work(ids[1], boom), work(ids[2])], NOW)
    assert [p.outcome for p in plans] == [
        "opened",
        "unreadable: processing failed: RuntimeError",
        "opened",
    ]
    assert len(await store.incidents()) == 2 and await store.pending_inbox() == []


def test_migrations_are_ordered_and_refuse_a_newer_schema(tmp_path: Path) -> None:
    """A fresh database reaches the latest version; a newer one is refused, not damaged."""
    conn = schema.connect(str(tmp_path / "m.sqlite3"))
    assert schema.migrate(conn) == len(schema.MIGRATIONS)
    assert schema.migrate(conn) == len(schema.MIGRATIONS)
    conn.execute(f"PRAGMA user_version = {len(schema.MIGRATIONS) + 1}")
    with pytest.raises(schema.SchemaTooNew):
        schema.migrate(conn)
    conn.close()


def test_database_is_wal_with_full_sync(tmp_path: Path) -> None:
    """The durability settings that make a 250 mean 'on disk' are in force."""
    conn = schema.connect(str(tmp_path / "d.sqlite3"))
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("PRAGMA synchronous").fetchone() == (2,)
    conn.close()
