"""Turning stored rows (incidents, pending messages) into domain values and an accepted
message into its row, the same for every backend (both store the same columns, with
instants as ISO-8601 text and lists as JSON), and the dialect-free SQL of the outbox's
lanes (which entries must go out in order)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from gateway.domain import (
    Channel,
    InboxRow,
    Incident,
    NewMessage,
    OutboxKind,
    Reporter,
    Status,
    TimelineEvent,
    dumps,
    incident_ref,
)
from gateway.payloads import PAGE_LANE_KINDS, ROOM_LANE_KINDS
from gateway.store.db import from_ts, ts
from rules.types import Mailbox, Period, Priority

# The columns of `incidents` that incident_of reads, in its order.
INCIDENT_COLUMNS = (
    "id, title, priority, status, mailbox, created_at, rule, reasons, period, respond_by,"
    " next_update_by, flags, lead, comms, chat_root, merged_into"
)


def incident_of(
    row: Sequence[Any],
    reporters: tuple[Reporter, ...],
    timeline: tuple[TimelineEvent, ...],
    pages: int,
) -> Incident:
    """An incident from its row (INCIDENT_COLUMNS, in that order) and the
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


# The columns of `inbox` an accepted message fills (inbox_values), in their order.
NEW_INBOX_COLUMNS = "received_at, channel, mailbox, mail_from, rcpt_to, dedup_key, raw, client"


def inbox_values(m: NewMessage) -> tuple[Any, ...]:
    """The values of NEW_INBOX_COLUMNS for an accepted message."""
    return (
        ts(m.received_at),
        m.channel,
        m.mailbox,
        m.mail_from,
        dumps(list(m.rcpt_to)),
        m.dedup_key,
        m.raw,
        m.client,
    )


# The columns of `inbox` that inbox_row_of reads, in its order.
INBOX_COLUMNS = "id, channel, mailbox, mail_from, rcpt_to, received_at, raw, client, released_at"


def inbox_row_of(r: Sequence[Any]) -> InboxRow:
    """A pending message from its row (INBOX_COLUMNS, in that order)."""
    return InboxRow(
        int(r[0]),
        Channel(r[1]),
        Mailbox(r[2]) if r[2] else None,
        r[3],
        tuple(json.loads(r[4])),
        datetime.fromisoformat(r[5]),
        bytes(r[6]),
        r[7],
        released=r[8] is not None,
    )


JsonField = Callable[[str, str], str]  # (table alias, key) -> the dialect's JSON text of it


def _kinds(kinds: frozenset[OutboxKind]) -> str:
    return ", ".join(f"'{k.value}'" for k in sorted(kinds))


def lane_sql(alias: str, field: JsonField) -> str:
    """`gateway.payloads.lane_of` in SQL: the lane of the outbox row `alias` (NULL for none;
    `alias` "" leaves the columns unqualified, as an index expression must on SQLite)."""
    kind = f"{alias}.kind" if alias else "kind"
    return (
        f"CASE WHEN {kind} IN ({_kinds(ROOM_LANE_KINDS)})"
        f" THEN 'room:' || {field(alias, 'room_id')}"
        f" WHEN {kind} IN ({_kinds(PAGE_LANE_KINDS)})"
        f" THEN 'page:' || COALESCE({field(alias, 'route')}, '') || ':'"
        f" || {field(alias, 'dedup_key')} END"
    )


def lane_clear_sql(field: JsonField, busy: str = "") -> str:
    """A condition on an `outbox` row: no earlier pending entry of its lane is due later
    than it (or, with `busy`, a condition on `e`, is being delivered elsewhere). With
    entries taken in (next_attempt_at, id) order, a lane then never goes out of order:
    a retry's delay holds back what was queued after it in the same lane."""
    held = "e.next_attempt_at > outbox.next_attempt_at" + (f" OR {busy}" if busy else "")
    return (
        f"(outbox.kind NOT IN ({_kinds(ROOM_LANE_KINDS | PAGE_LANE_KINDS)}) OR NOT EXISTS ("  # noqa: S608  (constants only)
        "SELECT 1 FROM outbox e WHERE e.state = 'pending' AND e.id < outbox.id"
        f" AND ({held}) AND {lane_sql('e', field)} = {lane_sql('outbox', field)}))"
    )
