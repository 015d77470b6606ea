"""IMAP intake: delivery-to-incident latency, and burst throughput, against a real Dovecot.

Latency: `--messages` reports (default 100) are delivered one at a time with `dovecot-lda`
(as an MTA would) into a mailbox the gateway watches with IDLE. For each, the clock starts
just before dovecot-lda runs and stops when the incident row is visible in the gateway's
database (polled every 2 ms from the same event loop). Baseline, in the same run and for the
same deliveries: a bare aioimaplib client idling on the same mailbox, stopped at its EXISTS
push. The difference is the gateway's own share (fetch, commit, mark, pipeline, incident).

Burst: `--burst` messages (default 500) are appended over one IMAP session while the gateway
idles; throughput is messages / time from the first APPEND until every one is processed.
Baseline: the APPEND rate itself (how fast Dovecot takes them in).

Method: the test suite's `tests.peers.dovecot.Dovecot` in a temp folder (plain text on
loopback, mail_fsync=never), the real `gateway.app.App` in this process with the default
rulebook, pages recorded locally, replies written as files, logs at error. Percentiles are
nearest-rank. The machine is shared and has 2 cores: figures are noisy, compare ratios.

    .venv/bin/python bench/imap_latency.py                       # 100 messages, burst of 500
    .venv/bin/python bench/imap_latency.py --messages 20 --burst 100
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aioimaplib  # noqa: E402

from gateway.config.model import parse_config  # noqa: E402
from gateway.run.logs import configure  # noqa: E402
from tests.conftest import IN_HOURS, email_bytes, running, ticking  # noqa: E402
from tests.peers.dovecot import Dovecot, installed  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def count(db: Path, sql: str) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        value: int = conn.execute(sql).fetchone()[0]
        return value
    finally:
        conn.close()


async def until(check: object, step: float = 0.002, limit: float = 300.0) -> float:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not check():  # type: ignore[operator]
        if loop.time() > deadline:
            raise SystemExit("gave up waiting")
        await asyncio.sleep(step)
    return time.perf_counter()


async def bare_idler(dv: Dovecot, pushes: asyncio.Queue[float]) -> None:
    client = aioimaplib.IMAP4(port=dv.port, timeout=30)
    await client.wait_hello_from_server()
    await client.login("gw", dv.passwords["gw"])
    await client.select("INBOX")
    while True:
        idle = await client.idle_start(timeout=600)
        lines = await client.wait_server_push()
        now = time.perf_counter()
        client.idle_done()
        await asyncio.wait_for(idle, 30)
        if any(isinstance(x, bytes) and x.endswith(b"EXISTS") for x in lines):
            pushes.put_nowait(now)


async def main(args: argparse.Namespace) -> None:
    configure("error", "console")
    # Dovecot's folder directly under /tmp: every parent must be traversable by the mail user.
    dv = Dovecot(Path(tempfile.mkdtemp(prefix="dvb", dir="/tmp")))
    dv.add_user("gw", "gw-secret")
    dv.start()
    state = Path(tempfile.mkdtemp(prefix="imap-bench-"))
    db = state / "gateway.sqlite3"
    config = parse_config(
        {
            "state": {"dir": str(state)},
            "smtp": {"port": 0},
            "imap": [
                {
                    "name": "ops",
                    "host": "127.0.0.1",
                    "port": dv.port,
                    "tls": "none",
                    "allow_plaintext": True,
                    "user": "gw",
                    "password": {"value": "gw-secret"},
                }
            ],
        }
    )
    try:
        async with running(config, clock=ticking(IN_HOURS)) as app:
            [box] = app.imap
            await until(lambda: box.state == "connected")
            pushes: asyncio.Queue[float] = asyncio.Queue()
            idler = asyncio.create_task(bare_idler(dv, pushes))
            await asyncio.sleep(0.5)
            gateway, baseline = [], []
            for i in range(args.messages):
                raw = email_bytes(subject=f"latency {i}", sender=f"user{i}@tenant.example")
                start = time.perf_counter()
                await asyncio.to_thread(dv.deliver, "gw", raw)
                done = await until(lambda n=i + 1: count(db, "SELECT count(*) FROM incidents") >= n)
                pushed = await asyncio.wait_for(pushes.get(), 30)
                gateway.append((done - start) * 1000)
                baseline.append((pushed - start) * 1000)
                await asyncio.sleep(0.05)
            idler.cancel()
            print(f"delivery -> incident, {args.messages} messages (dovecot-lda, IDLE):")
            print(f"  gateway:  p50 {pct(gateway, 50):7.1f} ms   p99 {pct(gateway, 99):7.1f} ms")
            print(
                f"  baseline (bare client's EXISTS push): p50 {pct(baseline, 50):7.1f} ms   "
                f"p99 {pct(baseline, 99):7.1f} ms"
            )
            print(
                f"  gateway share: p50 "
                f"{pct([g - b for g, b in zip(gateway, baseline, strict=True)], 50):.1f} ms"
            )

            before = count(db, "SELECT count(*) FROM inbox")
            burst = [
                email_bytes(subject=f"burst {i}", sender=f"b{i}@tenant.example")
                for i in range(args.burst)
            ]

            async def append() -> float:
                await asyncio.to_thread(dv.append_many, "gw", burst)
                return time.perf_counter()

            start = time.perf_counter()
            appended = asyncio.create_task(append())
            done = await until(
                lambda: (
                    count(db, "SELECT count(*) FROM inbox WHERE state != 'pending'")
                    >= before + args.burst
                ),
                step=0.01,
            )
            append_s = await appended - start
            total = done - start
            unseen = await asyncio.to_thread(dv.uids, "gw", "UNSEEN")
            print(f"burst of {args.burst} (one APPEND session):")
            print(
                f"  gateway: all processed in {total:.2f} s = {args.burst / total:.0f} msg/s"
                f" (left unseen: {len(unseen)})"
            )
            print(f"  baseline (APPEND rate, upper bound): {args.burst / append_s:.0f} msg/s")
    finally:
        dv.stop()


if __name__ == "__main__":
    if not installed():
        raise SystemExit("Dovecot is not installed (./scripts/test installs dovecot-imapd)")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--burst", type=int, default=500)
    asyncio.run(main(parser.parse_args()))
