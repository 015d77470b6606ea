"""Pruning what the PostgreSQL store need not keep: the self-test's rows, once they are old
(the same rule as gateway.store.retention, for any node's canaries)."""

from __future__ import annotations

from datetime import datetime

from gateway.domain import CANARY_OUTCOME, OutboxKind
from gateway.store.db import ts
from gateway.store.postgres.schema import Conn


def prune_canaries(conn: Conn, before: datetime) -> int:
    """Delete the canaries processed before `before`; returns how many inbox rows went."""
    with conn.transaction():
        old = "SELECT id FROM inbox WHERE state = 'done' AND outcome = %s AND processed_at < %s"
        args = (CANARY_OUTCOME, ts(before))
        conn.execute(f"DELETE FROM inbox_digest WHERE inbox_id IN ({old})", args)  # noqa: S608
        gone = conn.execute(f"DELETE FROM inbox WHERE id IN ({old})", args).rowcount  # noqa: S608
        conn.execute(
            "DELETE FROM outbox WHERE kind = %s AND state = 'done' AND done_at < %s",
            (OutboxKind.CANARY.value, ts(before)),
        )
    return gone
