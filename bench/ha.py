"""High availability on PostgreSQL: failover, pause fencing and a database restart, with
two real daemons on loopback sharing one throwaway PostgreSQL cluster.

Scenarios (each on a fresh database, PagerDuty pointed at the local fake of
tests/fakes/pagerduty.py, replies written to each node's folder):

* failover: `--reports` reports (default 500) are sent alternately to node a and node b,
  one every `--interval-ms`; halfway, a (which holds the leases) is SIGKILLed. Reported:
  seconds from the kill until b holds every singleton lease, reports answered 250 that were
  not stored or processed (lost), dedup_keys triggered more than once, Message-IDs mailed
  more than once (doubled).
* pause: a is SIGSTOPped for three lease times while reports go to b, then SIGCONTed:
  reported are the effects a had after waking (processed messages) and anything doubled.
* restart: one node under a trickle of reports (one every 20 ms) while PostgreSQL is
  crashed (`pg_ctl -m immediate stop`) and started again after 1 s: how many were answered
  451 during the gap, how many that got 250 were lost.

    .venv/bin/python bench/ha.py                 # all three, lease 3 s
    .venv/bin/python bench/ha.py --only failover --reports 500 --lease-s 6

Needs Debian's postgresql; as root the cluster runs as the `postgres` user.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fakes.pagerduty import FakePagerDuty  # noqa: E402
from tests.peers.postgres import PostgresServer, running_server  # noqa: E402
from tests.pg_nodes import (  # noqa: E402
    all_processed,
    pg_node,
    query,
    send,
    stored_reports,
    wait_for,
)
from tests.test_ha import SINGLETONS, _pd, emails, holders  # noqa: E402


def _doubled(pd: FakePagerDuty, folders: list[Any]) -> tuple[int, int]:
    triggers = Counter(e["dedup_key"] for e in pd.events if e["event_action"] == "trigger")
    sent = Counter(emails(*folders))
    return sum(n - 1 for n in triggers.values()), sum(n - 1 for n in sent.values())


async def failover(
    server: PostgresServer, tmp: Path, reports: int, interval_s: float, lease_s: float
) -> dict[str, Any]:
    """SIGKILL the lease holder halfway through the reports."""
    dsn = server.new_database()
    async with FakePagerDuty() as pd:
        a = pg_node(tmp / "fa", dsn, "a", lease_s=lease_s, extra=_pd(pd.url))
        b = pg_node(tmp / "fb", dsn, "b", lease_s=lease_s, extra=_pd(pd.url))
        answers: dict[int, int] = {}
        killed = threading.Event()
        try:
            await asyncio.to_thread(a.start)
            await asyncio.to_thread(
                wait_for, lambda: all(holders(dsn).get(n) == "a" for n in SINGLETONS)
            )
            await asyncio.to_thread(b.start)

            def load() -> None:
                for n in range(1, reports + 1):
                    node = a if n % 2 and not killed.is_set() else b
                    answers[n] = send(node, n, f"Outage {n}: service {n * 7919} down")[0]
                    if n == reports // 2:
                        a.kill()
                        killed.set()
                    time.sleep(interval_s)

            sender = asyncio.create_task(asyncio.to_thread(load))
            await asyncio.to_thread(killed.wait, 600)
            t0 = time.monotonic()
            await asyncio.to_thread(
                wait_for, lambda: all(holders(dsn).get(n) == "b" for n in SINGLETONS), 120, 0.02
            )
            took = time.monotonic() - t0
            await sender
            accepted = {n for n, code in answers.items() if code == 250}
            await asyncio.to_thread(wait_for, lambda: all_processed(dsn) >= len(accepted), 300)
            await asyncio.to_thread(
                wait_for,
                lambda: not query(dsn, "SELECT 1 FROM outbox WHERE state = 'pending'"),
                300,
            )
        finally:
            await asyncio.to_thread(b.stop)
            a.kill()
            b.kill()
        stored = set(stored_reports(dsn))
        pages, mails = _doubled(pd, [a, b])
        return {
            "failover_s": round(took, 2),
            "reports_sent": reports,
            "answered_250": len(accepted),
            "lost": len(accepted - stored),
            "pages": len(pd.alerts),
            "pages_doubled": pages,
            "emails_doubled": mails,
        }


async def pause(server: PostgresServer, tmp: Path, lease_s: float) -> dict[str, Any]:
    """SIGSTOP the lease holder past its lease, SIGCONT, count what it does after."""
    dsn = server.new_database()
    async with FakePagerDuty() as pd:
        a = pg_node(tmp / "pa", dsn, "a", lease_s=lease_s, extra=_pd(pd.url))
        b = pg_node(tmp / "pb", dsn, "b", lease_s=lease_s, extra=_pd(pd.url))
        try:
            await asyncio.to_thread(a.start)
            await asyncio.to_thread(
                wait_for, lambda: all(holders(dsn).get(n) == "a" for n in SINGLETONS)
            )
            await asyncio.to_thread(b.start)
            assert a.proc is not None
            os.kill(a.proc.pid, signal.SIGSTOP)
            t0 = time.monotonic()
            for n in range(1, 21):
                await asyncio.to_thread(send, b, n, f"Outage {n}: service {n * 7919} down")
            await asyncio.to_thread(wait_for, lambda: all_processed(dsn) == 20, 120)
            await asyncio.sleep(max(0.0, 3 * lease_s - (time.monotonic() - t0)))
            woke = time.time()
            os.kill(a.proc.pid, signal.SIGCONT)
            await asyncio.sleep(2 * lease_s)
        finally:
            if a.proc is not None and a.proc.poll() is None:
                os.kill(a.proc.pid, signal.SIGCONT)
            await asyncio.to_thread(a.stop)
            await asyncio.to_thread(b.stop)
        from tests.test_ha import _acted_after  # noqa: PLC0415

        pages, mails = _doubled(pd, [a, b])
        return {
            "paused_s": round(3 * lease_s, 1),
            "effects_after_wake": len(_acted_after(a, woke)),
            "pages_doubled": pages,
            "emails_doubled": mails,
        }


def restart(tmp: Path) -> dict[str, Any]:
    """Crash and restart PostgreSQL under a trickle of reports to one node."""
    with running_server() as own:
        dsn = own.new_database("gw")
        d = pg_node(tmp / "r", dsn, "a")
        answers: dict[int, int] = {}
        done = threading.Event()

        def trickle() -> None:
            n = 0
            while not done.is_set():
                n += 1
                answers[n] = send(d, n)[0]
                time.sleep(0.02)

        try:
            d.start()
            worker = threading.Thread(target=trickle)
            worker.start()
            time.sleep(2.0)
            own.stop("immediate")
            time.sleep(1.0)
            own.start()
            time.sleep(3.0)
            done.set()
            worker.join(60)
            accepted = {n for n, c in answers.items() if c == 250}
            wait_for(lambda: all_processed(dsn) >= len(accepted), 120)
        finally:
            d.stop()
            d.kill()
        stored = stored_reports(dsn)
        return {
            "sent": len(answers),
            "answered_250": len(accepted),
            "answered_451": sum(1 for c in answers.values() if c == 451),
            "other": sum(1 for c in answers.values() if c not in (250, 451)),
            "lost": len(accepted - set(stored)),
            "stored_twice": len(stored) - len(set(stored)),
        }


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=["failover", "pause", "restart"])
    p.add_argument("--reports", type=int, default=500)
    p.add_argument("--interval-ms", type=float, default=10.0)
    p.add_argument("--lease-s", type=float, default=3.0)
    args = p.parse_args()
    print(f"command: {' '.join(sys.orig_argv)}")
    with TemporaryDirectory(prefix="ha-bench-") as tmp, running_server() as server:
        if args.only in (None, "failover"):
            print(
                "failover:",
                await failover(
                    server, Path(tmp), args.reports, args.interval_ms / 1000, args.lease_s
                ),
            )
        if args.only in (None, "pause"):
            print("pause:", await pause(server, Path(tmp), args.lease_s))
        if args.only in (None, "restart"):
            print("restart:", await asyncio.to_thread(restart, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
