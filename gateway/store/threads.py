"""Finding the incident a message belongs to on SQLite: the thread_keys table (Message-IDs
and chat event ids we know) and [INC-n] tags, with the rules that keep strangers out, and
the id the next incident gets. The queries are gateway.store.incident_reads' (shared with
PostgreSQL), bound to SQLite's dialect.
"""

from __future__ import annotations

from gateway.store.incident_reads import SQLITE_READS

find_thread = SQLITE_READS.find_thread
next_incident_id = SQLITE_READS.next_incident_id
