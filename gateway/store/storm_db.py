"""The counts behind rate limits and loop detection, kept in the store (`inbox_digest`).

Each processed email's digest (its limit bucket, content hash, when it was received) comes
with its Plan and is recorded in the same transaction that applies it; the next message is
counted against what was recorded before it, so the limits survive a restart and a batch
sees its own earlier messages. The bucket is `gateway.plan.storm.limit_key` (kept in the
`sender` column); the global count is of untrusted buckets only, so trusted mail neither
fills it nor is held by it.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta

from gateway.domain import Digest, SenderHistory
from gateway.store.db import ts

GLOBAL_WINDOW_S = 60.0


def record(conn: sqlite3.Connection, inbox_id: int, digest: Digest) -> None:
    """Record a processed message's digest (once per inbox row)."""
    conn.execute(
        "INSERT OR REPLACE INTO inbox_digest (inbox_id, sender, body_hash, at) VALUES (?, ?, ?, ?)",
        (inbox_id, digest.sender, digest.content, ts(digest.at)),
    )


def history(
    conn: sqlite3.Connection,
    inbox_id: int,
    sender: str,
    content: str,
    at: datetime,
    window_s: float,
    cap: int = 1_000_000,
) -> SenderHistory:
    """Count the messages recorded before this one in the windows that end at `at` (each
    count stops at `cap`: past every threshold it is compared with, more is moot)."""
    since = ts(at - timedelta(seconds=window_s))
    from_sender, same = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(body_hash = ?), 0) FROM (SELECT body_hash"
        " FROM inbox_digest WHERE sender = ? AND at >= ? AND at <= ? AND inbox_id != ?"
        " LIMIT ?)",
        (content, sender, since, ts(at), inbox_id, cap),
    ).fetchone()
    # The condition is spelled as in the partial index inbox_digest_untrusted (schema 6), so
    # the count reads only untrusted rows, however much trusted mail arrives.
    (everyone,) = conn.execute(
        "SELECT COUNT(*) FROM (SELECT 1 FROM inbox_digest WHERE substr(sender, 1, 2) = 'u:'"
        " AND at >= ? AND at <= ? AND inbox_id != ? LIMIT ?)",
        (ts(at - timedelta(seconds=GLOBAL_WINDOW_S)), ts(at), inbox_id, cap),
    ).fetchone()
    return SenderHistory(int(from_sender), int(same), int(everyone))
