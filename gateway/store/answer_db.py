"""The count behind the per-address answer limit, kept in the store (`answer_log`).

Each automatic answer the pipeline plans is recorded in the transaction that plans it, so
the limit holds across restarts and a batch sees its own earlier answers. Old rows are
pruned as the window passes them.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def answer_fits(
    conn: sqlite3.Connection, address: str, at: datetime, window_s: float, limit: int
) -> bool:
    """Whether one more answer to `address` at `at` stays within `limit` per `window_s`;
    records it when it does."""
    address = address.strip().lower()
    since = _ts(at - timedelta(seconds=window_s))
    (count,) = conn.execute(
        "SELECT COUNT(*) FROM (SELECT 1 FROM answer_log WHERE address = ? AND at > ? LIMIT ?)",
        (address, since, limit),
    ).fetchone()
    if int(count) >= limit:
        return False
    conn.execute("DELETE FROM answer_log WHERE address = ? AND at <= ?", (address, since))
    conn.execute("INSERT INTO answer_log (address, at) VALUES (?, ?)", (address, _ts(at)))
    return True
