"""Pruning what the SQLite store need not keep: the self-test's rows, once they are old.

Each canary (gateway.run.canary) leaves an inbox row, its digest and a `canary` outbox entry,
every five minutes by default, and nothing else refers to them. Those older than a cut-off
go, in one transaction. Reports, incidents and their raw mail are never pruned: they are
the record.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from gateway.domain import CANARY_OUTCOME, OutboxKind
from gateway.store.db import transaction, ts


def prune_canaries(conn: sqlite3.Connection, before: datetime) -> int:
    """Delete the canaries processed before `before`; returns how many inbox rows went."""
    with transaction(conn):
        old = "SELECT id FROM inbox WHERE state = 'done' AND outcome = ? AND processed_at < ?"
        args = (CANARY_OUTCOME, ts(before))
        conn.execute(f"DELETE FROM inbox_digest WHERE inbox_id IN ({old})", args)  # noqa: S608
        gone = conn.execute(f"DELETE FROM inbox WHERE id IN ({old})", args).rowcount  # noqa: S608
        conn.execute(
            "DELETE FROM outbox WHERE kind = ? AND state = 'done' AND done_at < ?",
            (OutboxKind.CANARY.value, ts(before)),
        )
    return gone
