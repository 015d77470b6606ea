"""The SLA index against the full scan it replaces: for random incident histories (opened,
acknowledged, updated, priority changed, resolved, reopened) on random clocks, the
incidents whose indexed next due time has come are exactly those the full scan over every
open incident would act on, and firing through the index fires exactly what the full
scan fires."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain import Due, Incident, Status, incident_ref
from gateway.plan.replies import Sender
from gateway.plan.sla import (
    EscalationTarget,
    SlaSettings,
    due_now,
    incident_items,
    next_due_by_incident,
)
from rules.book import default_rulebook
from rules.engine import next_update_due, respond_due
from rules.types import Mailbox, Priority

BOOK = default_rulebook()
SETTINGS = SlaSettings(
    sender=Sender("emergency@example.org", "Platform support", "example.org", "loop"),
    pager_source="test",
    incidents_room="!incidents:example.org",
    escalation=(
        EscalationTarget("page", timedelta(0), route="escalation-1"),
        EscalationTarget("email", timedelta(minutes=15), address="cyber@example.org"),
    ),
    digest=False,  # the digest belongs to no incident: the scheduler times it from the clock
)
START = datetime(2026, 12, 18, 6, 0, tzinfo=UTC)  # a Friday before Christmas: closings, holidays
Key = tuple[int, str, datetime]


@dataclass
class World:
    """Incidents, the keys of the items fired, and the index (None: marked to re-plan)."""

    now: datetime
    incidents: dict[int, Incident] = field(default_factory=dict)
    fired: set[Key] = field(default_factory=set)
    index: dict[int, datetime | None] = field(default_factory=dict)

    def open_incident(self, priority: Priority) -> None:
        iid = len(self.incidents) + 1
        self.incidents[iid] = Incident(
            id=iid,
            ref=incident_ref(iid),
            title="Site down",
            priority=priority,
            status=Status.OPEN,
            mailbox=Mailbox.EMERGENCY,
            created_at=self.now,
            rule=None,
            reasons=(),
            period=BOOK.clock.period_at(self.now),
            respond_by=respond_due(priority, self.now, BOOK),
            next_update_by=next_update_due(priority, self.now, BOOK),
            chat_root="$root",
        )
        self.index[iid] = None

    def change(self, iid: int, **fields: object) -> None:
        self.incidents[iid] = replace(self.incidents[iid], **fields)  # type: ignore[arg-type]
        self.index[iid] = None  # the change's transaction marks it for re-planning

    def new_by_full_scan(self) -> set[Key]:
        """What the old round would fire now: every open incident planned."""
        due = due_now(list(self.incidents.values()), self.now, BOOK, SETTINGS)
        return {key(d) for d in due} - self.fired

    def fire_through_index(self) -> set[Key]:
        """The new round: plan only the selected incidents, fire, index their next times."""
        chosen = [i for iid, i in self.incidents.items() if iid in self.selected()]
        due = incident_items(chosen, self.now, BOOK, SETTINGS)
        new = [d for d in due if key(d) not in self.fired]
        for d in new:
            self.fired.add(key(d))
            if d.plan.incident_id is not None and d.plan.changes:
                self.incidents[d.plan.incident_id] = replace(
                    self.incidents[d.plan.incident_id], **d.plan.changes
                )
        fired_by_id: dict[int, set[tuple[str, datetime]]] = {}
        for iid, kind, at in self.fired:
            fired_by_id.setdefault(iid, set()).add((kind, at))
        chosen = [self.incidents[i.id] for i in chosen]
        for iid, at in next_due_by_incident(chosen, fired_by_id, self.now, BOOK, SETTINGS).items():
            if at is None:
                self.index.pop(iid, None)
            else:
                assert at > self.now, (iid, at)
                self.index[iid] = at
        return {key(d) for d in new}

    def selected(self) -> set[int]:
        return {iid for iid, at in self.index.items() if at is None or at <= self.now}

    def clean_selected(self) -> set[int]:
        return {iid for iid, at in self.index.items() if at is not None and at <= self.now}


def key(d: Due) -> Key:
    assert d.incident_id is not None
    return (d.incident_id, d.kind, d.due_at)


EVENTS = st.one_of(
    st.tuples(st.just("open"), st.sampled_from(list(Priority))),
    st.tuples(st.just("ack"), st.integers(1, 6)),
    st.tuples(st.just("update"), st.integers(1, 6)),
    st.tuples(st.just("sev"), st.integers(1, 6), st.sampled_from(list(Priority))),
    st.tuples(st.just("resolve"), st.integers(1, 6)),
    st.tuples(st.just("reopen"), st.integers(1, 6)),
    st.tuples(st.just("nothing")),
)
# Steps of whole minutes (due times are whole minutes: steps land on them) up to a day.
STEPS = st.one_of(st.integers(0, 30), st.integers(30, 600), st.integers(600, 1440))


def apply(world: World, event: tuple[object, ...]) -> None:
    """One thing an engineer or a reporter did, as the pipeline would record it."""
    name = event[0]
    if name == "open":
        world.open_incident(Priority(str(event[1])))
        return
    iid = int(str(event[1])) if len(event) > 1 else 0
    if iid not in world.incidents:
        return
    now, incident = world.now, world.incidents[iid]
    if name == "ack":
        world.change(iid, status=Status.ACKNOWLEDGED)
    elif name == "update":
        world.change(iid, next_update_by=next_update_due(incident.priority, now, BOOK))
    elif name == "sev":
        world.change(iid, priority=Priority(str(event[2])))
    elif name == "resolve":
        world.change(iid, status=Status.RESOLVED)
    elif name == "reopen" and incident.status is Status.RESOLVED:
        world.change(iid, status=Status.OPEN)


@settings(max_examples=300, deadline=None)
@given(
    start_minutes=st.integers(0, 10 * 24 * 60),
    history=st.lists(st.tuples(STEPS, EVENTS), min_size=1, max_size=25),
)
def test_index_selects_exactly_what_the_full_scan_acts_on(
    start_minutes: int, history: list[tuple[int, tuple[object, ...]]]
) -> None:
    """At every instant of a random history, an incident whose indexed time is current is
    selected exactly when the full scan has something new for it (one marked by a change
    is selected too), and the round fires exactly what the full scan would."""
    world = World(START + timedelta(minutes=start_minutes))
    for minutes, event in history:
        world.now += timedelta(minutes=minutes)
        apply(world, event)
        scan = world.new_by_full_scan()
        acted = {iid for iid, _, _ in scan}
        stale = world.selected() - world.clean_selected()
        assert acted <= world.selected()
        assert world.clean_selected() == acted - stale
        assert world.fire_through_index() == scan
    # Nothing was left behind: at the end the full scan has nothing new either.
    assert world.new_by_full_scan() == set()


@settings(max_examples=100, deadline=None)
@given(
    start_minutes=st.integers(0, 10 * 24 * 60),
    opened=st.lists(st.sampled_from(list(Priority)), min_size=1, max_size=6),
    ticks=st.lists(STEPS, min_size=1, max_size=30),
)
def test_quiet_incidents_fire_on_time_from_the_index_alone(
    start_minutes: int, opened: list[Priority], ticks: list[int]
) -> None:
    """With no changes at all (only the clock moves), every item the full scan would fire
    fires in the same round through the index, and nothing else is selected."""
    world = World(START + timedelta(minutes=start_minutes))
    for priority in opened:
        world.open_incident(priority)
    world.fire_through_index()
    for minutes in ticks:
        world.now += timedelta(minutes=minutes)
        scan = world.new_by_full_scan()
        assert world.selected() == {iid for iid, _, _ in scan}
        assert world.fire_through_index() == scan
