"""Moving up: copy a single-host SQLite state into an empty PostgreSQL database.

Everything the daemon keeps is copied with its ids (the inbox, incidents, reporters,
thread keys in their order, timelines, the outbox with its states, pages, tickets, status
page incidents, fired SLA items, rate-limit digests, automatic answers counted per address,
held messages with their connecting client, and the kv values: IMAP cursors, the
Matrix token and next_batch, the threading key and the instance id) and the files of the
Matrix crypto store (gateway.store.postgres.crypto_files), in one transaction
from one read snapshot of the SQLite file, so a reply to an old incident still threads and
nothing fires twice. The target must be empty; the sequences continue after the copied ids.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.store import schema as sqlite_schema
from gateway.store.postgres import crypto_files
from gateway.store.postgres.schema import Conn, migrate

# (table, columns, order) in foreign-key order; thread_keys keep SQLite's rowid order.
TABLES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (
        "inbox",
        (
            "id",
            "received_at",
            "channel",
            "mailbox",
            "mail_from",
            "rcpt_to",
            "dedup_key",
            "raw",
            "state",
            "outcome",
            "processed_at",
            "client",
            "released_at",
        ),
        "id",
    ),
    (
        "incidents",
        (
            "id",
            "title",
            "priority",
            "status",
            "mailbox",
            "created_at",
            "updated_at",
            "rule",
            "reasons",
            "period",
            "respond_by",
            "next_update_by",
            "flags",
            "lead",
            "comms",
            "acknowledged_at",
            "resolved_at",
            "merged_into",
            "chat_root",
        ),
        "id",
    ),
    (
        "reporters",
        ("id", "incident_id", "channel", "address", "created_at", "room_id", "thread_root"),
        "id",
    ),
    ("thread_keys", ("key", "incident_id", "reporter_id", "direction"), "rowid"),
    ("timeline", ("id", "incident_id", "at", "kind", "actor", "text", "data"), "id"),
    (
        "outbox",
        (
            "id",
            "created_at",
            "kind",
            "incident_id",
            "payload",
            "state",
            "attempts",
            "next_attempt_at",
            "last_error",
            "result",
            "done_at",
        ),
        "id",
    ),
    (
        "pages",
        ("id", "incident_id", "outbox_id", "provider", "action", "dedup_key", "at", "response"),
        "id",
    ),
    (
        "tickets",
        (
            "id",
            "incident_id",
            "backend",
            "external_id",
            "link",
            "title",
            "status",
            "body",
            "created_at",
        ),
        "id",
    ),
    ("kv", ("key", "value"), "key"),
    ("inbox_digest", ("inbox_id", "sender", "body_hash", "at"), "inbox_id"),
    (
        "statuspage_incidents",
        ("incident_id", "page_id", "external_id", "link", "status", "created_at"),
        "incident_id",
    ),
    ("reminders", ("id", "subject", "incident_id", "kind", "due_at", "fired_at"), "id"),
    ("answer_log", ("id", "address", "at"), "id"),
)
_IDENTITY = (
    "inbox",
    "reporters",
    "timeline",
    "outbox",
    "pages",
    "tickets",
    "reminders",
    "answer_log",
)


class MigrationRefused(RuntimeError):
    """The source or the target is not in a state to copy (the message says why)."""


@dataclass(frozen=True)
class Copied:
    """How many rows of each table were copied."""

    rows: dict[str, int]


def copy_state(
    source: sqlite3.Connection, target: Conn, crypto: Mapping[str, bytes] | None = None
) -> Copied:
    """Copy every table and the crypto store's files `crypto` (see the module docstring);
    all or nothing."""
    (version,) = source.execute("PRAGMA user_version").fetchone()
    if version != len(sqlite_schema.MIGRATIONS):
        raise MigrationRefused(
            f"the SQLite state has schema version {version}, this program knows "
            f"{len(sqlite_schema.MIGRATIONS)}: run this version's daemon on it once first"
        )
    migrate(target)
    counts: dict[str, int] = {}
    source.execute("BEGIN")  # one read snapshot of the whole file
    try:
        with target.transaction():
            _refuse_unless_empty(target)
            for table, columns, order in TABLES:
                counts[table] = _copy(source, target, table, columns, order)
            if crypto:
                crypto_files.copy_in(target, crypto)
                counts["matrix_crypto"] = len(crypto)
            # An incident may be merged into a newer one: the links go in once all exist.
            for iid, into in source.execute(
                "SELECT id, merged_into FROM incidents WHERE merged_into IS NOT NULL"
            ):
                target.execute("UPDATE incidents SET merged_into = %s WHERE id = %s", (into, iid))
            for table in (*_IDENTITY, "thread_keys"):
                column = "seq" if table == "thread_keys" else "id"
                target.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"  # noqa: S608
                    f" COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false)"
                )
    finally:
        source.execute("COMMIT")
    return Copied(counts)


def _refuse_unless_empty(target: Conn) -> None:
    for table in ("inbox", "incidents", "outbox", "kv", "matrix_crypto"):
        row = target.execute(f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone()  # noqa: S608
        if row and row[0]:
            raise MigrationRefused(
                f"the PostgreSQL database is not empty (table {table} has "
                "rows): copy into a new database"
            )


def _copy(
    source: sqlite3.Connection, target: Conn, table: str, columns: Sequence[str], order: str
) -> int:
    names = ", ".join(columns)
    picked = ", ".join("NULL" if (table, c) == ("incidents", "merged_into") else c for c in columns)
    rows = source.execute(f"SELECT {picked} FROM {table} ORDER BY {order}")  # noqa: S608
    count = 0
    with target.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            count += 1
    return count
