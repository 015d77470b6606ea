"""The outbox on PostgreSQL: claiming due entries, settling a round of attempts with their
effects exactly once, dead letters, queue counts.

What a settled entry leaves in the store (its effects, a dead entry's alert and timeline
lines), sending a dead entry back, `outbox_rows` and `queue_stats` are gateway.store.outbox's,
shared with SQLite. PostgreSQL's own are the claims for several nodes: `claim_due` takes due
entries with FOR UPDATE SKIP LOCKED and stamps each with this node's name, a fresh fencing
token and an expiry; another node skips them until the claim expires. `settle` records an
outcome only while the entry still carries the settling node's token, in the same
transaction as the effect (one statement per kind of outcome for a round): a node that was
paused past its claim and wakes up records nothing (the node that reclaimed did).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from gateway.domain import (
    Attempt,
    OutboxEntry,
    OutboxKind,
    OutboxState,
    TimelineEvent,
    dumps,
)
from gateway.store import outbox as shared
from gateway.store.db import from_ts, ts
from gateway.store.dialect import POSTGRES
from gateway.store.postgres import trips
from gateway.store.postgres.schema import Conn, lane_field
from gateway.store.rows import lane_clear_sql

# Pending entries that nothing earlier in their lane holds back (gateway.store.rows): not a
# retry due later, nor an entry another claim is delivering right now.
_LANE_CLEAR = lane_clear_sql(
    lane_field,  # as the index outbox_lane spells it (schema 5)
    busy="e.claim_until >= clock_timestamp()",
)
_CLAIM_LOCK = 0x6F7574626F78  # pg_advisory_xact_lock key of outbox claims ("outbox")


def claim_due(
    conn: Conn,
    now: datetime,
    limit: int,
    holder: str,
    claim_s: float,
    skip_kinds: Sequence[str] = (),
) -> list[tuple[OutboxEntry, int]]:
    """Claim up to `limit` due entries not claimed by another node (or whose claim
    expired), oldest due first, each with its fencing token; none of `skip_kinds`."""
    # The claim's COMMIT does not wait for the disk (and only it: the accept, the plan and
    # the outcome do). A claim lost with a crash of the database only lets the entry be
    # claimed again and perhaps delivered twice, which the idempotency keys absorb, as
    # for any crash during a delivery; waiting for the disk would add a flush between
    # every plan and its page. The whole transaction is one round trip.
    cur = conn.cursor()
    with trips.transaction(conn):
        conn.execute("SET LOCAL synchronous_commit = off")
        # Claims are taken one node at a time (a few milliseconds each), so that what one
        # node is claiming counts as busy for the lane check of the other.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CLAIM_LOCK,))
        cur.execute(
            "WITH due AS (SELECT id FROM outbox WHERE state = 'pending'"  # noqa: S608
            " AND next_attempt_at <= %s AND (claim_until IS NULL OR claim_holder = %s"
            f" OR claim_until < clock_timestamp()) AND kind <> ALL(%s) AND {_LANE_CLEAR}"
            " ORDER BY next_attempt_at, id LIMIT %s FOR UPDATE SKIP LOCKED)"
            " UPDATE outbox o SET claim_holder = %s, claim_token = nextval('fencing_tokens'),"
            " claim_until = clock_timestamp() + make_interval(secs => %s)"
            " FROM due WHERE o.id = due.id"
            " RETURNING o.id, o.kind, o.incident_id, o.payload, o.attempts, o.claim_token,"
            " o.next_attempt_at",
            (ts(now), holder, list(skip_kinds), limit, holder, claim_s),
        )
    rows = cur.fetchall()
    rows.sort(key=lambda r: (r[6], r[0]))
    return [
        (
            OutboxEntry(
                int(r[0]),
                OutboxKind(r[1]),
                None if r[2] is None else int(r[2]),
                json.loads(r[3]),
                int(r[4]),
            ),
            int(r[5]),
        )
        for r in rows
    ]


def claim_valid(conn: Conn, outbox_id: int, token: int, margin_s: float) -> bool:
    """Whether this node's claim on an entry still holds for at least `margin_s`."""
    row = conn.execute(
        "SELECT 1 FROM outbox WHERE id = %s AND claim_token = %s AND state = 'pending'"
        " AND claim_until > clock_timestamp() + make_interval(secs => %s)",
        (outbox_id, token, margin_s),
    ).fetchone()
    return row is not None


def next_outbox_due(conn: Conn, holder: str, skip_kinds: Sequence[str] = ()) -> datetime | None:
    """When this node may next find a pending entry to claim (none of `skip_kinds`): the
    earliest due time of the entries free for it, or the earliest expiry of another node's
    claim (so a node does not poll in a loop while another delivers what is due)."""
    row = conn.execute(
        "SELECT MIN(next_attempt_at) FILTER (WHERE claim_until IS NULL OR claim_holder = %s"  # noqa: S608
        " OR claim_until < clock_timestamp()),"
        " MIN(claim_until) FILTER (WHERE claim_holder <> %s"
        " AND claim_until >= clock_timestamp())"
        f" FROM outbox WHERE state = 'pending' AND kind <> ALL(%s) AND {_LANE_CLEAR}",
        (holder, holder, list(skip_kinds)),
    ).fetchone()
    if row is None:
        return None
    free, claimed = from_ts(row[0]), row[1]
    found = [t for t in (free, claimed) if t is not None]
    return min(found) if found else None


def settle(
    conn: Conn, attempts: Sequence[Attempt], tokens: Mapping[int, int], now: datetime
) -> None:
    """Record a round of attempts in one transaction. An outcome counts only while the
    entry is pending and still carries this node's claim token (`tokens`; an entry with
    no token here was never claimed by a node and is settled unconditionally).

    In few round trips: one statement per kind of outcome for the whole round, and the
    effects of the entries it settled sent after it without waiting."""
    done = [a for a in attempts if a.result is not None]
    parked = [a for a in attempts if a.result is None and a.parked]
    failed = [a for a in attempts if a.result is None and not a.parked]
    with trips.transaction(conn):
        settled = _settle_done(conn, done, tokens, now)
        if parked:
            conn.execute(
                "UPDATE outbox o SET last_error = u.error, claim_until = NULL"
                " FROM unnest(%s::bigint[], %s::text[], %s::bigint[]) AS u(id, error, token)"
                " WHERE o.id = u.id AND o.state = 'pending'"
                " AND (u.token IS NULL OR o.claim_token = u.token)",
                (
                    [a.entry.id for a in parked],
                    [a.error[:500] for a in parked],
                    [tokens.get(a.entry.id) for a in parked],
                ),
            )
        dead = _settle_failed(conn, failed, tokens, now)
        for a in attempts:  # in their order, as the timeline shows them
            if a.result is not None and a.entry.id in settled and a.entry.incident_id is not None:
                shared.record_effect(conn, a.entry, a.result, now, POSTGRES)
                shared.add_lines(conn, a, POSTGRES)
            elif a.result is None and a.entry.id in dead:
                shared.record_dead(conn, a, now, POSTGRES)


def _settle_done(
    conn: Conn, done: Sequence[Attempt], tokens: Mapping[int, int], now: datetime
) -> set[int]:
    """Mark the delivered entries done; returns the ids this settled (a read: waits)."""
    if not done:
        return set()
    rows = conn.execute(
        "UPDATE outbox o SET state = %s, attempts = o.attempts + 1, result = u.result,"
        " done_at = %s, last_error = NULL, claim_until = NULL"
        " FROM unnest(%s::bigint[], %s::text[], %s::bigint[]) AS u(id, result, token)"
        " WHERE o.id = u.id AND o.state = 'pending'"
        " AND (u.token IS NULL OR o.claim_token = u.token) RETURNING o.id",
        (
            OutboxState.DONE,
            ts(now),
            [a.entry.id for a in done],
            [dumps(a.result) for a in done],
            [tokens.get(a.entry.id) for a in done],
        ),
    ).fetchall()
    return {int(r[0]) for r in rows}


def _settle_failed(
    conn: Conn, failed: Sequence[Attempt], tokens: Mapping[int, int], now: datetime
) -> set[int]:
    """Count the failed attempts and schedule the next (or dead-letter); returns the ids
    that went dead (read only when there are some)."""
    if not failed:
        return set()
    cur = conn.execute(
        "UPDATE outbox o SET attempts = o.attempts + 1, last_error = u.error,"
        " next_attempt_at = u.next_at, state = u.state, claim_until = NULL"
        " FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::bigint[])"
        " AS u(id, error, next_at, state, token)"
        " WHERE o.id = u.id AND o.state = 'pending'"
        " AND (u.token IS NULL OR o.claim_token = u.token) RETURNING o.id, o.state",
        (
            [a.entry.id for a in failed],
            [a.error[:500] for a in failed],
            [ts(a.next_at or now) for a in failed],
            [str(OutboxState.DEAD if a.dead else OutboxState.PENDING) for a in failed],
            [tokens.get(a.entry.id) for a in failed],
        ),
    )
    if not any(a.dead for a in failed):
        return set()
    return {int(i) for i, state in cur.fetchall() if state == OutboxState.DEAD}


def retry_dead(
    conn: Conn, outbox_id: int, now: datetime, note: Callable[[int, str, datetime], TimelineEvent]
) -> str | None:
    """Send a dead entry back to pending, due now, its claim released, and put
    `note(outbox_id, kind, now)` on its incident's timeline; None when done, else why not
    (gateway.store.outbox's, with the row locked)."""
    return shared.retry_dead(conn, outbox_id, now, note, POSTGRES, claims=True)


def outbox_rows(conn: Conn, state: str | None = None) -> list[dict[str, Any]]:
    """Outbox entries for operators (no payload bodies): gateway.store.outbox's query."""
    return shared.outbox_rows(conn, state, POSTGRES)


queue_stats = shared.queue_stats  # inbox and outbox depth (read-only): no placeholders


def canary_through(conn: Conn, nonce: str) -> bool:
    """Whether the canary entry with this nonce was delivered, by whichever node."""
    row = conn.execute(
        "SELECT 1 FROM outbox WHERE kind = 'canary' AND state = 'done'"
        " AND payload::jsonb ->> 'nonce' = %s LIMIT 1",
        (nonce,),
    ).fetchone()
    return row is not None
