"""Read-port contract (gateway.read_ports): the operator CLI's reader, opened through the
factory from the same `[state]` configuration as the store, shows what the store holds on
every backend, cannot write, and the operator's two writes happen once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import cast

import pytest

from gateway.config.model import Config
from gateway.deliver.deadletter import retry_note
from gateway.deliver.timeline import worded
from gateway.domain import Attempt, Plan
from gateway.ports import Store
from gateway.read_ports import OUTBOX_COLUMNS, StateOperator, StateUnavailable
from gateway.store.factory import open_operator, open_reader
from tests.store_contract.builders import NOW, message, opened, work

StateConfig = Callable[[Path], Config]


async def _two_incidents(store: Store) -> None:
    await store.process([work((await store.accept(message(1))).inbox_id)], NOW)
    second = await store.accept(message(2))
    await store.process(
        [work(second.inbox_id, lambda _c: opened("Mail slow", "<b@x>", "bob@y.example", ()))],
        NOW,
    )


async def _dead_page(store: Store) -> int:
    await store.process([work((await store.accept(message(1))).inbox_id)], NOW)
    [entry] = await store.due_outbox(NOW, 10)
    await store.settle_outbox([worded(Attempt(entry, error="400", dead=True), NOW)], NOW)
    return entry.id


async def test_the_reader_shows_what_the_store_holds(
    store: Store, state_config: StateConfig, tmp_path: Path
) -> None:
    """Incidents (newest first, then one with its timeline), outbox entries by state and a
    kv value read through the reader equal what the store itself returns."""
    await _two_incidents(store)
    await store.kv_set("instance_id", "abc123")
    reader = open_reader(state_config(tmp_path))
    try:
        assert reader.incidents() == await store.incidents()
        assert [i.id for i in reader.incidents()] == [2, 1]
        one = reader.incident(1)
        assert one is not None and one == await store.incident(1)
        assert [e.kind for e in one.timeline] == ["reported"]
        assert one.reporters[0].message_ids == ("<a@x>",)
        assert reader.incident(99) is None
        rows = reader.outbox()
        assert rows == await store.outbox_rows()
        assert [tuple(r) for r in rows] == [OUTBOX_COLUMNS]
        assert [(r["kind"], r["state"], r["incident_id"]) for r in rows] == [
            ("page.trigger", "pending", 1)
        ]
        assert reader.outbox("dead") == []
        assert reader.kv_get("instance_id") == "abc123"
        assert reader.kv_get("nothing") is None
    finally:
        reader.close()


async def test_the_reader_sees_later_commits(
    store: Store, state_config: StateConfig, tmp_path: Path
) -> None:
    """A reader kept open sees what the daemon commits after it opened (each read is its
    own snapshot, none held open between reads)."""
    reader = open_reader(state_config(tmp_path))
    try:
        assert reader.incidents() == []
        await _two_incidents(store)
        assert [i.id for i in reader.incidents()] == [2, 1]
    finally:
        reader.close()


async def test_the_reader_cannot_write(
    store: Store, state_config: StateConfig, tmp_path: Path
) -> None:
    """The reader's connection refuses a write (StateUnavailable saying so): a dead entry
    stays dead and nothing reaches the timeline."""
    dead = await _dead_page(store)
    reader = cast(StateOperator, open_reader(state_config(tmp_path)))  # could it write?
    try:
        with pytest.raises(StateUnavailable, match="read-only"):
            reader.retry_dead(dead, NOW, retry_note)
        with pytest.raises(StateUnavailable, match="read-only"):
            reader.release_held(1, NOW)
    finally:
        reader.close()
    [row] = await store.outbox_rows()
    assert row["state"] == "dead"
    incident = await store.incident(1)
    assert incident is not None and "retry_requested" not in [e.kind for e in incident.timeline]


async def test_a_dead_entry_is_sent_back_once(
    store: Store, state_config: StateConfig, tmp_path: Path
) -> None:
    """`outbox retry`: the dead entry is due again with a fresh count and a timeline line;
    a second retry finds it pending, an unknown id is named unknown."""
    dead = await _dead_page(store)
    operator = open_operator(state_config(tmp_path))
    later = NOW + timedelta(minutes=5)
    try:
        assert operator.retry_dead(dead, later, retry_note) is None
        assert operator.retry_dead(dead, later, retry_note) == "pending"
        assert operator.retry_dead(9999, later, retry_note) == "unknown"
    finally:
        operator.close()
    [again] = await store.due_outbox(later, 10)
    assert (again.id, again.attempts) == (dead, 0)
    incident = await store.incident(1)
    assert incident is not None
    assert [e.kind for e in incident.timeline].count("retry_requested") == 1


async def test_held_mail_is_listed_and_released_once(
    store: Store, state_config: StateConfig, tmp_path: Path
) -> None:
    """`held list` shows the held message with its reason; `held release` sends it back to
    the inbox once; again, it is pending; an unknown id is unknown."""
    held = await store.accept(message(1))
    await store.process(
        [work(held.inbox_id, lambda _c: Plan(outcome="held: rate limit", held=True))], NOW
    )
    operator = open_operator(state_config(tmp_path))
    try:
        [row] = operator.held()
        assert (row.inbox_id, row.reason, row.mail_from) == (
            held.inbox_id,
            "rate limit",
            "s1@x.example",
        )
        assert row.raw.startswith(b"Subject: 1")
        assert operator.release_held(held.inbox_id, NOW) is None
        assert operator.release_held(held.inbox_id, NOW) == "pending"
        assert operator.release_held(9999, NOW) == "unknown"
        assert operator.held() == []
    finally:
        operator.close()
    [pending] = await store.pending_inbox()
    assert pending.id == held.inbox_id and pending.released


async def test_no_state_yet_is_a_clear_error(state_config: StateConfig, tmp_path: Path) -> None:
    """Before any daemon ran with the configuration, opening the reader says so instead of
    making an empty state (no SQLite file, no PostgreSQL schema is created)."""
    config = state_config(tmp_path / "never-ran")
    with pytest.raises(StateUnavailable, match="no state"):
        open_reader(config)
    with pytest.raises(StateUnavailable, match="no state"):
        open_operator(config)
    assert not config.database_path().exists()
