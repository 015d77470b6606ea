"""The SLA index on PostgreSQL: the same queries as gateway.store.sla_index (which explains
the design), in PostgreSQL's dialect."""

from __future__ import annotations

from gateway.store.dialect import POSTGRES
from gateway.store.sla_index import SlaIndex

_POSTGRES = SlaIndex(POSTGRES)
touch = _POSTGRES.touch
replan_all = _POSTGRES.replan_all
due_ids = _POSTGRES.due_ids
earliest = _POSTGRES.earliest
store_next = _POSTGRES.store_next
schedule = _POSTGRES.schedule
fired_keys = _POSTGRES.fired_keys
load = _POSTGRES.load
waiting = _POSTGRES.waiting
