"""The Store port on PostgreSQL, for several nodes sharing one database.

schema.py: the tables and their ordered migrations (schema_migrations). The SQL is the
SQLite backend's, ported table group by table group (inbox.py, incidents.py, outbox.py,
reminders.py), plus what several nodes need: leases with fencing tokens (leases.py) and
outbox claims. store.py is the async facade the daemon uses (PostgresStore).
"""
