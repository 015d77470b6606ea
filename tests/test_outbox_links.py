"""The outbox and its links: a peer that is away (LinkDown) parks its entries without
counting attempts, for as long as it takes; a peer that refuses is retried and
dead-lettered as before; entries for one room go out in order."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.deliver.links import LinkGate, egress_gates
from gateway.deliver.outbox import OutboxWorker, RetryPolicy
from gateway.domain import OutboxEntry, OutboxKind
from gateway.ports import LinkDown, TransientError
from gateway.store.db import ts
from gateway.store.sqlite import SqliteStore as Store
from tests.test_store import NOW


class Tick:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """An open store (entries are written straight into its outbox table)."""
    s = Store(tmp_path / "gateway.sqlite3")
    await s.open()
    yield s
    await s.close()


def enqueue(path: Path, kind: OutboxKind, **payload: Any) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "INSERT INTO outbox (created_at, kind, payload, next_attempt_at) VALUES (?, ?, ?, ?)",
            (ts(NOW), kind, json.dumps(payload), ts(NOW)),
        )
    conn.close()


def rows(path: Path) -> list[tuple[int, str, str, int]]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.execute("SELECT id, kind, state, attempts FROM outbox ORDER BY id"))
    finally:
        conn.close()


async def test_unreachable_peer_never_burns_attempts_or_dead_letters(
    store: Store, tmp_path: Path
) -> None:
    """PagerDuty unreachable for 50 rounds with max_attempts 3: the page stays pending with
    0 attempts, the link is "unreachable", the page goes once the peer answers."""
    db = tmp_path / "gateway.sqlite3"
    enqueue(db, OutboxKind.PAGE_TRIGGER, dedup_key="INC-1")
    away = True
    calls = 0

    async def page(_entry: OutboxEntry) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if away:
            raise LinkDown("PagerDuty unreachable: connection refused")
        return {"provider": "pagerduty"}

    tick = Tick()
    [gate] = egress_gates(["pager"], 1.0, 300.0)
    gate.clock = tick
    outbox = OutboxWorker(
        store,
        {OutboxKind.PAGE_TRIGGER: page},
        RetryPolicy(max_attempts=3),
        clock=lambda: NOW,
        gates=[gate],
    )
    for _ in range(50):
        await outbox.deliver_due()
        tick.now += 400.0  # past the longest backoff: every round may try again
    assert calls == 50 and rows(db) == [(1, "page.trigger", "pending", 0)]
    assert gate.state() == "unreachable" and gate.is_down()
    away = False
    tick.now += 400.0
    assert await outbox.deliver_due() == 1
    assert rows(db) == [(1, "page.trigger", "done", 1)] and gate.state() == "ok"


async def test_link_down_holds_back_its_kinds_only_until_its_backoff(
    store: Store, tmp_path: Path
) -> None:
    """After the relay is found away, its mail is not tried again before the backoff, while
    a page (another link) goes at once; the backoff doubles per failed round."""
    db = tmp_path / "gateway.sqlite3"
    enqueue(db, OutboxKind.MAIL_SEND, rcpt_to="a@t.example")
    tried: list[str] = []

    async def mail(_entry: OutboxEntry) -> dict[str, Any]:
        tried.append("mail")
        raise LinkDown("relay connection failed: refused")

    async def page(_entry: OutboxEntry) -> dict[str, Any]:
        tried.append("page")
        return {"provider": "pagerduty"}

    tick = Tick()
    gates = egress_gates(["mail", "pager"], 1.0, 300.0)
    for gate in gates:
        gate.clock = tick
    outbox = OutboxWorker(
        store,
        {OutboxKind.MAIL_SEND: mail, OutboxKind.PAGE_TRIGGER: page},
        RetryPolicy(),
        clock=lambda: NOW,
        gates=gates,
    )
    await outbox.deliver_due()
    enqueue(db, OutboxKind.PAGE_TRIGGER, dedup_key="INC-2")
    assert await outbox.deliver_due() == 1 and tried == ["mail", "page"]
    tick.now += 1.0
    await outbox.deliver_due()  # 1 s later: one more try of the relay
    tick.now += 1.0
    assert await outbox.deliver_due() == 0  # now 2 s must pass
    tick.now += 1.0
    await outbox.deliver_due()
    assert tried == ["mail", "page", "mail", "mail"]


async def test_refusing_peer_is_still_dead_lettered(store: Store, tmp_path: Path) -> None:
    """A relay answering 451 every time (it is there, and refuses) dies after max_attempts."""
    db = tmp_path / "gateway.sqlite3"
    enqueue(db, OutboxKind.MAIL_SEND, rcpt_to="a@t.example")

    async def mail(_entry: OutboxEntry) -> dict[str, Any]:
        raise TransientError("relay refused the recipient: 451 try later")

    policy = RetryPolicy(max_attempts=3, initial_s=1.0, max_s=1.0)
    now = NOW
    outbox = OutboxWorker(
        store,
        {OutboxKind.MAIL_SEND: mail},
        policy,
        clock=lambda: now,
        gates=egress_gates(["mail"], 1.0, 300.0),
    )
    for _ in range(3):
        assert await outbox.deliver_due() == 1
        now += timedelta(seconds=2)  # past the retry time
    assert rows(db) == [(1, "mail.send", "dead", 3)]


async def test_chat_waits_for_the_connection_and_keeps_the_room_order(
    store: Store, tmp_path: Path
) -> None:
    """While the Matrix link is disconnected nothing for chat is tried; once it connects the
    entries for one room go out one after another, in the order they were queued."""
    db = tmp_path / "gateway.sqlite3"
    for n in range(6):
        enqueue(db, OutboxKind.CHAT_SEND, room_id="!a:x" if n % 2 else "!b:x", body=str(n))
    connected = False
    sent: list[str] = []

    async def send(entry: OutboxEntry) -> dict[str, Any]:
        sent.append(entry.payload["body"])
        return {"event_id": f"$e{entry.id}"}

    gates = egress_gates(["chat"], 1.0, 300.0, {"chat": lambda: connected})
    outbox = OutboxWorker(
        store, {OutboxKind.CHAT_SEND: send}, RetryPolicy(), clock=lambda: NOW, gates=gates
    )
    assert await outbox.deliver_due() == 0 and sent == []
    assert gates[0].state() == "disconnected"
    connected = True
    assert await outbox.deliver_due() == 6
    assert [b for b in sent if int(b) % 2] == ["1", "3", "5"]
    assert [b for b in sent if not int(b) % 2] == ["0", "2", "4"]
    assert {r[2] for r in rows(db)} == {"done"}


async def test_gate_of_a_connection_link_retries_at_once_when_it_reconnects() -> None:
    """A send that found the homeserver away waits for the backoff, unless the connection
    drops and comes back first: then the next round may try at once."""
    tick = Tick()
    up = True
    gate = LinkGate(
        "chat", frozenset({OutboxKind.CHAT_SEND}), 10.0, 300.0, connected=lambda: up, clock=tick
    )
    gate.unreachable("homeserver unreachable (ClientConnectorError)")
    assert not gate.may_try()
    up = False
    assert not gate.may_try() and gate.state() == "disconnected"
    up = True
    assert gate.may_try()
