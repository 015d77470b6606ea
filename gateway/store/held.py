"""Held mail in the store: what the limits hold (inbox state `held`), listed and released.

A held message waits in the inbox, unanswered and unpaged, until an operator releases it.
Releasing sends it back to `pending` with `released_at` set, in one conditional update, so
it is released (and then processed by the running daemon's inbox worker) exactly once,
and the limits do not hold it a second time. The queries serve both stores
(gateway.store.dialect; gateway.store.postgres.held binds them to PostgreSQL).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.read_ports import HeldRow
from gateway.store.db import ts
from gateway.store.dialect import SQLITE, Dialect

__all__ = ["HeldRow", "held_rows", "release"]


def held_rows(conn: Any, limit: int = 1000, dialect: Dialect = SQLITE) -> list[HeldRow]:
    """The held messages, oldest first (at most `limit`)."""
    rows = conn.execute(
        dialect.q(
            "SELECT id, received_at, mailbox, mail_from, client, outcome, raw FROM inbox"
            " WHERE state = 'held' ORDER BY id LIMIT ?"
        ),
        (limit,),
    ).fetchall()
    return [
        HeldRow(
            int(r[0]), r[1], r[2], r[3], r[4], str(r[5] or "").removeprefix("held: "), bytes(r[6])
        )
        for r in rows
    ]


def release(conn: Any, inbox_id: int, now: datetime, dialect: Dialect = SQLITE) -> str | None:
    """Send a held message back to be processed, without the limits. Returns None when
    released, else its state (or "unknown") to explain why nothing changed."""
    with dialect.transaction(conn):
        cur = conn.execute(
            dialect.q(
                "UPDATE inbox SET state = 'pending', released_at = ? WHERE id = ?"
                " AND state = 'held'"
            ),
            (ts(now), inbox_id),
        )
        if cur.rowcount:
            return None
        row = conn.execute(
            dialect.q("SELECT state FROM inbox WHERE id = ?"), (inbox_id,)
        ).fetchone()
    return "unknown" if row is None else str(row[0])
