"""A partition: node a, in its own network namespace, holds the leases when its link to
PostgreSQL is cut. It stops acting within its lease time (its own clock says so), node b
takes over and pages, nothing is doubled; after the link heals, a rejoins as a follower."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from tests.daemon import Daemon
from tests.fakes.pagerduty import FakePagerDuty
from tests.peers.netns import Netns, namespace
from tests.peers.postgres import PostgresServer
from tests.pg_nodes import all_processed, pg_node, query, send, wait_for
from tests.test_ha import SINGLETONS, _pd, _triggers, emails, holders

LEASE_S = 3.0


def _spawn_in(ns: Netns, d: Daemon) -> None:
    out = d.log.open("ab")
    d.proc = subprocess.Popen(
        [*ns.prefix(), sys.executable, "-m", "gateway", "run", "--config", str(d.config)],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    out.close()


def _events(d: Daemon, name: str) -> list[tuple[float, dict[str, object]]]:
    found = []
    for line in d.log.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == name:
            found.append((datetime.fromisoformat(str(event["timestamp"])).timestamp(), event))
    return found


async def test_a_cut_off_lease_holder_stops_and_rejoins_as_follower(
    postgres_own: PostgresServer, tmp_path: Path
) -> None:
    """Cut a's link while it holds the leases: a counts them lost within the lease time,
    b takes them and pages the reports sent to it; after healing a stays a follower and
    nothing was paged or mailed twice."""
    with namespace() as ns:
        postgres_own.listen = f"127.0.0.1,{ns.host_ip}"
        postgres_own.trust_network(ns.cidr)
        postgres_own.restart()
        db = postgres_own.new_database("gw")
        async with FakePagerDuty() as pd:
            # a reaches PostgreSQL over the pair; the fake PagerDuty is not reachable from
            # inside, so a's outbox entries (if any) can only go through b
            a = pg_node(
                tmp_path / "a",
                db.replace("127.0.0.1", ns.host_ip),
                "a",
                lease_s=LEASE_S,
                extra=_pd(pd.url),
            )
            b = pg_node(tmp_path / "b", db, "b", lease_s=LEASE_S, extra=_pd(pd.url))
            try:
                _spawn_in(ns, a)
                assert await asyncio.to_thread(
                    wait_for, lambda: all(holders(db).get(n) == "a" for n in SINGLETONS)
                )
                await asyncio.to_thread(b.start)
                cut_at = time.time()
                ns.cut()
                for n in range(1, 6):
                    assert await asyncio.to_thread(
                        send, b, n, f"Outage {n}: service {n * 7919} down"
                    ) == (250, b"ok")
                assert await asyncio.to_thread(
                    wait_for, lambda: all(holders(db).get(n) == "b" for n in SINGLETONS), 30
                )
                assert await asyncio.to_thread(wait_for, lambda: all_processed(db) == 5, 30)
                assert await asyncio.to_thread(
                    wait_for,
                    lambda: not query(db, "SELECT 1 FROM outbox WHERE state = 'pending'"),
                    30,
                )
                lost = [
                    at for at, e in _events(a, "lease.work_stopped") if e.get("lease") == "inbox"
                ]
                ns.heal()
                healed_at = time.time()
                await asyncio.sleep(3 * LEASE_S)
                assert all(holders(db).get(n) == "b" for n in SINGLETONS)
            finally:
                if a.proc is not None and a.proc.poll() is None:
                    a.proc.terminate()
                    await asyncio.to_thread(a.proc.wait, 30)
                if b.proc is not None:
                    await asyncio.to_thread(b.stop)
                a.kill()
                b.kill()
    assert lost, "a never stopped its singleton work"
    print(f"cut-off node stopped acting {lost[0] - cut_at:.2f}s after the cut")
    # By design a stops 0.8 lease after its last renewal (docs/ha.md gives the measured
    # figure); the bound here is loose, for a busy machine.
    assert lost[0] - cut_at <= 3 * LEASE_S
    assert not [at for at, e in _events(a, "lease.acquired") if at > healed_at]
    assert not [at for at, _ in _events(a, "inbox.processed") if at > cut_at]
    assert max(_triggers(pd).values()) == 1 and pd.alerts_opened == len(_triggers(pd))
    sent = emails(a, b)
    assert len(sent) == len(set(sent))
