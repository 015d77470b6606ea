"""The store's one query for alert joining: the open alert incidents, by id, newest first.

A report that names a component looks for an open alert incident about it; reading every
open incident for that (as the SLA scheduler does) would make each such report cost as much
as the open incidents are many. Alert incidents carry the flag "alert" in their JSON flags
column, so the ids come from one indexed read, bounded."""

from __future__ import annotations

import sqlite3

LIMIT = 200  # an outage has one alert incident per group; the newest are the ones that matter


def open_alert_ids(conn: sqlite3.Connection, limit: int = LIMIT) -> list[int]:
    """Ids of unresolved, unmerged incidents flagged as alerts, newest first."""
    return [
        int(row[0])
        for row in conn.execute(
            "SELECT id FROM incidents WHERE status != 'resolved' AND merged_into IS NULL"
            " AND flags LIKE '%\"alert\"%' ORDER BY id DESC LIMIT ?",
            (limit,),
        )
    ]
