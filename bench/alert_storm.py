"""Alert storm through a real Alertmanager: 1,000 alerts in 50 groups, firing then resolving,
with the gateway SIGKILLed (and restarted) in the middle.

    .venv/bin/python bench/alert_storm.py [--alerts 1000] [--groups 50] [--kill-after 20]

Alertmanager (Debian `prometheus-alertmanager`) groups by a `group` label (group_wait 1 s,
group_interval 2 s) and posts its webhooks through a timing proxy in this process to the
daemon (`python -m gateway run`, its own process) whose pages go to the local PagerDuty
fake. The proxy stamps each group's first firing notification ("Alertmanager's send"); the
fake stamps each trigger ("page"). Right after the daemon accepted `--kill-after`
notifications it is SIGKILLed (some accepted ones not yet processed) and started again on the
same state: Alertmanager's own retries carry what was refused meanwhile.
Reported: incidents opened, pages sent (and duplicates), send-to-page p50/p99/max, the
resolve notifications processed, and whether anything was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.intake_to_page import TimedPagerDuty, free_port  # noqa: E402
from tests.peers.alertmanager import Alertmanager, installed  # noqa: E402

ROUTING_KEY = "b" * 32
TOKEN = "bench-alertmanager-token-0123456789"
_GROUP = re.compile(r"SmokeTestFailed_g(\d+)")


class Proxy:
    """Alertmanager → proxy → daemon; stamps the first firing notification of each group."""

    def __init__(self, target_port: int) -> None:
        self.target = f"http://127.0.0.1:{target_port}/alerts/am"
        self.first_send: dict[int, float] = {}
        self.statuses: dict[int, int] = {}
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = free_port()
        self._runner: web.AppRunner | None = None
        self.kill_after = 0  # SIGKILL the daemon right after this many accepted notifications
        self.kill: Any = None
        self.killed = threading.Event()
        self.accepted = 0

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        data = json.loads(body)
        match = _GROUP.search(json.dumps(data.get("commonLabels", {})))
        if match and data.get("status") == "firing":
            self.first_send.setdefault(int(match.group(1)), time.perf_counter())
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    self.target,
                    data=body,
                    headers={
                        "Authorization": request.headers.get("Authorization", ""),
                        "Content-Type": "application/json",
                    },
                ) as resp,
            ):
                status = resp.status
        except aiohttp.ClientError:
            status = 503  # the daemon is down: Alertmanager retries
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status == 200:
            self.accepted += 1
            if self.accepted == self.kill_after and self.kill is not None:
                self.kill()  # in the middle of the storm: some accepted, not yet processed
                self.killed.set()
        return web.Response(status=status)

    async def _start(self) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/am", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def __enter__(self) -> Proxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def write_config(folder: Path, alerts_port: int, pd_url: str) -> Path:
    (folder / "pd-key").write_text(ROUTING_KEY)
    (folder / "am-token").write_text(TOKEN)
    config = folder / "gateway.toml"
    config.write_text(
        f'[state]\ndir = "{folder / "state"}"\n[smtp]\nenabled = false\n[http]\nenabled = false\n'
        f'[pagerduty]\nrouting_key = {{ file = "pd-key" }}\nurl = "{pd_url}"\n'
        '[log]\nlevel = "warning"\nformat = "json"\n'
        f"[alerts]\nport = {alerts_port}\nmax_body_bytes = 16777216\n"
        '[[alerts.source]]\nname = "am"\nkind = "alertmanager"\n'
        'secret = { file = "am-token" }\nrate_per_minute = 100000\n'
    )
    return config


def start_daemon(folder: Path, config: Path, port: int) -> subprocess.Popen[bytes]:
    log = (folder / "daemon.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(config)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"daemon exited: {(folder / 'daemon.log').read_text()[-2000:]}")
        try:
            import socket  # noqa: PLC0415

            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.05)
    raise SystemExit("daemon did not start")


def store_counts(folder: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{folder / 'state' / 'gateway.sqlite3'}?mode=ro", uri=True)
    try:

        def one(sql: str) -> int:
            return int(conn.execute(sql).fetchone()[0])

        return {
            "incidents": one("SELECT COUNT(*) FROM incidents"),
            "pending_inbox": one("SELECT COUNT(*) FROM inbox WHERE state = 'pending'"),
            "fired_events": one("SELECT COUNT(*) FROM timeline WHERE kind = 'alert.fired'"),
            "incidents_with_resolve": one(
                "SELECT COUNT(DISTINCT incident_id) FROM timeline WHERE kind = 'alert.resolved'"
            ),
        }
    finally:
        conn.close()


def alerts(count: int, groups: int, resolved: bool) -> list[dict[str, Any]]:
    return [
        Alertmanager.alert(
            {
                "alertname": f"SmokeTestFailed_g{i % groups}",
                "severity": "critical",
                "test": "apps",
                "group": f"g{i % groups}",
                "instance": f"i{i}",
            },
            summary="push and curl fail",
            resolved=resolved,
        )
        for i in range(count)
    ]


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def run(args: argparse.Namespace, kill: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="alertstorm") as tmp:
        folder = Path(tmp)
        fake = TimedPagerDuty()
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        asyncio.run_coroutine_threadsafe(fake.start(), loop).result(10)
        port = free_port()
        config = write_config(folder, port, fake.url)
        daemon = start_daemon(folder, config, port)
        (folder / "am").mkdir()
        with Proxy(port) as proxy:
            am = Alertmanager(folder / "am", f"http://127.0.0.1:{proxy.port}/am", TOKEN)
            am.start()
            try:
                proxy.kill_after = args.kill_after if kill else 0
                proxy.kill = lambda: daemon.send_signal(signal.SIGKILL)
                am.post_alerts(alerts(args.alerts, args.groups, resolved=False))
                killed_at = None
                if kill:
                    wait_for(proxy.killed.is_set, 60, "the SIGKILL")
                    daemon.wait(10)
                    killed_at = len(fake.arrivals)
                    daemon = start_daemon(folder, config, port)
                wait_for(lambda: len(fake.arrivals) >= args.groups, 120, "every page")
                wait_for(
                    lambda: store_counts(folder)["incidents"] >= args.groups, 60, "every incident"
                )
                am.post_alerts(alerts(args.alerts, args.groups, resolved=True))
                wait_for(
                    lambda: store_counts(folder)["incidents_with_resolve"] >= args.groups,
                    120,
                    "every resolve notification",
                )
                time.sleep(args.settle_s)  # anything late (a double page) would show now
            finally:
                am.stop()
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(30)
            latencies = []
            for summary, at in fake.arrivals.items():
                match = _GROUP.search(summary)
                if match and int(match.group(1)) in proxy.first_send:
                    latencies.append((at - proxy.first_send[int(match.group(1))]) * 1000)
            counts = store_counts(folder)
            triggers = [e for e in fake.events if e["event_action"] == "trigger"]
            result = {
                "alerts": args.alerts,
                "groups": args.groups,
                "killed_after_notifications": args.kill_after if kill else None,
                "pages_before_kill": killed_at,
                "incidents": counts["incidents"],
                "pages": len(triggers),
                "distinct_paged_incidents": len({e["dedup_key"] for e in triggers}),
                "pagerduty_alerts_opened": fake.alerts_opened,
                "resolve_notifications_on_timelines": counts["incidents_with_resolve"],
                "inbox_left_pending": counts["pending_inbox"],
                "proxy_statuses": proxy.statuses,
                "send_to_page_ms": {
                    "p50": round(statistics.median(latencies), 1),
                    "p99": round(statistics.quantiles(latencies, n=100, method="inclusive")[98], 1)
                    if len(latencies) >= 2
                    else None,
                    "max": round(max(latencies), 1),
                    "n": len(latencies),
                },
            }
        asyncio.run_coroutine_threadsafe(fake.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument(
        "--kill-after", type=int, default=20, help="accepted notifications before the SIGKILL"
    )
    parser.add_argument("--settle-s", type=float, default=5.0)
    args = parser.parse_args()
    if not installed():
        print("prometheus-alertmanager is not installed (see docs/alerts.md)", file=sys.stderr)
        return 2
    baseline = run(args, kill=False)
    result = run(args, kill=True)
    print(json.dumps({"baseline_no_kill": baseline, "with_sigkill": result}, indent=2))
    # A trigger repeated after the SIGKILL (delivered, not yet recorded) carries the same
    # dedup_key, so PagerDuty opens one alert: pagerduty_alerts_opened counts the pages.
    ok = all(
        r["incidents"] == args.groups
        and r["pagerduty_alerts_opened"] == args.groups
        and r["distinct_paged_incidents"] == args.groups
        and r["inbox_left_pending"] == 0
        and r["resolve_notifications_on_timelines"] == args.groups
        for r in (baseline, result)
    )
    print("OK: nothing lost, nothing doubled" if ok else "FAILED", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
