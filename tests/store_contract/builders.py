"""Values the contract tests feed every backend."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from gateway.domain import (
    Channel,
    NewIncident,
    NewMessage,
    OutboxKind,
    OutboxSpec,
    Plan,
    PlanContext,
    Reporter,
    ThreadKeys,
    TimelineEvent,
    Work,
)
from rules.types import Mailbox, Priority

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
PAGE = {
    "dedup_key": "INC-1",
    "summary": "[INC-1] P1: Site down",
    "severity": "critical",
    "source": "gateway",
    "details": {"reference": "INC-1"},
}


def message(n: int, key: str | None = None, at: datetime = NOW) -> NewMessage:
    """An accepted email from sender n (with a re-send key, if given)."""
    return NewMessage(
        Channel.EMAIL,
        Mailbox.EMERGENCY,
        f"s{n}@x.example",
        ("emergency@localhost",),
        f"Subject: {n}\r\n\r\nbody".encode(),
        key,
        at,
    )


def opened(
    title: str = "Site down",
    msgid: str = "<a@x>",
    sender: str = "alice@x.example",
    outbox: tuple[OutboxSpec, ...] | None = None,
) -> Plan:
    """A Plan that opens a P1 incident reported by `sender` and pages."""
    return Plan(
        outcome="opened",
        new_incident=NewIncident(
            title, Priority.P1, Mailbox.EMERGENCY, "apps-down", ("why",), None, None, None
        ),
        reporter=Reporter(Channel.EMAIL, sender, (msgid,)),
        timeline=(TimelineEvent(NOW, "reported", sender, "Reported"),),
        outbox=(OutboxSpec(OutboxKind.PAGE_TRIGGER, PAGE),) if outbox is None else outbox,
        message_ids=(msgid,),
    )


def work(
    inbox_id: int, make: Callable[[PlanContext], Plan] | None = None, keys: ThreadKeys | None = None
) -> Work:
    """A unit of work whose planner opens an incident (or whatever `make` returns)."""
    return Work(
        inbox_id,
        keys,
        make or (lambda _ctx: opened()),
        lambda problem: Plan(outcome=f"unreadable: {problem}"),
    )
