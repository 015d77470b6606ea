"""The SLA scheduler's bulk read of open incidents gives exactly what the per-incident read
gives, merged reporters, thread keys and page counts included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.domain import Channel, NewIncident, Plan, Reporter, TimelineEvent
from gateway.store import db, schema
from gateway.store.incidents import apply_plan, load_incident, open_incidents
from rules.types import Mailbox, Priority

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def opened(n: int, channel: Channel = Channel.EMAIL) -> Plan:
    address = f"user{n}@tenant.example"
    keys = (f"<m{n}@tenant.example>", f"<m{n}b@tenant.example>")
    return Plan(
        outcome="opened",
        new_incident=NewIncident(
            title=f"Site down {n}",
            priority=Priority.P2,
            mailbox=Mailbox.EMERGENCY,
            rule="apps-5xx",
            reasons=("a reason",),
            period=None,
            respond_by=NOW + timedelta(minutes=n),
            next_update_by=None,
        ),
        reporter=Reporter(channel, address, keys),
        timeline=(TimelineEvent(NOW, "reported", address, "Reported"),),
        message_ids=(*keys, f"<inc-{n}.ack@gw.example>"),
    )


def filled(path: Path) -> db.sqlite3.Connection:
    conn = schema.connect(str(path))
    schema.migrate(conn)
    with db.transaction(conn):
        ids = [apply_plan(conn, opened(n), NOW) for n in range(1, 7)]
        # 2 merged into 1 (its reporter follows 1), 3 resolved, 4 joined by a second reporter.
        apply_plan(conn, Plan(outcome="merged", incident_id=ids[0], merge_source=ids[1]), NOW)
        apply_plan(
            conn, Plan(outcome="resolved", incident_id=ids[2], changes={"status": "resolved"}), NOW
        )
        apply_plan(
            conn,
            Plan(
                outcome="joined",
                incident_id=ids[3],
                reporter=Reporter(Channel.EMAIL, "bob@tenant.example", ("<j1@tenant.example>",)),
                message_ids=("<j1@tenant.example>",),
            ),
            NOW,
        )
        for iid in (ids[0], ids[0], ids[4]):
            conn.execute(
                "INSERT INTO pages (incident_id, provider, action, dedup_key, at,"
                " response) VALUES (?, 'local', 'trigger', 'k', ?, '{}')",
                (iid, db.ts(NOW)),
            )
    return conn


def test_bulk_read_equals_the_per_incident_read(tmp_path: Path) -> None:
    """open_incidents returns the same incidents, in the same order, as reading each open
    incident on its own."""
    conn = filled(tmp_path / "gateway.sqlite3")
    try:
        bulk = open_incidents(conn)
        ids = [
            iid
            for (iid,) in conn.execute(
                "SELECT id FROM incidents WHERE status != 'resolved' AND merged_into IS NULL"
                " ORDER BY id DESC"
            )
        ]
        one_by_one = [load_incident(conn, iid, with_timeline=False) for iid in ids]
    finally:
        conn.close()
    assert bulk == one_by_one
    by_title = {i.title: i for i in bulk}
    assert set(by_title) == {"Site down 1", "Site down 4", "Site down 5", "Site down 6"}
    assert [r.address for r in by_title["Site down 1"].reporters] == [
        "user1@tenant.example",
        "user2@tenant.example",
    ]
    assert by_title["Site down 1"].pages_sent == 2 and by_title["Site down 5"].pages_sent == 1
    assert by_title["Site down 4"].reporters[1].message_ids == ("<j1@tenant.example>",)
