"""Pruning what the store need not keep: the self-test's rows, once they are old.

Each canary (gateway.run.canary) leaves an inbox row, its digest and a `canary` outbox entry,
every five minutes by default, and nothing else refers to them. Those older than a cut-off
go, in one transaction, on either store (gateway.store.dialect). Reports, incidents and
their raw mail are never pruned: they are the record.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.domain import CANARY_OUTCOME, OutboxKind
from gateway.store.db import ts
from gateway.store.dialect import SQLITE, Dialect

_OLD = "SELECT id FROM inbox WHERE state = 'done' AND outcome = ? AND processed_at < ?"


def prune_canaries(conn: Any, before: datetime, dialect: Dialect = SQLITE) -> int:
    """Delete the canaries processed before `before`; returns how many inbox rows went."""
    q, args = dialect.q, (CANARY_OUTCOME, ts(before))
    with dialect.transaction(conn):
        conn.execute(q(f"DELETE FROM inbox_digest WHERE inbox_id IN ({_OLD})"), args)  # noqa: S608
        gone = int(conn.execute(q(f"DELETE FROM inbox WHERE id IN ({_OLD})"), args).rowcount)  # noqa: S608
        conn.execute(
            q("DELETE FROM outbox WHERE kind = ? AND state = 'done' AND done_at < ?"),
            (OutboxKind.CANARY.value, ts(before)),
        )
    return gone
