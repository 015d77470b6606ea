"""Held mail on PostgreSQL: the queries of gateway.store.held, in PostgreSQL's dialect.

Releasing is one conditional update (state 'held' to 'pending' with `released_at` set),
so a message is released exactly once however many operators or nodes try, and the
inbox worker holding the lease processes it without the limits.
"""

from __future__ import annotations

from datetime import datetime

from gateway.store import held as shared
from gateway.store.dialect import POSTGRES
from gateway.store.held import HeldRow
from gateway.store.postgres.schema import Conn


def held_rows(conn: Conn, limit: int = 1000) -> list[HeldRow]:
    """The held messages, oldest first (at most `limit`)."""
    return shared.held_rows(conn, limit, POSTGRES)


def release(conn: Conn, inbox_id: int, now: datetime) -> str | None:
    """Send a held message back to be processed, without the limits. Returns None when
    released, else its state (or "unknown") to explain why nothing changed."""
    return shared.release(conn, inbox_id, now, POSTGRES)
