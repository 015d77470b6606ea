"""Turning stored rows into domain values, the same for every backend (both store the same
columns, with instants as ISO-8601 text and lists as JSON)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from gateway.domain import Incident, Reporter, Status, TimelineEvent, incident_ref
from gateway.store.db import from_ts
from rules.types import Mailbox, Period, Priority


def incident_of(
    row: Sequence[Any],
    reporters: tuple[Reporter, ...],
    timeline: tuple[TimelineEvent, ...],
    pages: int,
) -> Incident:
    """An incident from its row (the stores' `_COLUMNS`, in that order) and the
    reporters, timeline and page count read beside it."""
    iid = int(row[0])
    return Incident(
        id=iid,
        ref=incident_ref(iid),
        title=row[1],
        priority=Priority(row[2]),
        status=Status(row[3]),
        mailbox=Mailbox(row[4]),
        created_at=datetime.fromisoformat(row[5]),
        rule=row[6],
        reasons=tuple(json.loads(row[7])),
        period=Period(row[8]) if row[8] else None,
        respond_by=from_ts(row[9]),
        next_update_by=from_ts(row[10]),
        reporters=reporters,
        timeline=timeline,
        pages_sent=pages,
        flags=tuple(json.loads(row[11])),
        lead=row[12],
        comms=row[13],
        chat_root=row[14],
        merged_into=None if row[15] is None else int(row[15]),
    )
