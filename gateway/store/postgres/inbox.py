"""The inbox on PostgreSQL: accepting messages (one transaction per group) and processing
them under the write lock; the digests behind rate limits and loop detection.

The SQL of gateway.store.inbox and gateway.store.storm_db, ported. Processing takes a
transaction-level advisory lock first, so read-decide-write is serialised across every node
as SQLite's single writer serialises it on one host: a message is processed once (its
state is checked under the lock), and a new incident's id is the one its plan was made with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import partial

import psycopg
import structlog

from gateway.domain import (
    Accepted,
    Digest,
    InboxRow,
    NewMessage,
    Plan,
    PlanContext,
    SenderHistory,
    ThreadKeys,
    Work,
)
from gateway.store.alert_db import LIMIT as ALERT_LIMIT
from gateway.store.db import ts
from gateway.store.postgres import trips
from gateway.store.postgres.batch import Lookups
from gateway.store.postgres.batch import process as batch_process
from gateway.store.postgres.incidents import (
    apply_plan,
    find_thread,
    list_incidents,
    load_incident,
    next_incident_id,
    recent_open_incidents,
)
from gateway.store.postgres.schema import WRITE_LOCK, Conn
from gateway.store.rows import INBOX_COLUMNS, NEW_INBOX_COLUMNS, inbox_row_of, inbox_values

GLOBAL_WINDOW_S = 60.0
log = structlog.get_logger("gateway.store.postgres")


INBOX_CHANNEL = "gateway_inbox"  # NOTIFY on every accept: the node processing wakes up


def accept_many(
    conn: Conn, messages: Sequence[NewMessage], node: str | None = None
) -> list[Accepted]:
    """Insert a batch of messages in one transaction and one round trip (pipelined); returns
    once it is committed. A dedup key already stored (by this node or another, or earlier
    in the batch) is the same message. With a `node` name, the commit notifies
    INBOX_CHANNEL with it, so whichever node processes the inbox starts on them at once."""
    cur = conn.cursor()
    with trips.transaction(conn):
        if node is not None:
            conn.execute("SELECT pg_notify(%s, %s)", (INBOX_CHANNEL, node))
        cur.executemany(
            f"INSERT INTO inbox ({NEW_INBOX_COLUMNS})"  # noqa: S608  (constant columns)
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (dedup_key) DO NOTHING RETURNING id",
            [inbox_values(m) for m in messages],
            returning=True,
        )
    ids: list[int | None] = []
    while True:  # the results arrived with the COMMIT's answer
        row = cur.fetchone()
        ids.append(None if row is None else int(row[0]))
        if not cur.nextset():
            break
    known = _stored_ids(
        conn, [m.dedup_key for m, i in zip(messages, ids, strict=True) if i is None]
    )
    results = []
    for m, new_id in zip(messages, ids, strict=True):
        if new_id is not None:
            results.append(Accepted(new_id, duplicate=False))
        elif m.dedup_key in known:
            results.append(Accepted(known[m.dedup_key], duplicate=True))
        else:
            raise RuntimeError("a conflicting dedup key is stored")
    return results


def _stored_ids(conn: Conn, keys: Sequence[str | None]) -> dict[str | None, int]:
    """The inbox ids of dedup keys already stored (re-sent messages)."""
    if not keys:
        return {}
    rows = conn.execute(
        "SELECT dedup_key, id FROM inbox WHERE dedup_key = ANY(%s)", (list(keys),)
    ).fetchall()
    return {key: int(i) for key, i in rows}


def pending_inbox(conn: Conn, limit: int, max_bytes: int | None = None) -> list[InboxRow]:
    """The oldest messages not yet processed: at most `limit`, and with `max_bytes` only as
    many as fit in that many bytes of raw content (always at least one). One query: the
    running total of the sizes picks the rows (octet_length does not fetch the value), and
    only the rows picked are sent, so a queue of large mail is never all in memory at once."""
    rows = conn.execute(
        f"SELECT {INBOX_COLUMNS}"  # noqa: S608  (constant columns)
        " FROM (SELECT *, row_number() OVER w AS n, sum(octet_length(raw)) OVER w AS upto"
        " FROM (SELECT * FROM inbox WHERE state = 'pending' ORDER BY id LIMIT %s) p"
        " WINDOW w AS (ORDER BY id)) q"
        " WHERE n = 1 OR %s::bigint IS NULL OR upto <= %s ORDER BY id",
        (limit, max_bytes, max_bytes),
    ).fetchall()
    return [inbox_row_of(r) for r in rows]


def process(conn: Conn, batch: Sequence[Work], now: datetime) -> list[Plan]:
    """Each message's thread, plan and effects, in one transaction under the write lock,
    in few round trips (gateway.store.postgres.batch); each message is a savepoint, so one
    whose planning fails falls back alone."""
    return batch_process(conn, batch, now, _LOOKUPS, process_stepwise)


def process_stepwise(conn: Conn, batch: Sequence[Work], now: datetime) -> list[Plan]:
    """As `process`, each message's savepoint waited for: a statement the database refuses
    fails only its own message (the batch path falls back to this one)."""
    plans = []
    # Pipeline mode: the writes whose results nobody reads (inserts of timeline lines,
    # outbox entries, thread keys; updates) travel together instead of one round trip each.
    with conn.pipeline(), conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        for work in batch:
            try:
                with conn.transaction():  # SAVEPOINT … RELEASE, or ROLLBACK TO on error
                    plan = _process_one(conn, work.inbox_id, work.keys, work.make_plan, now)
            except psycopg.OperationalError:
                raise  # the connection is gone: nothing of the batch is kept
            except Exception as exc:  # a bug in planning: keep the message for a human
                plan = _fall_back(conn, work, f"processing failed: {type(exc).__name__}", now)
            plans.append(plan)
    return plans


def _fall_back(conn: Conn, work: Work, problem: str, now: datetime) -> Plan:
    """The rescue plan (emergency mail: a P1 for a person), else the plain fallback."""
    if work.rescue is not None:
        rescue = work.rescue
        try:
            with conn.transaction():
                return _process_one(
                    conn, work.inbox_id, None, lambda ctx: rescue(problem, ctx), now
                )
        except psycopg.OperationalError:
            raise
        except Exception as exc:  # the rescue failed as well: the plain fallback, which cannot
            log.error("inbox.rescue_failed", inbox_id=work.inbox_id, error=type(exc).__name__)
    return _process_one(conn, work.inbox_id, None, _fixed(work.fallback(problem)), now)


def _fixed(plan: Plan) -> Callable[[PlanContext], Plan]:
    return lambda _ctx: plan


def _process_one(
    conn: Conn,
    inbox_id: int,
    keys: ThreadKeys | None,
    make_plan: Callable[[PlanContext], Plan],
    now: datetime,
) -> Plan:
    row = conn.execute("SELECT state FROM inbox WHERE id = %s", (inbox_id,)).fetchone()
    if row is None or row[0] != "pending":
        return Plan(outcome="already processed")
    context = PlanContext(
        thread=find_thread(conn, keys) if keys else None,
        next_id=next_incident_id(conn),
        find=lambda iid: load_incident(conn, iid, with_timeline=False),
        open_incidents=lambda: list_incidents(conn, open_only=True),
        history=partial(history, conn, inbox_id),
        recent_open=partial(recent_open_incidents, conn),
        answers=partial(answer_fits, conn),
        alert_ids=partial(open_alert_ids, conn),
    )
    plan = make_plan(context)
    apply_plan(conn, plan, now)
    if plan.digest is not None:
        record_digest(conn, inbox_id, plan.digest)
    # a held message waits apart for an operator (gateway.store.postgres.held)
    conn.execute(
        "UPDATE inbox SET state = %s, outcome = %s, processed_at = %s WHERE id = %s",
        ("held" if plan.held else "done", plan.outcome, ts(now), inbox_id),
    )
    return plan


def record_digest(conn: Conn, inbox_id: int, digest: Digest) -> None:
    """Record a processed message's digest (once per inbox row)."""
    conn.execute(
        "INSERT INTO inbox_digest (inbox_id, sender, body_hash, at)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (inbox_id) DO UPDATE SET"
        " sender = excluded.sender, body_hash = excluded.body_hash, at = excluded.at",
        (inbox_id, digest.sender, digest.content, ts(digest.at)),
    )


def history(
    conn: Conn,
    inbox_id: int,
    sender: str,
    content: str,
    at: datetime,
    window_s: float,
    cap: int = 1_000_000,
) -> SenderHistory:
    """Count the messages recorded before this one in the windows that end at `at`."""
    since = ts(at - timedelta(seconds=window_s))
    # The global count is of untrusted buckets only, spelled as in the partial index
    # inbox_digest_untrusted (schema 3), so however much trusted mail arrives it costs nothing.
    # Both counts in one query: one round trip.
    row = conn.execute(
        "SELECT d.n, d.same, (SELECT COUNT(*) FROM (SELECT 1 FROM inbox_digest"
        " WHERE substr(sender, 1, 2) = 'u:' AND at >= %s AND at <= %s AND inbox_id != %s"
        " LIMIT %s) g) FROM (SELECT COUNT(*) AS n,"
        " COALESCE(SUM(CASE WHEN body_hash = %s THEN 1 ELSE 0 END), 0) AS same"
        " FROM (SELECT body_hash FROM inbox_digest WHERE sender = %s AND at >= %s"
        " AND at <= %s AND inbox_id != %s LIMIT %s) s) d",
        (
            ts(at - timedelta(seconds=GLOBAL_WINDOW_S)),
            ts(at),
            inbox_id,
            cap,
            content,
            sender,
            since,
            ts(at),
            inbox_id,
            cap,
        ),
    ).fetchone()
    if row is None:
        raise RuntimeError("COUNT returns a row")
    return SenderHistory(int(row[0]), int(row[1]), int(row[2]))


def answer_fits(conn: Conn, address: str, at: datetime, window_s: float, limit: int) -> bool:
    """Whether one more automatic answer to `address` at `at` stays within `limit` per
    `window_s`; records it when it does (gateway.store.answer_db, under the write lock)."""
    address = address.strip().lower()
    since = ts(at - timedelta(seconds=window_s))
    row = conn.execute(
        "SELECT COUNT(*) FROM (SELECT 1 FROM answer_log WHERE address = %s AND at > %s LIMIT %s) d",
        (address, since, limit),
    ).fetchone()
    if row is None:
        raise RuntimeError("COUNT returns a row")
    if int(row[0]) >= limit:
        return False
    conn.execute("DELETE FROM answer_log WHERE address = %s AND at <= %s", (address, since))
    conn.execute("INSERT INTO answer_log (address, at) VALUES (%s, %s)", (address, ts(at)))
    return True


def open_alert_ids(conn: Conn, limit: int = ALERT_LIMIT) -> list[int]:
    """Ids of unresolved, unmerged incidents flagged as alerts, newest first
    (gateway.store.alert_db)."""
    return [
        int(row[0])
        for row in conn.execute(
            "SELECT id FROM incidents WHERE status != 'resolved' AND merged_into IS NULL"
            " AND flags LIKE '%%\"alert\"%%' ORDER BY id DESC LIMIT %s",
            (limit,),
        ).fetchall()
    ]


_LOOKUPS = Lookups(history, answer_fits, open_alert_ids, record_digest)
