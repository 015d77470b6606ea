"""Incident histories written through a store's real write path (`process`), and the full
scan the SLA index replaced, for the SLA index's contract tests."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import count

from gateway.domain import Channel, NewIncident, Plan, Reporter, TimelineEvent
from gateway.plan.replies import Sender
from gateway.plan.sla import EscalationTarget, SlaSettings, due_now
from gateway.ports import Store
from gateway.store.db import ts
from rules.book import default_rulebook
from rules.engine import next_update_due, respond_due
from rules.types import Mailbox, Priority
from tests.store_contract.builders import message, work

BOOK = default_rulebook()
SETTINGS = SlaSettings(
    sender=Sender("emergency@example.org", "Platform support", "example.org", "loop"),
    pager_source="test",
    incidents_room="!incidents:example.org",
    escalation=(
        EscalationTarget("page", timedelta(0), route="escalation-1"),
        EscalationTarget("email", timedelta(minutes=15), address="cyber@example.org"),
    ),
    digest=False,
)
MONDAY = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
Key = tuple[int | None, str, datetime]
_senders = count(1)


async def apply(store: Store, plan: Plan, now: datetime) -> None:
    """Apply `plan` as the pipeline does: one accepted message, processed."""
    accepted = await store.accept(message(next(_senders), at=now))
    await store.process([work(accepted.inbox_id, lambda _ctx: plan)], now)


def opening(priority: Priority, now: datetime, sender: str = "alice@tenant.example") -> Plan:
    """A report that opens an incident with the clocks the rulebook gives."""
    return Plan(
        outcome="opened",
        new_incident=NewIncident(
            "Our site is down",
            priority,
            Mailbox.EMERGENCY,
            None,
            (),
            BOOK.clock.period_at(now),
            respond_due(priority, now, BOOK),
            next_update_due(priority, now, BOOK),
        ),
        reporter=Reporter(Channel.EMAIL, sender, (f"<{sender}.{now.timestamp()}>",)),
        timeline=(TimelineEvent(now, "reported", sender, "Reported"),),
    )


def changing(iid: int, now: datetime, **changes: object) -> Plan:
    """An engineer's command that changes incident fields (ack, update, sev, resolve)."""
    return Plan(
        outcome="changed",
        incident_id=iid,
        changes=changes,
        timeline=(TimelineEvent(now, "changed", "@eng:x", "changed"),),
    )


def event_plan(name: str, iid: int, priority: Priority, now: datetime) -> Plan:
    """The plan of one named event on incident `iid` (see tests/test_sla_index.py)."""
    if name == "ack":
        return changing(iid, now, status="acknowledged", acknowledged_at=now)
    if name == "update":
        return changing(iid, now, next_update_by=next_update_due(priority, now, BOOK))
    if name == "sev":
        return changing(iid, now, priority=priority.value)
    if name == "resolve":
        return changing(iid, now, status="resolved", resolved_at=now)
    if name == "reopen":
        return replace(changing(iid, now), reopen=True)
    return Plan(
        outcome="noted",
        incident_id=iid,
        timeline=(TimelineEvent(now, "note", "@eng:x", "a note"),),
    )


async def full_scan(store: Store, now: datetime) -> set[Key]:
    """What the round before the index would fire at `now`: every open incident planned,
    less the items already fired."""
    incidents, fired = await store.sla_snapshot()
    return {
        (d.incident_id, d.kind, d.due_at)
        for d in due_now(incidents, now, BOOK, SETTINGS)
        if (d.subject, d.kind, ts(d.due_at)) not in fired
    }
