"""The SLA index on PostgreSQL: the same queries as gateway.store.sla_index (which explains
the design), in PostgreSQL's dialect."""

from __future__ import annotations

from gateway.store.dialect import POSTGRES
from gateway.store.sla_index import SlaIndex

INDEX = SlaIndex(POSTGRES)
touch = INDEX.touch
replan_all = INDEX.replan_all
due_ids = INDEX.due_ids
earliest = INDEX.earliest
store_next = INDEX.store_next
schedule = INDEX.schedule
fired_keys = INDEX.fired_keys
load = INDEX.load
waiting = INDEX.waiting
