"""Floods against the emergency mailbox, and the page latency of a genuine P1 sent during each.

What it measures (issue 17 item 1): whether a tenant's authenticated, allow-listed P1 sent
in the middle of a flood still pages, and how long after its 250 the page reaches a local
PagerDuty Events API v2 fake (`tests/fakes/pagerduty.py`). Three floods, each against a
fresh daemon (`python -m gateway run` in its own process, its own state folder):

- `one-sender`: `--one-count` mails in the tenant's own name (From alice@tenant.example),
  which the trusted MTA marks `dmarc=fail`, on `--conns` sessions, as fast as accepted;
- `many-senders`: `--many-count` mails from as many different forged tenant addresses
  (u0@…, u1@…, all `dmarc=fail`), as fast as accepted: past `global_per_minute`;
- `sustained`: distinct forged senders at `--rate` messages a minute (default 360, above the
  default global limit of 300) for `--sustained-s` seconds, open loop.

A `quiet` run first sends the same P1 with no flood at all: the baseline latency. Every run
starts with one paging warm-up report from another tenant (waited for), so no latency
includes the daemon's cold start.

The genuine P1 (From alice@tenant.example, `dmarc=pass` from the trusted MTA, a subject
unlike the flood's) is sent on its own session once `--p1-after` of the flood's messages
were accepted (default: 60 % of them; `--sustained-p1-after`, 85 %, for the sustained
flood, so that it is sent after the global limit tripped), while the flood goes on. The
daemon's configuration is the reviewed one: `[trust] trusted_authserv_id` and
`allow_domains`, default `[limits]`. Each run is bounded: at most the counts above, and
`--max-s` seconds per flood (the flood stops there); then up to `--wait-s` for the page.

Printed per flood: messages offered, 250s, other answers, held, incidents opened by the
flood, pages caused by the flood, whether the P1 paged and its latency (250 → page).

    .venv/bin/python bench/flood.py                      # the three floods
    .venv/bin/python bench/flood.py --only one-sender
    .venv/bin/python bench/flood.py --repo /path/to/other/checkout   # "before" figures

`--repo` runs the daemon from another checkout of this project (the load generator and the
fake stay this one's), so the same attack can be measured on an earlier version.
Exit status: 0 measured; 1 a flood could not be run (the daemon did not start).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))
from intake_to_page import ROUTING_KEY, FakeThread, TimedPagerDuty  # noqa: E402

MTA = "mx.bench.example"
P1_SUBJECT = "Production apps all returning 503"
KINDS = ["quiet", "one-sender", "many-senders", "sustained"]


@dataclass
class Result:
    """What one flood did."""

    name: str
    offered: int = 0
    accepted: int = 0
    refused: int = 0
    held: int = 0
    flood_incidents: int = 0
    flood_pages: int = 0
    p1_accepted_at: float | None = None
    p1_paged_ms: float | None = None
    notes: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_daemon(
    repo: Path, folder: Path, pd_url: str, extra_toml: str = ""
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    (folder / "pd-key").write_text(ROUTING_KEY)
    config = folder / "gateway.toml"
    config.write_text(
        f'[state]\ndir = "{folder / "state"}"\n[smtp]\nport = {port}\n'
        f'[pagerduty]\nrouting_key = {{ file = "pd-key" }}\nurl = "{pd_url}"\n'
        '[log]\nlevel = "warning"\nformat = "json"\n[http]\nport = 0\n'
        f'[trust]\nallow_domains = ["tenant.example"]\ntrusted_authserv_id = "{MTA}"\n' + extra_toml
    )
    log = (folder / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(config)],
        cwd=repo,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"daemon exited: {(folder / 'daemon.log').read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("daemon did not start")


def stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def mail(sender: str, subject: str, verdict: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["Authentication-Results"] = f"{MTA}; dmarc={verdict} header.from=tenant.example"
    msg["From"] = f"<{sender}>"
    msg["To"] = "emergency@localhost"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{time.perf_counter_ns()}.{abs(hash(subject))}@tenant.example>"
    msg.set_content(body)
    return msg


def flood_mail(kind: str, i: int) -> tuple[str, EmailMessage]:
    sender = "alice@tenant.example" if kind == "one-sender" else f"u{i}@tenant.example"
    return sender, mail(
        sender,
        f"Checking in, message {i}",
        "fail",
        f"Flood message {i}: nothing is wrong, this is noise.",
    )


async def run_flood(
    kind: str,
    port: int,
    count: int,
    rate_per_min: float | None,
    conns: int,
    p1_after: int,
    max_s: float,
    result: Result,
) -> None:
    """Offer the flood; send the P1 once `p1_after` flood messages were accepted."""
    queue: asyncio.Queue[tuple[str, EmailMessage] | None] = asyncio.Queue(maxsize=conns * 2)
    p1_sent = asyncio.Event()
    stop_at = time.perf_counter() + max_s

    async def p1() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60)
        await client.connect()
        try:
            await client.send_message(
                mail(
                    "alice@tenant.example",
                    P1_SUBJECT,
                    "pass",
                    "Hello, every app of ours returns 503 since 02:10.",
                )
            )
            result.p1_accepted_at = time.perf_counter()
        finally:
            await client.quit()

    async def sender() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60)
        await client.connect()
        try:
            while (item := await queue.get()) is not None:
                envelope, msg = item
                try:
                    await client.send_message(msg, sender=envelope)
                    result.accepted += 1
                except aiosmtplib.SMTPResponseException:
                    result.refused += 1
                if result.accepted >= p1_after and not p1_sent.is_set():
                    p1_sent.set()
                    tasks.append(asyncio.create_task(p1()))
        finally:
            await client.quit()

    tasks: list[asyncio.Task[None]] = []
    workers = [asyncio.create_task(sender()) for _ in range(conns)]
    start = time.perf_counter()
    for i in range(count):
        if time.perf_counter() > stop_at:
            result.notes.append(f"flood stopped at the {max_s:g} s bound")
            break
        if rate_per_min:
            await asyncio.sleep(max(0.0, start + i * 60.0 / rate_per_min - time.perf_counter()))
        await queue.put(flood_mail(kind, i))
        result.offered += 1
    for _ in workers:
        await queue.put(None)
    await asyncio.gather(*workers)
    if not p1_sent.is_set():
        await p1()
    await asyncio.gather(*tasks)


def read_state(folder: Path, result: Result) -> None:
    conn = sqlite3.connect(f"file:{folder / 'state' / 'gateway.sqlite3'}?mode=ro", uri=True)
    try:
        (result.held,) = conn.execute(
            "SELECT COUNT(*) FROM inbox WHERE outcome LIKE 'held:%'"
        ).fetchone()
        (result.flood_incidents,) = conn.execute(
            "SELECT COUNT(*) FROM incidents WHERE title LIKE 'Checking in%'"
        ).fetchone()
        (result.flood_pages,) = conn.execute(
            "SELECT COUNT(*) FROM pages p JOIN incidents i ON i.id = p.incident_id"
            " WHERE p.action = 'trigger' AND i.title LIKE 'Checking in%'"
        ).fetchone()
        pending = conn.execute("SELECT COUNT(*) FROM inbox WHERE state = 'pending'").fetchone()
        if pending[0]:
            result.notes.append(f"{pending[0]} still pending at the end")
    finally:
        conn.close()


def measure(kind: str, args: argparse.Namespace) -> Result:
    count = {
        "quiet": 0,
        "one-sender": args.one_count,
        "many-senders": args.many_count,
        "sustained": int(args.rate * args.sustained_s / 60),
    }[kind]
    rate = args.rate if kind == "sustained" else None
    result = Result(kind)
    with tempfile.TemporaryDirectory(prefix="flood-") as tmp, FakeThread() as fake:
        folder = Path(tmp)
        proc, port = start_daemon(args.repo, folder, fake.url)
        try:
            warm_up(port, fake)
            share = args.sustained_p1_after if kind == "sustained" else args.p1_after
            p1_after = max(1, int(count * share))
            asyncio.run(
                run_flood(
                    kind,
                    port,
                    count,
                    rate,
                    args.conns if rate is None else 4,
                    p1_after,
                    args.max_s,
                    result,
                )
            )
            deadline = time.monotonic() + args.wait_s
            while time.monotonic() < deadline and not paged(fake):
                time.sleep(0.05)
            arrival = paged(fake)
            if arrival is not None and result.p1_accepted_at is not None:
                result.p1_paged_ms = (arrival - result.p1_accepted_at) * 1000
            time.sleep(1.0)  # let the daemon finish the flood's tail before reading
        finally:
            stop_daemon(proc)
        read_state(folder, result)
    return result


def warm_up(port: int, fake: TimedPagerDuty) -> None:
    """One paging report first, so the P1's latency does not include a cold start."""

    async def go() -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60) as client:
            await client.send_message(
                mail(
                    "carol@tenant.example",
                    "Warm-up: login page 500",
                    "pass",
                    "Warm-up: all our apps return 502.",
                )
            )

    asyncio.run(go())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(
        "Warm-up" in summary for summary in list(fake.arrivals)
    ):
        time.sleep(0.05)


def paged(fake: TimedPagerDuty) -> float | None:
    return next((at for summary, at in list(fake.arrivals.items()) if P1_SUBJECT in summary), None)


def report(r: Result) -> str:
    page = f"paged after {r.p1_paged_ms:.0f} ms" if r.p1_paged_ms is not None else "NOT PAGED"
    notes = f"  ({'; '.join(r.notes)})" if r.notes else ""
    return (
        f"{r.name:<13} offered {r.offered:>5}  250 {r.accepted:>5}  refused {r.refused:>3}"
        f"  held {r.held:>5}  flood incidents {r.flood_incidents:>5}  flood pages "
        f"{r.flood_pages:>3}  authenticated P1: {page}{notes}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", type=Path, default=REPO, help="checkout to run the daemon from")
    p.add_argument("--only", choices=KINDS)
    p.add_argument("--one-count", type=int, default=50)
    p.add_argument("--many-count", type=int, default=1000)
    p.add_argument("--rate", type=float, default=360.0, help="sustained: messages a minute")
    p.add_argument("--sustained-s", type=float, default=70.0)
    p.add_argument("--conns", type=int, default=8)
    p.add_argument(
        "--p1-after",
        type=float,
        default=0.6,
        help="send the P1 after this share of the flood was accepted",
    )
    p.add_argument(
        "--sustained-p1-after",
        type=float,
        default=0.85,
        help="the same for the sustained flood (past the first minute's 300)",
    )
    p.add_argument("--max-s", type=float, default=120.0, help="bound on each flood")
    p.add_argument("--wait-s", type=float, default=20.0, help="how long to wait for the page")
    args = p.parse_args()
    print(f"daemon from {args.repo}")
    for kind in [args.only] if args.only else KINDS:
        print(report(measure(kind, args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
