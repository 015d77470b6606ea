"""Synchronous SQLite operations on one connection: every write is one transaction.

Only gateway.store.sqlite calls these, from its single database thread; the CLI uses the read
functions on its own read-only connection while the daemon runs (WAL allows it).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from gateway.deliver import deadletter
from gateway.domain import (
    INCIDENT_CHANGES,
    Channel,
    InboxRow,
    Incident,
    OutboxEntry,
    OutboxKind,
    OutboxSpec,
    OutboxState,
    Plan,
    PlanContext,
    Reporter,
    Status,
    TimelineEvent,
    dumps,
    incident_ref,
)
from gateway.plan.replies import delivered_text
from gateway.store import alert_db, mirror_db, storm_db
from rules.types import Mailbox, Period, Priority

_COLUMNS = ("id, title, priority, status, mailbox, created_at, rule, reasons, period, respond_by,"
            " next_update_by, flags, lead, comms, chat_root, merged_into")
_SUBJECT_TAG = re.compile(r"\[INC-(\d{1,12})\]", re.IGNORECASE)


def ts(value: datetime) -> str:
    """A sortable UTC timestamp string."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


@dataclass(frozen=True)
class Accepted:
    """The result of accepting one message: its inbox id, and whether it was a re-send."""

    inbox_id: int
    duplicate: bool


@dataclass(frozen=True)
class NewMessage:
    """A message to accept into the inbox."""

    channel: Channel
    mailbox: Mailbox | None
    mail_from: str
    rcpt_to: tuple[str, ...]
    raw: bytes
    dedup_key: str | None
    received_at: datetime


@dataclass(frozen=True)
class ThreadKeys:
    """What a message offers to find the incident it belongs to."""

    message_ids: tuple[str, ...]
    subject: str = ""
    sender: str = ""
    incident_id: int | None = None  # named explicitly by someone allowed to (an engineer)
    # Email: the incidents named by references we issued (gateway.plan.tokens); then only the
    # sender's own earlier ids and [INC-n] can also attach, and only when the sender is a
    # reporter not shown to be forged. None (chat): every key as stored attaches.
    issued: tuple[int, ...] | None = None
    sender_authentic: bool = True


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def accept_many(conn: sqlite3.Connection, messages: Sequence[NewMessage]) -> list[Accepted]:
    """Insert a batch of messages in one transaction (one fsync for the whole group)."""
    results = []
    with transaction(conn):
        for m in messages:
            cur = conn.execute(
                "INSERT OR IGNORE INTO inbox (received_at, channel, mailbox, mail_from, rcpt_to,"
                " dedup_key, raw) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (ts(m.received_at), m.channel, m.mailbox, m.mail_from,
                 dumps(list(m.rcpt_to)), m.dedup_key, m.raw),
            )
            if cur.rowcount:
                results.append(Accepted(int(cur.lastrowid or 0), duplicate=False))
            else:
                (existing,) = conn.execute(
                    "SELECT id FROM inbox WHERE dedup_key = ?", (m.dedup_key,)
                ).fetchone()
                results.append(Accepted(int(existing), duplicate=True))
    return results


def pending_inbox(conn: sqlite3.Connection, limit: int) -> list[InboxRow]:
    """The oldest messages not yet processed."""
    rows = conn.execute(
        "SELECT id, channel, mailbox, mail_from, rcpt_to, received_at, raw FROM inbox"
        " WHERE state = 'pending' ORDER BY id LIMIT ?",
        (limit,),
    ).fetchall()
    return [
        InboxRow(r[0], Channel(r[1]), Mailbox(r[2]) if r[2] else None, r[3],
                 tuple(json.loads(r[4])), datetime.fromisoformat(r[5]), bytes(r[6]))
        for r in rows
    ]


def find_thread(conn: sqlite3.Connection, keys: ThreadKeys) -> Incident | None:
    """The incident a message belongs to: by a Message-ID we know, or by [INC-n] in the
    subject when the sender is already one of that incident's reporters (a stranger who
    guesses a reference does not get in)."""
    if keys.incident_id is not None:
        return load_incident(conn, keys.incident_id, with_timeline=False)
    if keys.issued is not None:
        return _mail_thread(conn, keys)
    for key in keys.message_ids:
        row = conn.execute("SELECT incident_id FROM thread_keys WHERE key = ?", (key,)).fetchone()
        if row:
            return load_incident(conn, int(row[0]), with_timeline=False)
    for match in _SUBJECT_TAG.finditer(keys.subject):
        incident = load_incident(conn, int(match.group(1)), with_timeline=False)
        if incident and any(r.address == keys.sender for r in incident.reporters):
            return incident
    return None


def _mail_thread(conn: sqlite3.Connection, keys: ThreadKeys) -> Incident | None:
    for iid in keys.issued or ():
        incident = load_incident(conn, iid, with_timeline=False)
        if incident:
            return incident
    if not keys.sender_authentic:
        return None
    candidates = [int(row[0]) for key in keys.message_ids for row in conn.execute(
        "SELECT incident_id FROM thread_keys WHERE key = ? AND direction = 'in'", (key,))]
    candidates += [int(m.group(1)) for m in _SUBJECT_TAG.finditer(keys.subject)]
    for iid in candidates:
        incident = load_incident(conn, iid, with_timeline=False)
        if incident and any(r.address == keys.sender for r in incident.reporters):
            return incident
    return None


def next_incident_id(conn: sqlite3.Connection) -> int:
    """The id the next incident will get (only one writer, inside its transaction)."""
    (value,) = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM incidents").fetchone()
    return int(value)


@dataclass(frozen=True)
class Work:
    """One accepted message to process: how to find its thread, how to plan it, and the plan
    to fall back on if planning fails (so a bug never loses the message)."""

    inbox_id: int
    keys: ThreadKeys | None
    make_plan: Callable[[PlanContext], Plan]
    fallback: Callable[[str], Plan]


def process(conn: sqlite3.Connection, batch: Sequence[Work], now: datetime) -> list[Plan]:
    """Find each message's thread, ask the pure pipeline for a plan, apply it and mark the
    message processed. The whole batch is one transaction (one fsync); each message is a
    savepoint, so one that fails falls back alone. A crash leaves all or nothing."""
    plans = []
    with transaction(conn):
        for work in batch:
            conn.execute("SAVEPOINT message")
            try:
                plan = _process_one(conn, work.inbox_id, work.keys, work.make_plan, now)
            except Exception as exc:  # a bug in planning: keep the message for a human
                conn.execute("ROLLBACK TO message")
                failed = work.fallback(f"processing failed: {type(exc).__name__}")
                plan = _process_one(conn, work.inbox_id, None, _fixed(failed), now)
            conn.execute("RELEASE message")
            plans.append(plan)
    return plans


def _fixed(plan: Plan) -> Callable[[PlanContext], Plan]:
    return lambda _ctx: plan


def _process_one(
    conn: sqlite3.Connection,
    inbox_id: int,
    keys: ThreadKeys | None,
    make_plan: Callable[[PlanContext], Plan],
    now: datetime,
) -> Plan:
    (state,) = conn.execute("SELECT state FROM inbox WHERE id = ?", (inbox_id,)).fetchone()
    if state != "pending":
        return Plan(outcome="already processed")
    context = PlanContext(
        thread=find_thread(conn, keys) if keys else None,
        next_id=next_incident_id(conn),
        find=lambda iid: load_incident(conn, iid, with_timeline=False),
        open_incidents=lambda: list_incidents(conn, open_only=True),
        history=partial(storm_db.history, conn, inbox_id),
        recent_open=partial(recent_open_incidents, conn),
        alert_ids=partial(alert_db.open_alert_ids, conn),
    )
    plan = make_plan(context)
    apply_plan(conn, plan, now)
    conn.execute(
        "UPDATE inbox SET state = 'done', outcome = ?, processed_at = ? WHERE id = ?",
        (plan.outcome, ts(now), inbox_id),
    )
    return plan


def apply_plan(conn: sqlite3.Connection, plan: Plan, now: datetime) -> int | None:
    """Write a plan's incident, reporter, thread keys, timeline and outbox entries (an
    answer in chat may have outbox entries and no incident)."""
    incident_id = plan.incident_id
    if plan.new_incident is not None:
        n = plan.new_incident
        cur = conn.execute(
            "INSERT INTO incidents (title, priority, status, mailbox, created_at, updated_at, rule,"
            " reasons, period, respond_by, next_update_by, flags)"
            " VALUES (?, ?, 'open', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (n.title, n.priority, n.mailbox, ts(now), ts(now), n.rule, dumps(list(n.reasons)),
             n.period, n.respond_by and ts(n.respond_by),
             n.next_update_by and ts(n.next_update_by), dumps(list(n.flags))),
        )
        incident_id = int(cur.lastrowid or 0)
    for spec in plan.outbox:
        conn.execute(
            "INSERT INTO outbox (created_at, kind, incident_id, payload, next_attempt_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (ts(now), spec.kind, incident_id, dumps(dict(spec.payload)), ts(now)),
        )
    if incident_id is None:
        return None
    if plan.reopen:
        conn.execute(
            "UPDATE incidents SET status = 'open', resolved_at = NULL, updated_at = ? WHERE id = ?",
            (ts(now), incident_id),
        )
    _update_incident(conn, incident_id, plan.changes, now)
    if plan.merge_source is not None:
        conn.execute("UPDATE incidents SET merged_into = ?, updated_at = ? WHERE id = ?",
                     (incident_id, ts(now), plan.merge_source))
    reporter_id = _add_reporter(conn, incident_id, plan.reporter, now)
    for key in plan.message_ids:
        conn.execute(
            "INSERT OR IGNORE INTO thread_keys (key, incident_id, reporter_id, direction)"
            " VALUES (?, ?, ?, ?)",
            (key, incident_id, reporter_id,
             "in" if plan.reporter and key in plan.reporter.message_ids else "out"),
        )
    for event in plan.timeline:
        add_timeline(conn, incident_id, event)
    return incident_id


def _update_incident(
    conn: sqlite3.Connection, incident_id: int, changes: Mapping[str, Any], now: datetime
) -> None:
    unknown = set(changes) - INCIDENT_CHANGES
    if unknown:
        raise ValueError(f"not an incident field that can change: {sorted(unknown)}")
    if not changes:
        return
    values = [ts(v) if isinstance(v, datetime) else v for v in changes.values()]
    assignments = ", ".join(f"{name} = ?" for name in changes)  # names checked above
    conn.execute(f"UPDATE incidents SET {assignments}, updated_at = ? WHERE id = ?",  # noqa: S608
                 (*values, ts(now), incident_id))


def _add_reporter(
    conn: sqlite3.Connection, incident_id: int, reporter: Reporter | None, now: datetime
) -> int | None:
    if reporter is None:
        return None
    conn.execute(
        "INSERT OR IGNORE INTO reporters (incident_id, channel, address, created_at, room_id,"
        " thread_root) VALUES (?, ?, ?, ?, ?, ?)",
        (incident_id, reporter.channel, reporter.address, ts(now), reporter.room_id,
         reporter.thread_root),
    )
    (rid,) = conn.execute(
        "SELECT id FROM reporters WHERE incident_id = ? AND channel = ? AND address = ?",
        (incident_id, reporter.channel, reporter.address),
    ).fetchone()
    return int(rid)


def add_timeline(conn: sqlite3.Connection, incident_id: int, event: TimelineEvent) -> None:
    """Append one event to an incident's timeline."""
    conn.execute(
        "INSERT INTO timeline (incident_id, at, kind, actor, text, data) VALUES (?, ?, ?, ?, ?, ?)",
        (incident_id, ts(event.at), event.kind, event.actor, event.text, dumps(dict(event.data))),
    )


def load_incident(
    conn: sqlite3.Connection, incident_id: int, *, with_timeline: bool = True
) -> Incident | None:
    """One incident with its reporters (and timeline), or None."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM incidents WHERE id = ?",  # noqa: S608  (constant columns)
        (incident_id,),
    ).fetchone()
    if row is None:
        return None
    return _incident(conn, row, with_timeline)


def _incident(conn: sqlite3.Connection, row: Sequence[Any], with_timeline: bool) -> Incident:
    iid = int(row[0])
    reporters = []
    # Reporters of incidents merged into this one follow it too.
    for rid, channel, address, room_id, thread_root in conn.execute(
        "SELECT id, channel, address, room_id, thread_root FROM reporters WHERE incident_id = ?"
        " OR incident_id IN (SELECT id FROM incidents WHERE merged_into = ?) ORDER BY id",
        (iid, iid),
    ):
        keys = tuple(k for (k,) in conn.execute(
            "SELECT key FROM thread_keys WHERE reporter_id = ? AND direction = 'in' ORDER BY rowid",
            (rid,),
        ))
        reporters.append(Reporter(Channel(channel), address, keys, room_id, thread_root))
    timeline: list[TimelineEvent] = []
    if with_timeline:
        timeline = [
            TimelineEvent(datetime.fromisoformat(at), kind, actor, text, json.loads(data))
            for at, kind, actor, text, data in conn.execute(
                "SELECT at, kind, actor, text, data FROM timeline WHERE incident_id = ?"
                " ORDER BY id", (iid,),
            )
        ]
    (pages,) = conn.execute(
        "SELECT COUNT(*) FROM pages WHERE incident_id = ? AND action = 'trigger'", (iid,)
    ).fetchone()
    return _incident_of(row, tuple(reporters), tuple(timeline), int(pages))


def _incident_of(row: Sequence[Any], reporters: tuple[Reporter, ...],
                 timeline: tuple[TimelineEvent, ...], pages: int) -> Incident:
    iid = int(row[0])
    return Incident(
        id=iid, ref=incident_ref(iid), title=row[1], priority=Priority(row[2]),
        status=Status(row[3]), mailbox=Mailbox(row[4]),
        created_at=datetime.fromisoformat(row[5]), rule=row[6],
        reasons=tuple(json.loads(row[7])), period=Period(row[8]) if row[8] else None,
        respond_by=_dt(row[9]), next_update_by=_dt(row[10]), reporters=reporters,
        timeline=timeline, pages_sent=pages, flags=tuple(json.loads(row[11])),
        lead=row[12], comms=row[13], chat_root=row[14], merged_into=row[15],
    )


def list_incidents(conn: sqlite3.Connection, *, open_only: bool = False) -> list[Incident]:
    """Every incident (or the unresolved ones not merged away), newest first, no timelines."""
    if open_only:
        return open_incidents(conn)
    rows = conn.execute(f"SELECT {_COLUMNS} FROM incidents ORDER BY id DESC").fetchall()  # noqa: S608
    return [_incident(conn, row, with_timeline=False) for row in rows]


# Reporters of open incidents: a reporter follows its incident, or the one it was merged into.
_OPEN_REPORTERS = (
    "SELECT r.id, r.channel, r.address, r.room_id, r.thread_root,"
    " COALESCE(i.merged_into, i.id) AS owner"
    " FROM reporters r JOIN incidents i ON i.id = r.incident_id"
    " WHERE COALESCE(i.merged_into, i.id) IN (SELECT id FROM incidents"
    " WHERE status != 'resolved' AND merged_into IS NULL)")


def open_incidents(conn: sqlite3.Connection) -> list[Incident]:
    """The unresolved incidents not merged away, newest first, no timelines: in four queries
    instead of three per incident (the SLA scheduler reads every open incident each round)."""
    keys: dict[int, list[str]] = {}
    for rid, key in conn.execute(
            "SELECT reporter_id, key FROM thread_keys WHERE direction = 'in'"  # noqa: S608
            " AND reporter_id IN (SELECT id FROM (" + _OPEN_REPORTERS + ")) ORDER BY rowid"):
        keys.setdefault(rid, []).append(key)
    reporters: dict[int, list[Reporter]] = {}
    for rid, channel, address, room_id, thread_root, owner in conn.execute(
            _OPEN_REPORTERS + " ORDER BY r.id"):
        reporters.setdefault(owner, []).append(
            Reporter(Channel(channel), address, tuple(keys.get(rid, ())), room_id, thread_root))
    pages = dict(conn.execute(
        "SELECT incident_id, COUNT(*) FROM pages WHERE action = 'trigger' GROUP BY incident_id"
    ).fetchall())
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM incidents"  # noqa: S608  (constant columns)
        " WHERE status != 'resolved' AND merged_into IS NULL ORDER BY id DESC").fetchall()
    return [_incident_of(row, tuple(reporters.get(row[0], ())), (), int(pages.get(row[0], 0)))
            for row in rows]


RECENT_LIMIT = 50  # a storm joins one incident, so the one it joins is among the newest


def recent_open_incidents(conn: sqlite3.Connection, mailbox: Mailbox, since: datetime,
                          title_matches: Callable[[str], bool],
                          limit: int = RECENT_LIMIT) -> list[Incident]:
    """The newest open incidents of a mailbox opened since `since` whose title passes
    `title_matches` (for storm joining): bounded, and only those are read in full, so a
    storm of distinct reports does not make each message read every other."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM incidents WHERE status != 'resolved' AND merged_into IS NULL"  # noqa: S608
        " AND mailbox = ? AND created_at >= ? ORDER BY id DESC LIMIT ?",
        (mailbox.value, ts(since), limit)).fetchall()
    return [_incident(conn, row, with_timeline=False) for row in rows if title_matches(row[1])]


def due_outbox(conn: sqlite3.Connection, now: datetime, limit: int) -> list[OutboxEntry]:
    """Pending entries whose next attempt is due, oldest first."""
    rows = conn.execute(
        "SELECT id, kind, incident_id, payload, attempts FROM outbox"
        " WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?",
        (ts(now), limit),
    ).fetchall()
    return [OutboxEntry(r[0], OutboxKind(r[1]), r[2], json.loads(r[3]), r[4]) for r in rows]


def next_outbox_due(conn: sqlite3.Connection) -> datetime | None:
    """When the next pending entry is due, if any."""
    (value,) = conn.execute(
        "SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending'"
    ).fetchone()
    return _dt(value)


@dataclass(frozen=True)
class Attempt:
    """How one delivery attempt went: a result (done), or an error and when to retry."""

    entry: OutboxEntry
    result: dict[str, Any] | None = None
    error: str = ""
    next_at: datetime | None = None
    dead: bool = False
    alert: OutboxSpec | None = None  # queued for engineers when the entry goes dead


def settle_outbox(conn: sqlite3.Connection, attempts: Sequence[Attempt], now: datetime) -> None:
    """Record a round of attempts in one transaction. A delivery is marked done in the same
    transaction that records its effect, and only once (a second completion changes nothing)."""
    with transaction(conn):
        for a in attempts:
            if a.result is not None:
                cur = conn.execute(
                    "UPDATE outbox SET state = ?, attempts = attempts + 1, result = ?,"
                    " done_at = ?, last_error = NULL WHERE id = ? AND state = 'pending'",
                    (OutboxState.DONE, dumps(a.result), ts(now), a.entry.id),
                )
                if cur.rowcount and a.entry.incident_id is not None:
                    _record_effect(conn, a.entry, a.result, now)
            else:
                cur = conn.execute(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = ?,"
                    " next_attempt_at = ?, state = ? WHERE id = ? AND state = 'pending'",
                    (a.error[:500], ts(a.next_at or now),
                     OutboxState.DEAD if a.dead else OutboxState.PENDING, a.entry.id),
                )
                if cur.rowcount and a.dead:
                    _record_dead(conn, a, now)


def _record_dead(conn: sqlite3.Connection, a: Attempt, now: datetime) -> None:
    """A dead entry is on its incident's timeline, and its alert (if any) is queued."""
    iid = a.entry.incident_id
    if iid is not None:
        text = deadletter.describe(a.entry, a.error[:500], a.entry.attempts + 1)
        add_timeline(conn, iid, TimelineEvent(now, "dead_lettered", "gateway", text,
                                              {"outbox_id": a.entry.id}))
    if a.alert is not None:
        conn.execute(
            "INSERT INTO outbox (created_at, kind, incident_id, payload, next_attempt_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (ts(now), a.alert.kind, iid, dumps(dict(a.alert.payload)), ts(now)),
        )


def retry_dead(conn: sqlite3.Connection, outbox_id: int, now: datetime) -> str | None:
    """Send a dead entry back to pending with a fresh attempt count, due now. Returns None
    when done, else the entry's state (or "unknown") to explain why nothing changed."""
    with transaction(conn):
        row = conn.execute("SELECT state, incident_id, kind FROM outbox WHERE id = ?",
                           (outbox_id,)).fetchone()
        if row is None:
            return "unknown"
        if row[0] != OutboxState.DEAD:
            return str(row[0])
        conn.execute("UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?"
                     " WHERE id = ?", (ts(now), outbox_id))
        if row[1] is not None:
            add_timeline(conn, int(row[1]), TimelineEvent(
                now, "retry_requested", "operator",
                f"Outbox {outbox_id} ({row[2]}) sent back for delivery", {"outbox_id": outbox_id}))
    return None


def _record_effect(
    conn: sqlite3.Connection, entry: OutboxEntry, result: dict[str, Any], now: datetime
) -> None:
    iid = entry.incident_id
    assert iid is not None
    p = entry.payload
    if entry.kind is OutboxKind.PAGE_TRIGGER:
        conn.execute(
            "INSERT OR IGNORE INTO pages (incident_id, outbox_id, provider, action, dedup_key, at,"
            " response) VALUES (?, ?, ?, 'trigger', ?, ?, ?)",
            (iid, entry.id, result.get("provider", "?"), p["dedup_key"], ts(now), dumps(result)),
        )
        text = (f"Escalation page sent via {result.get('provider', '?')}" if p.get("route")
                else f"Paged the on-call engineer via {result.get('provider', '?')}")
        add_timeline(conn, iid, TimelineEvent(now, "paged", "gateway", text))
    elif entry.kind is OutboxKind.TICKET_CREATE:
        conn.execute(
            "INSERT OR IGNORE INTO tickets (incident_id, backend, external_id, link, title, status,"
            " body, created_at) VALUES (?, ?, ?, ?, ?, 'open', ?, ?)",
            (iid, result.get("backend", "builtin"), str(result.get("external_id", "")),
             result.get("link"), p["title"], p["body"], ts(now)),
        )
        text = f"Ticket {result.get('external_id')} opened ({result.get('backend', 'builtin')})"
        add_timeline(conn, iid, TimelineEvent(now, "ticketed", "gateway", text))
    elif entry.kind in (OutboxKind.PAGE_ACKNOWLEDGE, OutboxKind.PAGE_RESOLVE):
        action = "acknowledge" if entry.kind is OutboxKind.PAGE_ACKNOWLEDGE else "resolve"
        conn.execute(
            "INSERT OR IGNORE INTO pages (incident_id, outbox_id, provider, action, dedup_key, at,"
            " response) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (iid, entry.id, result.get("provider", "?"), action, p["dedup_key"], ts(now),
             dumps(result)),
        )
    elif entry.kind is OutboxKind.MAIL_SEND:
        text = delivered_text(str(p.get("purpose", "reply")), p["rcpt_to"], result)
        add_timeline(conn, iid, TimelineEvent(now, "replied", "gateway", text))
    elif entry.kind is OutboxKind.CHAT_ANNOUNCE:
        event_id = str(result["event_id"])
        conn.execute("UPDATE incidents SET chat_root = ? WHERE id = ?", (event_id, iid))
        conn.execute("INSERT OR IGNORE INTO thread_keys (key, incident_id, direction)"
                     " VALUES (?, ?, 'out')", (chat_key(event_id), iid))
        add_timeline(conn, iid, TimelineEvent(now, "announced", "gateway",
                                              "Announced in the incidents room"))
    elif entry.kind is OutboxKind.CHAT_ALARM and p.get("root"):  # gateway.plan.alarm_rooms
        conn.execute("INSERT OR IGNORE INTO thread_keys (key, incident_id, direction)"
                     " VALUES (?, ?, 'out')", (chat_key(str(result["event_id"])), iid))
    elif entry.kind in mirror_db.MIRROR_KINDS:
        mirror_db.record_effect(conn, entry, result, now, add_timeline)
    elif entry.kind is OutboxKind.CHAT_SEND and p.get("purpose") in ("update", "resolution",
                                                                     "title", "security",
                                                                     "holding", "escalation"):
        text = f"{str(p['purpose']).capitalize()} posted to {p.get('to', 'the room')} in chat"
        add_timeline(conn, iid, TimelineEvent(now, "replied", "gateway", text))


def chat_root(conn: sqlite3.Connection, incident_id: int) -> str | None:
    """The announcement event that roots the incident's chat thread, if posted yet."""
    row = conn.execute("SELECT chat_root FROM incidents WHERE id = ?", (incident_id,)).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def chat_key(event_id: str) -> str:
    """The thread key of a chat event (kept apart from email Message-IDs)."""
    return f"mx:{event_id}"


def kv_get(conn: sqlite3.Connection, key: str) -> str | None:
    """A small persisted value (sync tokens, device ids)."""
    row = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def kv_set(conn: sqlite3.Connection, key: str, value: str) -> None:
    """Persist a small value, durably."""
    with transaction(conn):
        conn.execute("INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE"
                     " SET value = excluded.value", (key, value))


def outbox_rows(conn: sqlite3.Connection, state: str | None = None) -> list[dict[str, Any]]:
    """Outbox entries for operators (no payload bodies)."""
    sql = ("SELECT id, kind, incident_id, state, attempts, next_attempt_at, last_error, created_at"
           " FROM outbox")
    args: tuple[Any, ...] = ()
    if state:
        sql, args = sql + " WHERE state = ?", (state,)
    cols = ("id", "kind", "incident_id", "state", "attempts", "next_attempt_at", "last_error",
            "created_at")
    return [dict(zip(cols, r, strict=True)) for r in conn.execute(sql + " ORDER BY id", args)]


@dataclass(frozen=True)
class QueueStats:
    """How much waits in the inbox and the outbox, for health checks and metrics."""

    inbox_pending: int
    outbox_pending: int
    outbox_oldest: datetime | None  # when the oldest pending entry was created
    outbox_retrying: dict[str, int]  # kind -> pending entries that failed at least once
    outbox_dead: int


def queue_stats(conn: sqlite3.Connection) -> QueueStats:
    """Read-only counts (the pending ones use the partial indexes on state = 'pending')."""
    (inbox,) = conn.execute("SELECT COUNT(*) FROM inbox WHERE state = 'pending'").fetchone()
    pending, oldest = conn.execute(
        "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE state = 'pending'").fetchone()
    retrying = dict(conn.execute(
        "SELECT kind, COUNT(*) FROM outbox WHERE state = 'pending' AND attempts > 0"
        " GROUP BY kind").fetchall())
    (dead,) = conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'dead'").fetchone()
    return QueueStats(int(inbox), int(pending), _dt(oldest), retrying, int(dead))
