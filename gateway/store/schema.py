"""The SQLite schema, changed only through ordered migrations (PRAGMA user_version)."""

from __future__ import annotations

import sqlite3

from gateway.store.rows import lane_sql


def lane_field(alias: str, key: str) -> str:
    """A payload key as text, as the outbox's lane check and its index spell it."""
    return f"json_extract({alias + '.' if alias else ''}payload, '$.{key}')"


MIGRATIONS: tuple[str, ...] = (
    # 1: inbox, incidents, reporters, thread keys, timeline, outbox, pages, tickets, kv
    """
    CREATE TABLE inbox (
        id INTEGER PRIMARY KEY,
        received_at TEXT NOT NULL,
        channel TEXT NOT NULL,
        mailbox TEXT,
        mail_from TEXT NOT NULL,
        rcpt_to TEXT NOT NULL,
        dedup_key TEXT UNIQUE,
        raw BLOB NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        outcome TEXT,
        processed_at TEXT
    );
    CREATE INDEX inbox_pending ON inbox(id) WHERE state = 'pending';
    CREATE TABLE incidents (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL,
        priority TEXT NOT NULL,
        status TEXT NOT NULL,
        mailbox TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        rule TEXT,
        reasons TEXT NOT NULL,
        period TEXT,
        respond_by TEXT,
        next_update_by TEXT,
        flags TEXT NOT NULL DEFAULT '[]',
        lead TEXT,
        comms TEXT,
        acknowledged_at TEXT,
        resolved_at TEXT,
        merged_into INTEGER REFERENCES incidents(id),
        chat_root TEXT
    );
    CREATE INDEX incidents_status ON incidents(status);
    CREATE TABLE reporters (
        id INTEGER PRIMARY KEY,
        incident_id INTEGER NOT NULL REFERENCES incidents(id),
        channel TEXT NOT NULL,
        address TEXT NOT NULL,
        created_at TEXT NOT NULL,
        room_id TEXT,
        thread_root TEXT,
        UNIQUE (incident_id, channel, address)
    );
    CREATE TABLE thread_keys (
        key TEXT PRIMARY KEY,
        incident_id INTEGER NOT NULL REFERENCES incidents(id),
        reporter_id INTEGER REFERENCES reporters(id),
        direction TEXT NOT NULL
    );
    CREATE TABLE timeline (
        id INTEGER PRIMARY KEY,
        incident_id INTEGER NOT NULL REFERENCES incidents(id),
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT NOT NULL,
        text TEXT NOT NULL,
        data TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX timeline_incident ON timeline(incident_id, id);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        created_at TEXT NOT NULL,
        kind TEXT NOT NULL,
        incident_id INTEGER REFERENCES incidents(id),
        payload TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_error TEXT,
        result TEXT,
        done_at TEXT
    );
    CREATE INDEX outbox_due ON outbox(next_attempt_at) WHERE state = 'pending';
    CREATE TABLE pages (
        id INTEGER PRIMARY KEY,
        incident_id INTEGER NOT NULL REFERENCES incidents(id),
        outbox_id INTEGER UNIQUE REFERENCES outbox(id),
        provider TEXT NOT NULL,
        action TEXT NOT NULL,
        dedup_key TEXT NOT NULL,
        at TEXT NOT NULL,
        response TEXT NOT NULL
    );
    CREATE TABLE tickets (
        id INTEGER PRIMARY KEY,
        incident_id INTEGER NOT NULL UNIQUE REFERENCES incidents(id),
        backend TEXT NOT NULL,
        external_id TEXT NOT NULL,
        link TEXT,
        title TEXT NOT NULL,
        status TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: what each processed email looked like, for rate limits and loop detection
    """
    CREATE TABLE inbox_digest (
        inbox_id INTEGER PRIMARY KEY REFERENCES inbox(id),
        sender TEXT NOT NULL,
        body_hash TEXT NOT NULL,
        at TEXT NOT NULL
    );
    CREATE INDEX inbox_digest_sender ON inbox_digest(sender, at);
    CREATE INDEX inbox_digest_at ON inbox_digest(at);
    """,
    # 3: Statuspage incidents opened for our incidents (one per incident)
    """
    CREATE TABLE statuspage_incidents (
        incident_id INTEGER PRIMARY KEY REFERENCES incidents(id),
        page_id TEXT NOT NULL,
        external_id TEXT NOT NULL,
        link TEXT,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    """,
    # 4: SLA reminders, escalations and holding replies that fired (at most once each)
    """
    CREATE TABLE reminders (
        id INTEGER PRIMARY KEY,
        subject TEXT NOT NULL,
        incident_id INTEGER REFERENCES incidents(id),
        kind TEXT NOT NULL,
        due_at TEXT NOT NULL,
        fired_at TEXT NOT NULL,
        UNIQUE (subject, kind, due_at)
    );
    CREATE INDEX reminders_incident ON reminders(incident_id);
    """,
    # 5: automatic answers sent to each address, for the per-address answer limit
    """
    CREATE TABLE answer_log (
        id INTEGER PRIMARY KEY,
        address TEXT NOT NULL,
        at TEXT NOT NULL
    );
    CREATE INDEX answer_log_address ON answer_log(address, at);
    """,
    # 6: the connecting client's address (what rate limits count for unverified mail),
    # held messages kept apart (state 'held') until an operator releases them, and the
    # untrusted mail the global rate counts (gateway.store.storm_db)
    """
    ALTER TABLE inbox ADD COLUMN client TEXT;
    ALTER TABLE inbox ADD COLUMN released_at TEXT;
    CREATE INDEX inbox_held ON inbox(id) WHERE state = 'held';
    CREATE INDEX inbox_digest_untrusted ON inbox_digest(at) WHERE substr(sender, 1, 2) = 'u:';
    """,
    # 7: the SLA index (gateway.store.sla_index): each open incident's next due time, so a
    # scheduler round reads only what is due; every open incident starts as "re-plan at
    # once" (''), the first round computes its time. The open incidents by creation time
    # (the out-of-hours digest), and the lookups that read a batch of incidents with their
    # reporters without a scan (merged incidents, a reporter's thread keys).
    """
    CREATE TABLE sla_next (
        incident_id INTEGER PRIMARY KEY REFERENCES incidents(id),
        due_at TEXT NOT NULL
    );
    CREATE INDEX sla_next_due ON sla_next(due_at);
    INSERT INTO sla_next (incident_id, due_at)
        SELECT id, '' FROM incidents WHERE status != 'resolved' AND merged_into IS NULL;
    CREATE INDEX incidents_open_created ON incidents(created_at)
        WHERE status != 'resolved' AND merged_into IS NULL;
    CREATE INDEX IF NOT EXISTS incidents_merged_into ON incidents(merged_into)
        WHERE merged_into IS NOT NULL;
    CREATE INDEX IF NOT EXISTS thread_keys_reporter ON thread_keys(reporter_id);
    """,
    # 8: the pending outbox entries by lane (gateway.store.rows.lane_sql), so the lane check
    # looks an entry's lane up instead of reading every earlier pending entry's payload:
    # with 2,000 pending entries a due-outbox query took 39 ms without it, 0.2 ms with it.
    # SQLite matches the check's `e.`-qualified expression to this unqualified one; a change
    # of lane_sql needs a migration that builds the index again.
    "CREATE INDEX outbox_lane ON outbox ((" + lane_sql("", lane_field) + "), id)"
    " WHERE state = 'pending';",
)


class SchemaTooNew(RuntimeError):
    """The database was written by a newer version of the daemon."""


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to date, one migration per transaction; returns the version."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > len(MIGRATIONS):
        raise SchemaTooNew(
            f"database schema version {version} is newer than this program ({len(MIGRATIONS)})"
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        # executescript commits first; the BEGIN makes each migration all-or-nothing.
        conn.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    return len(MIGRATIONS)


def connect(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    """Open the database with the durability settings the daemon relies on."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is on disk before we answer 250; NORMAL could lose it on power loss.
        conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn
