"""The SLA planner (which reminders, escalations, holding replies, handover reminders and
digests are due) and the store-backed scheduler: each fires once, survives a restart, and
fires once on start when it fell due while the daemon was down."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Collection, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from email import message_from_string, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from gateway.domain import (
    Channel,
    Due,
    Incident,
    NewIncident,
    OutboxKind,
    Plan,
    Reporter,
    Status,
    incident_ref,
)
from gateway.plan.replies import Sender
from gateway.plan.sla import EscalationTarget, SlaSettings, due_now, next_due
from gateway.run.scheduler import Scheduler
from gateway.store import db, incidents, outbox, reminders, schema
from gateway.store.sla_index import SQLITE_INDEX as sla_index
from gateway.store.sqlite import SqliteStore
from rules.book import default_rulebook, load_rulebook
from rules.engine import next_update_due, respond_due
from rules.types import Mailbox, Period, Priority
from tests.conftest import IN_HOURS, ManualClock, eventually

BOOK = default_rulebook()
SENDER = Sender("emergency@example.org", "Platform support", "example.org", "loop")
SETTINGS = SlaSettings(
    sender=SENDER,
    pager_source="test",
    incidents_room="!incidents:example.org",
    escalation=(
        EscalationTarget("page", timedelta(0), route="escalation-1"),
        EscalationTarget("email", timedelta(minutes=15), address="cyber@example.org"),
    ),
    digest=False,
)
REPORTER = Reporter(Channel.EMAIL, "alice@tenant.example", ("<r1@tenant.example>",))


def incident(
    priority: Priority = Priority.P1, at: datetime = IN_HOURS, **fields: object
) -> Incident:
    base = Incident(
        id=1,
        ref=incident_ref(1),
        title="Our site is down",
        priority=priority,
        status=Status.OPEN,
        mailbox=Mailbox.EMERGENCY,
        created_at=at,
        rule=None,
        reasons=(),
        period=BOOK.clock.period_at(at),
        respond_by=respond_due(priority, at, BOOK),
        next_update_by=next_update_due(priority, at, BOOK),
        reporters=(REPORTER,),
        chat_root="$root",
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def kinds(items: list[Due]) -> list[str]:
    return sorted(d.kind for d in items)


def outbox_kinds(due: Due) -> list[OutboxKind]:
    return [spec.kind for spec in due.plan.outbox]


def test_response_warning_then_overdue_and_escalation() -> None:
    """A P1 gets a warning 5 minutes before respond-by; at respond-by the overdue reminder
    and the first escalation step; the late step 15 minutes later. No stale warning."""
    inc = incident()
    assert kinds(due_now([inc], IN_HOURS + timedelta(minutes=14), BOOK, SETTINGS)) == []
    soon = due_now([inc], IN_HOURS + timedelta(minutes=15), BOOK, SETTINGS)
    assert kinds(soon) == ["respond.soon"]
    assert "due by Mon 23 Nov 10:20" in soon[0].text
    assert outbox_kinds(soon[0]) == [OutboxKind.CHAT_SEND]
    late = due_now([inc], IN_HOURS + timedelta(minutes=20), BOOK, SETTINGS)
    assert kinds(late) == ["escalate.1", "respond.overdue"]
    [escalation] = [d for d in late if d.kind == "escalate.1"]
    page = escalation.plan.outbox[0]
    assert page.kind is OutboxKind.PAGE_TRIGGER and page.payload["route"] == "escalation-1"
    assert page.payload["dedup_key"] == "INC-1-escalation-1"
    later = due_now([inc], IN_HOURS + timedelta(minutes=35), BOOK, SETTINGS)
    assert "escalate.2" in kinds(later)
    [mail] = [d for d in later if d.kind == "escalate.2"]
    assert outbox_kinds(mail) == [OutboxKind.MAIL_SEND, OutboxKind.CHAT_SEND]
    assert mail.plan.outbox[0].payload["rcpt_to"] == "cyber@example.org"


def test_acknowledged_incident_is_not_chased() -> None:
    """After !ack there is no response reminder and no escalation."""
    inc = incident(status=Status.ACKNOWLEDGED)
    assert kinds(due_now([inc], IN_HOURS + timedelta(minutes=25), BOOK, SETTINGS)) == []


def test_p2_is_not_escalated() -> None:
    """Escalation follows the configured priorities (P1 by default)."""
    inc = incident(Priority.P2)
    assert kinds(due_now([inc], IN_HOURS + timedelta(minutes=30), BOOK, SETTINGS)) == [
        "respond.overdue"
    ]


def test_update_warning_mentions_comms_else_lead() -> None:
    """The next-update warning names the comms person, else the lead, else asks for one."""
    at = IN_HOURS + timedelta(minutes=50)
    ack = {"status": Status.ACKNOWLEDGED}
    [d] = due_now([incident(comms="@carol:x", lead="@lee:x", **ack)], at, BOOK, SETTINGS)
    assert d.kind == "update.soon" and "@carol:x: please post one" in d.text
    [d] = due_now([incident(lead="@lee:x", **ack)], at, BOOK, SETTINGS)
    assert "@lee:x: please post one" in d.text
    [d] = due_now([incident(**ack)], at, BOOK, SETTINGS)
    assert "Nobody is named" in d.text


def test_holding_reply_at_next_update_time() -> None:
    """A P1 update overdue: reporters get a holding reply promising the next update one
    interval later, and the clock moves to that promise."""
    inc = incident(status=Status.ACKNOWLEDGED)
    now = IN_HOURS + timedelta(minutes=62)
    [d] = due_now([inc], now, BOOK, SETTINGS)
    assert d.kind == "update.overdue"
    assert d.plan.changes["next_update_by"] == now + timedelta(hours=1)
    mail = d.plan.outbox[0]
    assert mail.kind is OutboxKind.MAIL_SEND and mail.payload["purpose"] == "holding"
    body = message_from_string(mail.payload["data"], policy=policy.default)
    assert isinstance(body, EmailMessage)
    text = body.get_content()
    assert "still working on it" in text and "next update by 12:02 on Monday 23 November" in text
    assert "In-Reply-To: <r1@tenant.example>" in mail.payload["data"]


def test_no_holding_reply_where_not_configured() -> None:
    """P3 has no holding replies by default: only the engineers are reminded."""
    inc = incident(Priority.P3, status=Status.ACKNOWLEDGED)
    [d] = due_now([inc], inc.next_update_by or IN_HOURS, BOOK, SETTINGS)
    assert d.kind == "update.overdue" and outbox_kinds(d) == [OutboxKind.CHAT_SEND]
    assert "next_update_by" not in d.plan.changes


def test_without_chat_reminders_go_on_the_timeline_only() -> None:
    """With no chat configured a reminder changes nothing but the timeline."""
    [d] = due_now(
        [incident()], IN_HOURS + timedelta(minutes=15), BOOK, replace(SETTINGS, incidents_room=None)
    )
    assert d.plan.outbox == ()
    assert [e.kind for e in d.plan.timeline] == ["sla.respond.soon"]


def test_handover_reminders() -> None:
    """A P1 open at 17:00 and one open 6 hours get a handover reminder; a P4 does not."""
    inc = incident(status=Status.ACKNOWLEDGED, next_update_by=None)
    close = IN_HOURS + timedelta(hours=7)  # 17:00
    assert kinds(due_now([inc], close, BOOK, SETTINGS)) == ["handover.close", "handover.open_long"]
    p4 = incident(Priority.P4, status=Status.ACKNOWLEDGED, next_update_by=None)
    assert kinds(due_now([p4], close, BOOK, SETTINGS)) == []


def test_out_of_hours_digest_at_opening() -> None:
    """At 09:00 Monday the tickets that arrived since Friday 17:00 are listed, once that
    opening is due; an in-hours ticket is not listed; after 17:00 it is no longer due."""
    weekend = incident(
        Priority.P3,
        at=datetime(2026, 11, 22, 3, tzinfo=UTC),
        status=Status.ACKNOWLEDGED,
        next_update_by=None,
        respond_by=None,
    )
    friday = replace(
        weekend,
        id=2,
        ref="INC-2",
        created_at=datetime(2026, 11, 20, 16, tzinfo=UTC),
        period=Period.IN_HOURS,
    )
    opening = datetime(2026, 11, 23, 9, tzinfo=UTC)
    with_digest = replace(SETTINGS, digest=True)
    [digest] = due_now([weekend, friday], opening, BOOK, with_digest)
    assert digest.kind == "digest" and digest.due_at == opening
    assert "INC-1 P3" in digest.text and "INC-2" not in digest.text
    assert outbox_kinds(digest) == [OutboxKind.CHAT_SEND]
    assert due_now([weekend], datetime(2026, 11, 23, 17, 30, tzinfo=UTC), BOOK, with_digest) == []


def test_next_due_is_the_earliest_future_item() -> None:
    """A fresh P1's next wake-up is its response warning."""
    assert next_due([incident()], IN_HOURS, BOOK, SETTINGS) == IN_HOURS + timedelta(minutes=15)
    assert next_due([], IN_HOURS, BOOK, replace(SETTINGS, digest=True)) == datetime(
        2026, 11, 24, 9, tzinfo=UTC
    )


# -- the store-backed scheduler ---------------------------------------------------------------


def open_p1(path: Path, at: datetime = IN_HOURS) -> None:
    """Record a P1 from alice, with its chat thread rooted, straight into the database."""
    conn = schema.connect(str(path))
    schema.migrate(conn)
    try:
        with db.transaction(conn):
            plan = Plan(
                outcome="opened",
                reporter=REPORTER,
                new_incident=NewIncident(
                    "Our site is down",
                    Priority.P1,
                    Mailbox.EMERGENCY,
                    None,
                    (),
                    BOOK.clock.period_at(at),
                    respond_due(Priority.P1, at, BOOK),
                    next_update_due(Priority.P1, at, BOOK),
                ),
            )
            iid = incidents.apply_plan(conn, plan, at)
            conn.execute("UPDATE incidents SET chat_root = '$root' WHERE id = ?", (iid,))
    finally:
        conn.close()


def fired_rows(path: Path) -> list[tuple[str, datetime, datetime]]:
    conn = schema.connect(str(path), readonly=True)
    try:
        return reminders.fired_for(conn, 1)
    finally:
        conn.close()


def outbox_count(path: Path, kind: str) -> int:
    conn = schema.connect(str(path), readonly=True)
    try:
        return sum(1 for r in outbox.outbox_rows(conn) if r["kind"] == kind)
    finally:
        conn.close()


def scheduler(store: SqliteStore, clock: ManualClock, fired: list[Due]) -> Scheduler:
    return Scheduler(store, BOOK, SETTINGS, fired.extend, clock)


async def test_fires_once_and_not_again_after_restart(tmp_path: Path) -> None:
    """The same due item fires once per store, and a new process on the same database does
    not fire it again."""
    path = tmp_path / "gateway.sqlite3"
    open_p1(path)
    clock = ManualClock(IN_HOURS + timedelta(minutes=20))
    for _ in range(2):  # two daemon lifetimes
        store = SqliteStore(path)
        await store.open()
        try:
            sent: list[Due] = []
            s = scheduler(store, clock, sent)
            await s.fire()
            await s.fire()
        finally:
            await store.close()
    assert [kind for kind, _, _ in fired_rows(path)] == ["respond.overdue", "escalate.1"]
    assert outbox_count(path, "page.trigger") == 1


async def test_due_during_downtime_fires_once_on_start(tmp_path: Path) -> None:
    """Three hours of downtime: on start the response is overdue (no stale warning), both
    escalation steps go once, one holding reply goes out and the clock moves on."""
    path = tmp_path / "gateway.sqlite3"
    open_p1(path)
    store = SqliteStore(path)
    await store.open()
    try:
        start = IN_HOURS + timedelta(hours=3)
        fired, next_at = await scheduler(store, ManualClock(start), []).fire()
        inc = await store.incident(1)
    finally:
        await store.close()
    assert kinds(fired) == ["escalate.1", "escalate.2", "respond.overdue", "update.overdue"]
    assert inc is not None and inc.next_update_by == start + timedelta(hours=1)
    assert outbox_count(path, "mail.send") == 2  # the holding reply and the escalation email
    assert next_at == start + timedelta(minutes=50)  # the next update warning
    assert "sla.holding" in [e.kind for e in inc.timeline]


async def test_loop_wakes_at_the_due_time(store: SqliteStore, tmp_path: Path) -> None:
    """The running loop fires when the controllable clock reaches the due time and it is
    woken, not before, and wakes the outbox for what it queued."""
    open_p1(tmp_path / "gateway.sqlite3")
    clock = ManualClock(IN_HOURS)
    sent: list[Due] = []
    s = scheduler(store, clock, sent)
    task = asyncio.create_task(s.run())
    try:
        await asyncio.sleep(0.05)
        assert sent == []
        clock.advance(minutes=15)
        s.wake()
        await eventually(lambda: [d.kind for d in sent] == ["respond.soon"])
        clock.advance(minutes=5)
        s.wake()
        await eventually(lambda: len(sent) == 3)
    finally:
        s.stop()
        await task
    assert kinds(sent) == ["escalate.1", "respond.overdue", "respond.soon"]


async def test_incident_changes_are_coalesced_but_a_wake_is_not(
    store: SqliteStore, tmp_path: Path
) -> None:
    """After every processed batch the scheduler is told incidents changed; within the gap
    those notices make no further round (no re-read of every open incident), while an
    explicit wake-up (the clock moved) still makes one at once."""
    open_p1(tmp_path / "gateway.sqlite3")
    clock = ManualClock(IN_HOURS)
    rounds: list[datetime] = []

    class Counting(Scheduler):
        async def fire(self, now: datetime | None = None) -> tuple[list[Due], datetime | None]:
            rounds.append(self._clock())
            return await super().fire(now)

    s = Counting(store, BOOK, SETTINGS, lambda _fired: None, clock, min_gap_s=3600.0)
    task = asyncio.create_task(s.run())
    try:
        await eventually(lambda: len(rounds) == 1)
        for _ in range(20):
            s.changed()
            await asyncio.sleep(0)
        await asyncio.sleep(0.1)
        assert len(rounds) == 1
        s.wake()
        await eventually(lambda: len(rounds) == 2)
    finally:
        s.stop()
        await task


async def test_a_round_with_nothing_due_reads_only_the_index(
    store: SqliteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once an overdue incident's items have fired, its next due time is indexed; the next
    round before that time loads no incident at all and says when to look again."""
    open_p1(tmp_path / "gateway.sqlite3")
    clock = ManualClock(IN_HOURS)
    clock.advance(minutes=30)
    s = scheduler(store, clock, [])
    first, next_at = await s.fire()
    loads: list[object] = []
    real = sla_index.load
    monkeypatch.setattr(sla_index, "load", lambda *a: loads.append(a) or real(*a))
    second, again_at = await s.fire()
    assert "respond.overdue" in kinds(first)
    assert second == [] and loads == [] and again_at == next_at
    assert await store.sla_schedule() == {1: next_at}


async def test_a_change_is_replanned_by_the_next_round(store: SqliteStore, tmp_path: Path) -> None:
    """An incident changed after its time was indexed (here: resolved) is marked in the
    change's transaction, and the next round takes it out of the index: no reminder for a
    resolved incident."""
    path = tmp_path / "gateway.sqlite3"
    open_p1(path)
    clock = ManualClock(IN_HOURS)
    s = scheduler(store, clock, [])
    await s.fire()
    assert await store.sla_schedule() == {1: IN_HOURS + timedelta(minutes=15)}
    conn = schema.connect(str(path))
    try:
        with db.transaction(conn):
            resolve = Plan(outcome="resolved", incident_id=1, changes={"status": "resolved"})
            incidents.apply_plan(conn, resolve, IN_HOURS + timedelta(minutes=1))
    finally:
        conn.close()
    assert await store.sla_schedule() == {1: None}
    clock.advance(minutes=15)
    fired, next_at = await s.fire()
    assert fired == [] and next_at is None and await store.sla_schedule() == {}


async def test_a_full_batch_goes_again_at_once(tmp_path: Path) -> None:
    """More incidents due than one batch holds: the round says "at once" and the next
    round takes the rest; each fires once."""
    path = tmp_path / "gateway.sqlite3"
    for _ in range(5):
        open_p1(path)
    store = SqliteStore(path)
    await store.open()
    try:
        clock = ManualClock(IN_HOURS + timedelta(minutes=15))
        s = Scheduler(store, BOOK, SETTINGS, lambda _fired: None, clock, batch=2)
        counts = []
        while True:
            fired, next_at = await s.fire()
            counts.append(len(fired))
            if next_at is None or next_at > clock():
                break
    finally:
        await store.close()
    assert counts == [2, 2, 1] and next_at == IN_HOURS + timedelta(minutes=20)


async def test_a_reload_that_moves_support_hours_replans_every_open_incident(
    store: SqliteStore, tmp_path: Path
) -> None:
    """An acknowledged P1 with no update clock is next due at the end of support hours
    (17:00); after a reload that ends support hours at 16:00, the next round re-plans it
    to 16:00 without any change to the incident."""
    path = tmp_path / "gateway.sqlite3"
    open_p1(path)
    conn = schema.connect(str(path))
    try:
        with db.transaction(conn):
            ack = {"status": "acknowledged", "next_update_by": None}
            incidents.apply_plan(conn, Plan(outcome="ack", incident_id=1, changes=ack), IN_HOURS)
    finally:
        conn.close()
    settings = replace(SETTINGS, handover_after=None)
    s = Scheduler(store, BOOK, settings, lambda _fired: None, ManualClock(IN_HOURS))
    await s.fire()
    assert await store.sla_schedule() == {1: IN_HOURS + timedelta(hours=7)}
    s.replace_rulebook(
        load_rulebook(
            'extends = "default"\n[hours]\nin_hours = { start = "09:00", end = "16:00" }\n'
        )
    )
    await s.fire()
    assert await store.sla_schedule() == {1: IN_HOURS + timedelta(hours=6)}


class _SlowDates(Collection[date]):
    """Bank-holiday dates still being made by their helper process: every use waits."""

    def __init__(self) -> None:
        self.ready = threading.Event()

    def __contains__(self, day: object) -> bool:
        self.ready.wait()
        return False

    def __iter__(self) -> Iterator[date]:
        self.ready.wait()
        return iter(())

    def __len__(self) -> int:
        self.ready.wait()
        return 0


async def test_the_first_round_waits_for_bank_holidays_off_the_event_loop(
    tmp_path: Path,
) -> None:
    """While the bank holidays are still on their way, the scheduler waits for them in a
    worker thread: the event loop keeps serving (here: the coroutine that hands them over;
    had the loop been blocked, only the 5 s safety timer could have)."""
    slow = _SlowDates()
    book = load_rulebook('extends = "default"\n', lambda _c, _s: (slow, range(2000, 2100)))
    store = SqliteStore(tmp_path / "gateway.sqlite3")
    await store.open()
    released: list[str] = []

    def release(by: str) -> None:
        if not slow.ready.is_set():
            released.append(by)
            slow.ready.set()

    timer = threading.Timer(5.0, release, ["timer"])
    timer.start()
    settings = replace(SETTINGS, digest=True)  # its window is found on the support clock
    s = Scheduler(store, book, settings, lambda _fired: None, ManualClock(IN_HOURS))
    task = asyncio.create_task(s.run())
    try:
        await asyncio.sleep(0.05)  # the scheduler has started and waits for the dates
        release("event loop")
        await eventually(lambda: s.last_round_s > 0 or task.done(), timeout=30)
    finally:
        s.stop()
        await asyncio.wait_for(task, 30)
        timer.cancel()
        await store.close()
    assert released == ["event loop"]
