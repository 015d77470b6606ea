"""Reading incidents back, on either store (gateway.store.dialect): one incident with its
reporters and timeline, all of them, the open ones in bulk, the recent ones a storm may
join, an incident's chat root, ticket and Statuspage incident, the incident a message
belongs to (thread keys and [INC-n] tags, with the rules that keep strangers out), and
the id the next incident gets.

`IncidentReads` holds the queries in one store's dialect; `SQLITE_READS` serves the SQLite
store (gateway.store.incidents, .threads), gateway.store.postgres.incidents binds the same
class to PostgreSQL. Runs on the store's connection, inside the caller's transaction if any.
The one read spelt twice is an incident's reporters with their thread keys: PostgreSQL
gathers each reporter's keys with ARRAY() in the reporters' statement (one round trip),
SQLite reads them per reporter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from gateway.domain import (
    Channel,
    Incident,
    PageRow,
    Reporter,
    ThreadKeys,
    TicketRow,
    TimelineEvent,
)
from gateway.store.db import ts
from gateway.store.dialect import SQLITE, Dialect
from gateway.store.rows import INCIDENT_COLUMNS as _COLUMNS
from gateway.store.rows import incident_of
from rules.types import Mailbox

_SUBJECT_TAG = re.compile(r"\[INC-(\d{1,12})\]", re.IGNORECASE)
RECENT_LIMIT = 50  # a storm joins one incident, so the one it joins is among the newest

# Reporters of open incidents: a reporter follows its incident, or the one it was merged into.
_OPEN_REPORTERS = (
    "SELECT r.id, r.channel, r.address, r.room_id, r.thread_root,"
    " COALESCE(i.merged_into, i.id) AS owner"
    " FROM reporters r JOIN incidents i ON i.id = r.incident_id"
    " WHERE COALESCE(i.merged_into, i.id) IN (SELECT id FROM incidents"
    " WHERE status != 'resolved' AND merged_into IS NULL)"
)
# Reporters of an incident and of the incidents merged into it (they follow it too).
_REPORTERS_OF = (
    " FROM reporters r WHERE r.incident_id = ?"
    " OR r.incident_id IN (SELECT id FROM incidents WHERE merged_into = ?) ORDER BY r.id"
)


class IncidentReads:
    """The incident reads in one store's dialect (`conn`: that store's connection)."""

    def __init__(self, dialect: Dialect) -> None:
        self.d = dialect

    def load_incident(
        self, conn: Any, incident_id: int, *, with_timeline: bool = True
    ) -> Incident | None:
        """One incident with its reporters (and timeline), or None."""
        row = conn.execute(
            self.d.q(f"SELECT {_COLUMNS} FROM incidents WHERE id = ?"),  # noqa: S608  (constant columns)
            (incident_id,),
        ).fetchone()
        return None if row is None else self._incident(conn, row, with_timeline)

    def _incident(self, conn: Any, row: Sequence[Any], with_timeline: bool) -> Incident:
        iid = int(row[0])
        reporters = self._reporters(conn, iid)
        timeline: list[TimelineEvent] = []
        if with_timeline:
            timeline = [
                TimelineEvent(datetime.fromisoformat(at), kind, actor, text, json.loads(data))
                for at, kind, actor, text, data in conn.execute(
                    self.d.q(
                        "SELECT at, kind, actor, text, data FROM timeline WHERE incident_id = ?"
                        " ORDER BY id"
                    ),
                    (iid,),
                ).fetchall()
            ]
        (pages,) = conn.execute(
            self.d.q("SELECT COUNT(*) FROM pages WHERE incident_id = ? AND action = 'trigger'"),
            (iid,),
        ).fetchone()
        return incident_of(row, tuple(reporters), tuple(timeline), int(pages))

    def _reporters(self, conn: Any, iid: int) -> list[Reporter]:
        """The incident's reporters, each with its inbound thread keys in insertion order."""
        order = self.d.insertion_order
        if self.d.key_arrays:  # each reporter with its own keys, in one statement
            return [
                Reporter(Channel(channel), address, tuple(keys), room_id, thread_root)
                for channel, address, room_id, thread_root, keys in conn.execute(
                    self.d.q(
                        "SELECT r.channel, r.address, r.room_id, r.thread_root, ARRAY(SELECT"  # noqa: S608  (constant names)
                        " t.key FROM thread_keys t WHERE t.reporter_id = r.id"
                        f" AND t.direction = 'in' ORDER BY t.{order})" + _REPORTERS_OF
                    ),
                    (iid, iid),
                ).fetchall()
            ]
        reporters = []
        for rid, channel, address, room_id, thread_root in conn.execute(
            self.d.q("SELECT r.id, r.channel, r.address, r.room_id, r.thread_root" + _REPORTERS_OF),
            (iid, iid),
        ).fetchall():
            keys = tuple(
                k
                for (k,) in conn.execute(
                    self.d.q(
                        "SELECT key FROM thread_keys WHERE reporter_id = ? AND direction = 'in'"  # noqa: S608  (constant names)
                        f" ORDER BY {order}"
                    ),
                    (rid,),
                ).fetchall()
            )
            reporters.append(Reporter(Channel(channel), address, keys, room_id, thread_root))
        return reporters

    def list_incidents(self, conn: Any, *, open_only: bool = False) -> list[Incident]:
        """Every incident (or the unresolved ones not merged away), newest first, no
        timelines."""
        if open_only:
            return self.open_incidents(conn)
        rows = conn.execute(f"SELECT {_COLUMNS} FROM incidents ORDER BY id DESC").fetchall()  # noqa: S608
        return [self._incident(conn, row, with_timeline=False) for row in rows]

    def open_incidents(self, conn: Any) -> list[Incident]:
        """The unresolved incidents not merged away, newest first, no timelines: in four
        queries instead of three per incident (the SLA scheduler reads every open incident
        each round)."""
        keys: dict[int, list[str]] = {}
        for rid, key in conn.execute(
            "SELECT reporter_id, key FROM thread_keys WHERE direction = 'in'"  # noqa: S608
            f" AND reporter_id IN (SELECT id FROM ({_OPEN_REPORTERS}) o)"
            f" ORDER BY {self.d.insertion_order}"
        ).fetchall():
            keys.setdefault(rid, []).append(key)
        reporters: dict[int, list[Reporter]] = {}
        for rid, channel, address, room_id, thread_root, owner in conn.execute(
            _OPEN_REPORTERS + " ORDER BY r.id"
        ).fetchall():
            reporters.setdefault(owner, []).append(
                Reporter(Channel(channel), address, tuple(keys.get(rid, ())), room_id, thread_root)
            )
        pages = dict(
            conn.execute(
                "SELECT incident_id, COUNT(*) FROM pages WHERE action = 'trigger'"
                " GROUP BY incident_id"
            ).fetchall()
        )
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM incidents"  # noqa: S608  (constant columns)
            " WHERE status != 'resolved' AND merged_into IS NULL ORDER BY id DESC"
        ).fetchall()
        return [
            incident_of(row, tuple(reporters.get(row[0], ())), (), int(pages.get(row[0], 0)))
            for row in rows
        ]

    def recent_open_incidents(
        self,
        conn: Any,
        mailbox: Mailbox,
        since: datetime,
        title_matches: Callable[[str], bool],
        limit: int = RECENT_LIMIT,
    ) -> list[Incident]:
        """The newest open incidents of a mailbox opened since `since` whose title passes
        `title_matches` (for storm joining): bounded, and only those are read in full, so
        a storm of distinct reports does not make each message read every other."""
        rows = conn.execute(
            self.d.q(
                f"SELECT {_COLUMNS} FROM incidents WHERE status != 'resolved'"  # noqa: S608
                " AND merged_into IS NULL AND mailbox = ? AND created_at >= ?"
                " ORDER BY id DESC LIMIT ?"
            ),
            (mailbox.value, ts(since), limit),
        ).fetchall()
        return [
            self._incident(conn, row, with_timeline=False) for row in rows if title_matches(row[1])
        ]

    def chat_root(self, conn: Any, incident_id: int) -> str | None:
        """The announcement event that roots the incident's chat thread, if posted yet."""
        row = conn.execute(
            self.d.q("SELECT chat_root FROM incidents WHERE id = ?"), (incident_id,)
        ).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def ticket(self, conn: Any, incident_id: int) -> TicketRow | None:
        """The incident's ticket, once its creation is recorded."""
        row = conn.execute(
            self.d.q(
                "SELECT backend, external_id, link, status FROM tickets WHERE incident_id = ?"
            ),
            (incident_id,),
        ).fetchone()
        return None if row is None else TicketRow(*row)

    def statuspage(self, conn: Any, incident_id: int) -> PageRow | None:
        """The incident's Statuspage incident, if one was opened."""
        row = conn.execute(
            self.d.q(
                "SELECT external_id, link, status FROM statuspage_incidents WHERE incident_id = ?"
            ),
            (incident_id,),
        ).fetchone()
        return None if row is None else PageRow(*row)

    def find_thread(self, conn: Any, keys: ThreadKeys) -> Incident | None:
        """The incident a message belongs to: by a Message-ID we know, or by [INC-n] in the
        subject when the sender is already one of that incident's reporters (a stranger who
        guesses a reference does not get in)."""
        if keys.incident_id is not None:
            return self.load_incident(conn, keys.incident_id, with_timeline=False)
        if keys.issued is not None:
            return self._mail_thread(conn, keys)
        found = self._keyed(conn, keys.message_ids)
        for key in keys.message_ids:
            if key in found:
                return self.load_incident(conn, found[key], with_timeline=False)
        for match in _SUBJECT_TAG.finditer(keys.subject):
            incident = self.load_incident(conn, int(match.group(1)), with_timeline=False)
            if incident and any(r.address == keys.sender for r in incident.reporters):
                return incident
        return None

    def _mail_thread(self, conn: Any, keys: ThreadKeys) -> Incident | None:
        for iid in keys.issued or ():
            incident = self.load_incident(conn, iid, with_timeline=False)
            if incident:
                return incident
        if not keys.sender_authentic:
            return None
        found = self._keyed(conn, keys.message_ids, inbound=True)
        candidates = [found[key] for key in keys.message_ids if key in found]
        candidates += [int(m.group(1)) for m in _SUBJECT_TAG.finditer(keys.subject)]
        for iid in candidates:
            incident = self.load_incident(conn, iid, with_timeline=False)
            if incident and any(r.address == keys.sender for r in incident.reporters):
                return incident
        return None

    def _keyed(
        self, conn: Any, message_ids: Sequence[str], *, inbound: bool = False
    ) -> dict[str, int]:
        """The incidents of those thread keys that are stored (`inbound`: only keys of the
        reporters' own messages), in one query per `Dialect.parts` part."""
        found: dict[str, int] = {}
        for part in self.d.parts(message_ids):
            cond, args = self.d.in_ids("key", part)
            direction = " AND direction = 'in'" if inbound else ""
            for key, iid in conn.execute(
                f"SELECT key, incident_id FROM thread_keys WHERE {cond}{direction}",  # noqa: S608
                args,
            ).fetchall():
                found[str(key)] = int(iid)
        return found

    def next_incident_id(self, conn: Any) -> int:
        """The id the next incident will get (the caller is the one writer, inside its
        transaction: SQLite's single connection, PostgreSQL's write lock)."""
        (value,) = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM incidents").fetchone()
        return int(value)


SQLITE_READS = IncidentReads(SQLITE)  # the SQLite store's (PostgreSQL's: gateway.store.postgres)
