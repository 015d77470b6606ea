"""Cost of an SLA scheduler round with 1,000 / 10,000 / 50,000 open incidents: the full
scan (the round before the SLA index) against the index, in the same run, on the same
state.

What it measures, per `--incidents` size (SQLite, the single-host store):
- The full scan, as the scheduler did it before the index: read every open incident and
  the keys of every item fired, plan every incident with the pure planner (`due_now`,
  `next_due`) and, when something new is due, do it again inside the write transaction
  that fires it (the code is kept below as `full_scan_round`).
- The index: `gateway.store.reminders.fire_due`, as the scheduler calls it (the incidents
  whose next due time has come, at most 256, planned and fired in one transaction).

The state: `--incidents` acknowledged P4 tickets (a backlog whose next updates are days
away: nothing of theirs falls due in the measured hour) and `--active` P1/P2/P3 incidents
reported over the hour before the start, which fall due (warnings, overdue reminders,
escalations, holding replies) during the measured hour. Each approach starts from its own
copy of the same database and runs `--rounds` rounds, one per simulated minute (the clock
is moved, nothing sleeps) after a first round at the start. Reported: per-round wall time
p50 / p99 / max in ms, and the items fired (both approaches must fire the same items). The
index's first round, which re-plans every open incident (as at start and at a rulebook
reload), is reported on its own, and so is a quiet round (`--quiet` rounds at the last
minute again, once all due then has fired: what nearly every round is in production).

    .venv/bin/python bench/sla_rounds.py
    .venv/bin/python bench/sla_rounds.py --incidents 1000 10000 --rounds 30
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from gateway.domain import Channel, Due, NewIncident, Plan, Reporter, TimelineEvent  # noqa: E402
from gateway.plan.replies import Sender  # noqa: E402
from gateway.plan.sla import (  # noqa: E402
    EscalationTarget,
    SlaSettings,
    due_now,
    incident_items,
    next_due,
    next_due_by_incident,
)
from gateway.store import db, incidents, reminders, schema  # noqa: E402
from gateway.store.db import ts  # noqa: E402
from rules.book import default_rulebook  # noqa: E402
from rules.engine import next_update_due, respond_due  # noqa: E402
from rules.types import Mailbox, Priority  # noqa: E402

BOOK = default_rulebook()
SETTINGS = SlaSettings(
    sender=Sender("emergency@example.org", "Platform support", "example.org", "loop"),
    pager_source="bench",
    incidents_room="!incidents:example.org",
    escalation=(
        EscalationTarget("page", timedelta(0), route="escalation-1"),
        EscalationTarget("chat", timedelta(minutes=10), room="!escalation:example.org"),
    ),
    digest=False,
)
START = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)  # a Tuesday, in hours
BATCH = 256


def fill(path: Path, backlog: int, active: int, seed: int = 7) -> None:
    """The state both approaches start from (see the module docstring)."""
    rng = random.Random(seed)
    conn = schema.connect(str(path))
    schema.migrate(conn)
    with db.transaction(conn):
        for n in range(backlog):
            at = START - timedelta(minutes=rng.randrange(0, 60 * 24))
            _open(conn, n, Priority.P4, at, acknowledged=True)
        for n in range(backlog, backlog + active):
            at = START - timedelta(minutes=rng.randrange(0, 60))
            _open(conn, n, rng.choice((Priority.P1, Priority.P2, Priority.P3)), at)
    conn.close()


def _open(
    conn: sqlite3.Connection, n: int, priority: Priority, at: datetime, acknowledged: bool = False
) -> None:
    sender = f"user{n}@tenant{n % 97}.example"
    plan = Plan(
        outcome="opened",
        new_incident=NewIncident(
            f"Our site is down ({n})",
            priority,
            Mailbox.EMERGENCY,
            "apps-5xx",
            ("by rule",),
            BOOK.clock.period_at(at),
            respond_due(priority, at, BOOK),
            next_update_due(priority, at, BOOK) + timedelta(days=2 if acknowledged else 0),
        ),
        reporter=Reporter(Channel.EMAIL, sender, (f"<m{n}@tenant.example>",)),
        timeline=(TimelineEvent(at, "reported", sender, "Reported by email"),),
        message_ids=(f"<m{n}@tenant.example>",),
    )
    iid = incidents.apply_plan(conn, plan, at)
    if acknowledged:
        conn.execute("UPDATE incidents SET status = 'acknowledged' WHERE id = ?", (iid,))
    conn.execute("UPDATE incidents SET chat_root = ? WHERE id = ?", (f"$r{iid}", iid))


# -- the round before the index (the baseline) -------------------------------------------------


def full_scan_round(conn: sqlite3.Connection, now: datetime) -> list[Due]:
    """The scheduler's round before the index: plan every open incident on a snapshot; if
    anything new is due, plan every open incident again in the write transaction that
    fires it, and work out the next wake-up over all of them."""
    plan = partial(due_now, now=now, book=BOOK, settings=SETTINGS)
    wake = partial(next_due, now=now, book=BOOK, settings=SETTINGS)
    open_now, keys = reminders.snapshot(conn)
    anything = any((d.subject, d.kind, ts(d.due_at)) not in keys for d in plan(open_now))
    wake(open_now)
    if not anything:
        return []
    fired = []
    with db.transaction(conn):
        for due in plan(incidents.open_incidents(conn)):
            cur = conn.execute(
                "INSERT OR IGNORE INTO reminders (subject, incident_id, kind, due_at, fired_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (due.subject, due.incident_id, due.kind, ts(due.due_at), ts(now)),
            )
            if cur.rowcount:
                incidents.apply_plan(conn, due.plan, now)
                fired.append(due)
        wake(incidents.open_incidents(conn))
    return fired


# -- the index ---------------------------------------------------------------------------------


def index_round(conn: sqlite3.Connection, now: datetime) -> list[Due]:
    """The scheduler's round with the index (what gateway.run.scheduler calls), until the
    incidents due at `now` are all planned."""
    fired: list[Due] = []
    while True:
        items, next_at = reminders.fire_due(
            conn,
            partial(incident_items, now=now, book=BOOK, settings=SETTINGS),
            partial(next_due_by_incident, now=now, book=BOOK, settings=SETTINGS),
            now,
            BATCH,
        )
        fired += items
        if next_at is None or next_at > now:
            return fired


def run(
    path: Path,
    rounds: int,
    repeats: int,
    one_round: Callable[[sqlite3.Connection, datetime], list[Due]],
) -> tuple[float, list[float], list[float], set[tuple[str, str, datetime]]]:
    """The first round (at START; the index re-plans every open incident in it), then
    `rounds` rounds a minute apart, then `repeats` quiet rounds (nothing new due); the
    times in ms and every item fired."""
    conn = schema.connect(str(path))
    times, fired = [], set()
    try:
        for minute in range(rounds + 1):
            now = START + timedelta(minutes=minute)
            started = time.perf_counter()
            items = one_round(conn, now)
            times.append((time.perf_counter() - started) * 1000)
            fired |= {(d.subject, d.kind, d.due_at) for d in items}
        # Quiet rounds: again at the last minute, when everything due then has fired.
        quiet = []
        for _ in range(repeats):
            started = time.perf_counter()
            if one_round(conn, now):
                raise AssertionError("a quiet round fired something")
            quiet.append((time.perf_counter() - started) * 1000)
    finally:
        conn.close()
    return times[0], times[1:], quiet, fired


def first_index_round(conn: sqlite3.Connection, now: datetime) -> list[Due]:
    """The index's first round: every open incident marked, then planned (in batches)."""
    if now == START:
        reminders.replan_all(conn)
    return index_round(conn, now)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def line(name: str, times: list[float], fired: int, quiet: list[float]) -> str:
    return (
        f"  {name:<10} per round p50 {pct(times, 50):8.2f} ms  p99 {pct(times, 99):8.2f} ms"
        f"  max {max(times):8.2f} ms  | quiet round p50 {statistics.median(quiet):8.3f} ms"
        f"  | items fired {fired}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--incidents", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--active", type=int, default=30, help="incidents falling due")
    parser.add_argument("--rounds", type=int, default=30, help="rounds, one per minute")
    parser.add_argument("--quiet", type=int, default=5, help="quiet rounds measured")
    args = parser.parse_args()
    print(f"SLA rounds: {args.rounds} rounds one simulated minute apart, {args.active} active")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.incidents:
            base = Path(tmp) / f"base-{size}.sqlite3"
            fill(base, size - args.active, args.active)
            scan_db, index_db = Path(tmp) / "scan.sqlite3", Path(tmp) / "index.sqlite3"
            shutil.copy(base, scan_db)
            shutil.copy(base, index_db)
            _, scan_times, scan_quiet, scan_fired = run(
                scan_db, args.rounds, args.quiet, full_scan_round
            )
            replan_ms, index_times, index_quiet, index_fired = run(
                index_db, args.rounds, args.quiet, first_index_round
            )
            same = "same items" if scan_fired == index_fired else "ITEMS DIFFER"
            print(f"{size:,} open incidents ({same}):")
            print(line("full scan", scan_times, len(scan_fired), scan_quiet))
            print(line("index", index_times, len(index_fired), index_quiet))
            ratio = pct(scan_times, 50) / max(pct(index_times, 50), 1e-6)
            print(
                f"  index p50 {ratio:,.0f}x cheaper; its first round (re-plans every open"
                f" incident): {replan_ms:.0f} ms"
            )
            for leftover in (base, scan_db, index_db):
                leftover.unlink()


if __name__ == "__main__":
    main()
