"""The dead-letter state with hand-written egress fakes: an alert per dead entry, never an
alert about an alert, and the alert's text."""

from __future__ import annotations

import sqlite3
from typing import Any

from gateway.deliver.deadletter import ALERT_PURPOSE, alert_in, describe
from gateway.deliver.outbox import OutboxWorker, RetryPolicy
from gateway.domain import OutboxEntry, OutboxKind, OutboxSpec
from gateway.ports import PermanentError
from gateway.store.sqlite import SqliteStore
from tests.conftest import IN_HOURS


async def refuse(entry: OutboxEntry) -> dict[str, Any]:
    raise PermanentError(f"refused {entry.kind}")


def rows(store: SqliteStore) -> list[tuple[int, str, str, str]]:
    conn = sqlite3.connect(store.path)
    try:
        return list(
            conn.execute(
                "SELECT id, kind, state, json_extract(payload, '$.purpose') FROM outbox ORDER BY id"
            )
        )
    finally:
        conn.close()


async def test_a_dead_alert_raises_no_further_alert(store: SqliteStore) -> None:
    """When the chat is broken too, the page dies, its alert dies, and that is the end:
    two dead entries, no third."""
    conn = sqlite3.connect(store.path)
    conn.execute(
        "INSERT INTO outbox (created_at, kind, payload, next_attempt_at)"
        " VALUES ('x', 'page.trigger', '{}', '2000-01-01')"
    )
    conn.commit()
    conn.close()
    handlers = {OutboxKind.PAGE_TRIGGER: refuse, OutboxKind.CHAT_SEND: refuse}
    worker = OutboxWorker(
        store,
        handlers,
        RetryPolicy(max_attempts=3),
        clock=lambda: IN_HOURS,
        alert_for=alert_in("!incidents:localhost"),
    )
    while await worker.deliver_due():
        pass
    assert rows(store) == [
        (1, "page.trigger", "dead", None),
        (2, "chat.send", "dead", ALERT_PURPOSE),
    ]


def test_alert_names_the_incident_the_entry_and_the_way_back() -> None:
    """The alert says which incident, what was given up on, why, and the retry command;
    without an incidents room there is no alert (the error log and the timeline remain)."""
    entry = OutboxEntry(7, OutboxKind.MAIL_SEND, 3, {"purpose": "ack"}, 11)
    spec = alert_in("!room:x")(entry, "relay refused the recipient: 550", 12)
    assert isinstance(spec, OutboxSpec) and spec.kind is OutboxKind.CHAT_SEND
    assert spec.payload["room_id"] == "!room:x"
    assert spec.payload["body"].startswith(
        "⚠ INC-3: Gave up on an email (outbox 7) after "
        "12 attempts: relay refused the recipient: 550"
    )
    assert "chatops-gateway outbox retry 7" in spec.payload["body"]
    assert alert_in(None)(entry, "x", 1) is None
    assert describe(entry, "boom", 1).endswith("after 1 attempt: boom")
