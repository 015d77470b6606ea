"""Resident memory of the daemon with 10,000 open incidents in its store.

What it measures: VmRSS (from /proc; what `ps` and `top` show an operator) of the daemon
process and of its parse sandbox child, and their PSS (proportional set size, from
smaps_rollup: pages shared between processes, such as the interpreter's libraries, counted
once in the sum rather than in each process), after it has started on a store that already
holds `--incidents` open incidents (each with a reporter, two thread keys and two timeline
events, as a real report leaves them), let it settle, and then processed `--reports` new
reports (which look up threads and open incidents as production does).

Target: daemon + parse child at most 100 MB (VmRSS) together with 10,000 open incidents,
and a stated bound with 100,000 (`--incidents 100000`).

Method: the store is filled through the same write path the pipeline uses
(`gateway.store.db.apply_plan`, one transaction), then `python -m gateway run` is started on it
with the default configuration (replies to a folder, pages recorded locally; the status
endpoint on a free port). RSS is read once the SMTP port answers plus `--settle-s`, and
again after the reports are processed.

    .venv/bin/python bench/rss_incidents.py
    .venv/bin/python bench/rss_incidents.py --incidents 100000
"""

from __future__ import annotations

import argparse
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from gateway.domain import Channel, NewIncident, Plan, Reporter, TimelineEvent  # noqa: E402
from gateway.store import db, incidents, schema  # noqa: E402
from rules.types import Mailbox, Priority  # noqa: E402

TARGET_MB = 100.0


def fill(path: Path, count: int, due_in_h: float = 0.0) -> None:
    conn = schema.connect(str(path))
    schema.migrate(conn)
    now = datetime.now(UTC)
    due = now + timedelta(hours=due_in_h)
    with db.transaction(conn):
        for i in range(count):
            sender = f"user{i}@tenant{i % 97}.example"
            plan = Plan(
                outcome="opened",
                new_incident=NewIncident(
                    title=f"Our site is down ({i})",
                    priority=Priority.P2,
                    mailbox=Mailbox.EMERGENCY,
                    rule="apps-5xx",
                    reasons=("P2 by rule 'apps-5xx': some requests fail", "in hours"),
                    period=None,
                    respond_by=due,
                    next_update_by=due,
                ),
                reporter=Reporter(Channel.EMAIL, sender, (f"<m{i}@tenant.example>",)),
                timeline=(
                    TimelineEvent(now, "reported", sender, "Reported by email " * 4),
                    TimelineEvent(now, "triaged", "rules", "P2: some requests fail"),
                ),
                message_ids=(f"<m{i}@tenant.example>", f"<inc-{i}.ack@localhost>"),
            )
            incidents.apply_plan(conn, plan, now)
    conn.close()


def rss_mb(pid: int) -> float:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1]) / 1024
    return 0.0


def pss_mb(pid: int) -> float:
    for row in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if row.startswith("Pss:"):
            return int(row.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(c) for c in text]
    return found


def report(label: str, pid: int) -> float:
    """Print the daemon's and its child's RSS and PSS; return the RSS of both together."""
    main, kids = rss_mb(pid), children(pid)
    child = sum(rss_mb(c) for c in kids)
    pss = pss_mb(pid) + sum(pss_mb(c) for c in kids)
    print(
        f"{label:<28} daemon {main:6.1f} MB  parse child {child:6.1f} MB  "
        f"total RSS {main + child:6.1f} MB  (PSS {pss:6.1f} MB)"
    )
    return main + child


def send_reports(port: int, count: int) -> None:
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        for i in range(count):
            body = (
                f"From: bob@tenant.example\r\nTo: emergency@localhost\r\n"
                f"Subject: Deploys fail {i}\r\nMessage-ID: <new{i}@tenant.example>\r\n\r\n"
                "Our deploys fail with a 500 from the API.\r\n"
            )
            smtp.sendmail("bob@tenant.example", ["emergency@localhost"], body)


def inbox_done(database: Path) -> int:
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM inbox WHERE state = 'done'").fetchone()[0])
    finally:
        conn.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--incidents", type=int, default=10_000)
    p.add_argument("--reports", type=int, default=50)
    p.add_argument("--settle-s", type=float, default=3.0)
    p.add_argument(
        "--due-in-h",
        type=float,
        default=0.0,
        help="respond-by and next update of every incident this many hours from "
        "now (0: all overdue at start, so the first SLA round fires for every "
        "one of them)",
    )
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="rss-incidents-") as tmp:
        folder = Path(tmp)
        (folder / "state").mkdir()
        database = folder / "state" / "gateway.sqlite3"
        started = time.perf_counter()
        fill(database, args.incidents, args.due_in_h)
        print(
            f"filled {args.incidents} open incidents in {time.perf_counter() - started:.1f} s "
            f"({database.stat().st_size / 1e6:.1f} MB database)"
        )
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        config = folder / "gateway.toml"
        config.write_text(
            f'[state]\ndir = "{folder / "state"}"\n[smtp]\nport = {port}\n'
            # the status endpoint on a free port: on the default one it may be taken
            '[http]\nport = 0\n[log]\nlevel = "warning"\nformat = "json"\n'
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(config)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if proc.poll() is not None:
                        print("the daemon exited")
                        return 1
                    time.sleep(0.05)
            time.sleep(args.settle_s)
            idle = report("after start-up", proc.pid)
            send_reports(port, args.reports)
            deadline = time.monotonic() + 60
            while inbox_done(database) < args.reports and time.monotonic() < deadline:
                time.sleep(0.1)
            busy = report(f"after {args.reports} new reports", proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    worst = max(idle, busy)
    print(
        f"target: daemon + parse child <= {TARGET_MB:g} MB with {args.incidents} open "
        f"incidents: {'met' if worst <= TARGET_MB else 'NOT met'} ({worst:.1f} MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
