"""Two daemons on one PostgreSQL behave as one gateway: when the node holding the leases is
killed, the other takes the singleton loops over with nothing lost and nothing doubled; a
node paused past its lease does nothing when it wakes."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections import Counter
from email import message_from_bytes
from pathlib import Path

import psycopg

from tests.daemon import Daemon
from tests.fakes.pagerduty import FakePagerDuty
from tests.peers.postgres import PostgresServer
from tests.pg_nodes import (
    CLAIM_S,
    all_processed,
    pg_node,
    query,
    send,
    stored_reports,
    wait_for,
)

KEY = "R0UT1NGKEY0123456789abcdefABCDEF"
SINGLETONS = ("inbox", "sla")
ROUND = 32  # the outbox claims at most this many entries a round ([outbox] concurrency)


def _pd(url: str) -> str:
    return f'[pagerduty]\nrouting_key = {{ value = "{KEY}" }}\nurl = "{url}"\ntimeout_s = 5\n'


def holders(dsn: str) -> dict[str, str]:
    """Lease name -> the holder's node name (its first part), for unexpired leases."""
    try:
        rows = query(dsn, "SELECT name, holder FROM leases WHERE expires_at > clock_timestamp()")
    except psycopg.errors.UndefinedTable:  # no node has started yet
        return {}
    return {name: holder.split(":")[0] for name, holder in rows}


def emails(*nodes: Daemon) -> list[str]:
    """The Message-IDs of every mail the nodes wrote (folder mode), with repeats."""
    found = []
    for d in nodes:
        for path in (d.folder / "state" / "outgoing-mail").glob("*.eml"):
            found.append(str(message_from_bytes(path.read_bytes())["Message-ID"]))
    return found


def _triggers(pd: FakePagerDuty) -> Counter[str]:
    return Counter(e["dedup_key"] for e in pd.events if e["event_action"] == "trigger")


async def _two_nodes(dsn: str, tmp_path: Path, url: str, lease_s: float) -> tuple[Daemon, Daemon]:
    a = pg_node(tmp_path / "a", dsn, "a", lease_s=lease_s, extra=_pd(url))
    b = pg_node(tmp_path / "b", dsn, "b", lease_s=lease_s, extra=_pd(url))
    await asyncio.to_thread(a.start)
    # a takes the leases first, so the test knows whom to kill
    assert await asyncio.to_thread(
        wait_for, lambda: all(holders(dsn).get(n) == "a" for n in SINGLETONS)
    )
    await asyncio.to_thread(b.start)
    return a, b


async def test_sigkill_of_the_lease_holder_fails_over(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """Reports arrive on both nodes; the lease holder is SIGKILLed halfway: the other node
    takes the singleton loops over, every report answered 250 is processed once, and no
    page or email is sent twice."""
    dsn = postgres.new_database()
    async with FakePagerDuty() as pd:
        a, b = await _two_nodes(dsn, tmp_path, pd.url, lease_s=3.0)
        answers: dict[int, int] = {}
        killed = threading.Event()

        def reports() -> None:
            for n in range(1, 81):
                node = a if n % 2 and not killed.is_set() else b
                answers[n] = send(node, n, subject=f"Outage {n}: service {n * 7919} down")[0]
                if n == 40:
                    a.kill()
                    killed.set()
                time.sleep(0.02)

        try:
            sender = asyncio.create_task(asyncio.to_thread(reports))
            await asyncio.to_thread(killed.wait, 60)
            t0 = time.monotonic()
            took_over = await asyncio.to_thread(
                wait_for, lambda: all(holders(dsn).get(n) == "b" for n in SINGLETONS), 60
            )
            failover_s = time.monotonic() - t0
            await sender
            accepted = {n for n, code in answers.items() if code == 250}
            assert await asyncio.to_thread(
                wait_for, lambda: all_processed(dsn) >= len(accepted), 60
            )
            assert await asyncio.to_thread(
                wait_for, lambda: not query(dsn, "SELECT 1 FROM outbox WHERE state = 'pending'"), 60
            )
        finally:
            await asyncio.to_thread(b.stop)
            a.kill()
            b.kill()
        print(f"failover after SIGKILL: {failover_s:.2f}s")
        assert took_over
        assert accepted == set(range(1, 81)) - {
            n for n in answers if n % 2 and n > 40 and answers[n] != 250
        }
        stored = stored_reports(dsn)
        assert accepted <= set(stored) and len(stored) == len(set(stored))
        paged = {r for (r,) in query(dsn, "SELECT dedup_key FROM pages WHERE action = 'trigger'")}
        assert len(paged) == len(accepted)  # each report its own incident, each paged
        triggered = _triggers(pd)
        assert set(triggered) == paged, (
            sorted(set(triggered) ^ paged),
            query(
                dsn,
                "SELECT id, kind, state, attempts, claim_holder, last_error FROM outbox"
                " WHERE kind = 'page.trigger' AND state <> 'done'",
            ),
        )
        # Nobody is paged twice: a repeated trigger carries its dedup_key and PagerDuty
        # folds it into the open alert.
        assert pd.alerts_opened == len(paged)
        for node in (a, b):  # no node delivers an entry twice
            assert max(_delivered(node).values()) == 1
        in_doubt = _in_doubt(dsn)
        # Sent twice is only what the killed node had claimed but not yet recorded (its
        # round's settle died with it): the other node sends it again, with the same
        # idempotency key, once the dead node's claim ran out. Nothing else, ever.
        assert {k for k, n in triggered.items() if n > 1} <= in_doubt["dedup_key"]
        assert max(triggered.values()) <= 2
        sent = Counter(emails(a, b))
        assert sent and {m for m, n in sent.items() if n > 1} <= in_doubt["message_id"]
        assert max(sent.values()) <= 2
        print(
            f"sent again after the killed node's claim ran out: {len(in_doubt['ids'])} entries, "
            f"{sum(n - 1 for n in triggered.values())} page triggers (alerts opened once), "
            f"{sum(n - 1 for n in sent.values())} emails (same Message-ID)"
        )


def _delivered(d: Daemon) -> Counter[int]:
    """The outbox entries a node logged as delivered, with repeats."""
    import json  # noqa: PLC0415

    found: Counter[int] = Counter()
    for line in d.log.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "outbox.delivered":
            found[int(event["outbox_id"])] += 1
    return found


def _in_doubt(dsn: str) -> dict[str, set[str]]:
    """The entries the killed node (a) had claimed and not recorded when it died: node b
    could claim them only after that claim ran out, so each was done at least CLAIM_S after
    it was made (and nothing else is that late here). Checked: all recorded by b, at most
    one round of them (the outbox's concurrency). Returns their ids and idempotency keys."""
    rows = query(
        dsn,
        "SELECT id, split_part(claim_holder, ':', 1), payload::jsonb ->> 'dedup_key',"
        " payload::jsonb ->> 'message_id' FROM outbox WHERE state = 'done'"
        " AND done_at::timestamptz - created_at::timestamptz >= make_interval(secs => %s)"
        " ORDER BY id",
        CLAIM_S - 0.5,
    )
    assert {r[1] for r in rows} <= {"b"}, rows
    assert len(rows) <= ROUND, rows
    return {
        "ids": {str(r[0]) for r in rows},
        "dedup_key": {r[2] for r in rows if r[2]},
        "message_id": {r[3] for r in rows if r[3]},
    }


async def test_a_node_paused_past_its_lease_does_nothing_on_waking(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """SIGSTOP the lease holder for three lease times while reports arrive at the other
    node, then SIGCONT: the other node took over and paged; the woken node processes and
    pages nothing it held before, and nothing is doubled."""
    dsn = postgres.new_database()
    async with FakePagerDuty() as pd:
        a, b = await _two_nodes(dsn, tmp_path, pd.url, lease_s=2.0)
        try:
            assert a.proc is not None
            os.kill(a.proc.pid, signal.SIGSTOP)
            for n in range(1, 6):
                assert await asyncio.to_thread(
                    send, b, n, f"Outage {n}: service {n * 7919} down"
                ) == (250, b"ok")
            assert await asyncio.to_thread(
                wait_for, lambda: all(holders(dsn).get(n) == "b" for n in SINGLETONS), 30
            )
            assert await asyncio.to_thread(wait_for, lambda: all_processed(dsn) == 5, 30)
            await asyncio.sleep(6.0)  # a has been stopped for three lease times
            woke = time.time()
            os.kill(a.proc.pid, signal.SIGCONT)
            await asyncio.sleep(3.0)
            assert await asyncio.to_thread(
                wait_for, lambda: not query(dsn, "SELECT 1 FROM outbox WHERE state = 'pending'"), 30
            )
        finally:
            if a.proc is not None and a.proc.poll() is None:
                os.kill(a.proc.pid, signal.SIGCONT)
            await asyncio.to_thread(a.stop)
            await asyncio.to_thread(b.stop)
            a.kill()
            b.kill()
        assert all(holders(dsn).get(n) != "a" for n in SINGLETONS)
        assert max(_triggers(pd).values()) == 1 and pd.alerts_opened == len(_triggers(pd))
        sent = emails(a, b)
        assert len(sent) == len(set(sent))
        assert _acted_after(a, woke) == []


def _acted_after(d: Daemon, since: float) -> list[str]:
    """Processing events the node logged after `since` (epoch seconds)."""
    import json  # noqa: PLC0415
    from datetime import datetime  # noqa: PLC0415

    out = []
    for line in d.log.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if (
            event.get("event") == "inbox.processed"
            and datetime.fromisoformat(event["timestamp"]).timestamp() > since
        ):
            out.append(line)
    return out
