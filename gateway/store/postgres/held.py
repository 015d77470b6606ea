"""Held mail on PostgreSQL: the queries of gateway.store.held, ported.

Releasing is one conditional update (state 'held' to 'pending' with `released_at` set),
so a message is released exactly once however many operators or nodes try, and the
inbox worker holding the lease processes it without the limits.
"""

from __future__ import annotations

from datetime import datetime

from gateway.store.db import ts
from gateway.store.held import HeldRow
from gateway.store.postgres.schema import Conn


def held_rows(conn: Conn, limit: int = 1000) -> list[HeldRow]:
    """The held messages, oldest first (at most `limit`)."""
    rows = conn.execute(
        "SELECT id, received_at, mailbox, mail_from, client, outcome, raw FROM inbox"
        " WHERE state = 'held' ORDER BY id LIMIT %s",
        (limit,),
    ).fetchall()
    return [
        HeldRow(
            int(r[0]), r[1], r[2], r[3], r[4], str(r[5] or "").removeprefix("held: "), bytes(r[6])
        )
        for r in rows
    ]


def release(conn: Conn, inbox_id: int, now: datetime) -> str | None:
    """Send a held message back to be processed, without the limits. Returns None when
    released, else its state (or "unknown") to explain why nothing changed."""
    with conn.transaction():
        cur = conn.execute(
            "UPDATE inbox SET state = 'pending', released_at = %s WHERE id = %s AND state = 'held'",
            (ts(now), inbox_id),
        )
        if cur.rowcount:
            return None
        row = conn.execute("SELECT state FROM inbox WHERE id = %s", (inbox_id,)).fetchone()
    return "unknown" if row is None else str(row[0])
