"""Finding the incident a message belongs to: the thread_keys table (Message-IDs and chat
event ids we know) and [INC-n] tags, with the rules that keep strangers out.
"""

from __future__ import annotations

import re
import sqlite3

from gateway.domain import Incident, ThreadKeys
from gateway.store.incidents import load_incident

_SUBJECT_TAG = re.compile(r"\[INC-(\d{1,12})\]", re.IGNORECASE)


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
    candidates = [
        int(row[0])
        for key in keys.message_ids
        for row in conn.execute(
            "SELECT incident_id FROM thread_keys WHERE key = ? AND direction = 'in'", (key,)
        )
    ]
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
