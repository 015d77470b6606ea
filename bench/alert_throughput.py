"""Webhook acceptance throughput: the daemon's alert listener against a bare aiohttp handler.

    .venv/bin/python bench/alert_throughput.py [--requests 2000] [--conns 1,8,32] [--repeat 3]

Both servers run in their own process; this process is the load generator (aiohttp, keep-alive
connections), posting distinct generic alerts (about 300 bytes of JSON, bearer token). The
daemon answers 200 only after each alert is committed to its SQLite inbox (WAL,
synchronous=FULL, group commit); the bare handler reads the body and answers 200 at once.
Reported: requests per second (median of `--repeat` runs) for each and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.alert_storm import start_daemon  # noqa: E402
from bench.intake_to_page import free_port  # noqa: E402

TOKEN = "bench-generic-token-0123456789abc"
BARE = textwrap.dedent("""
    import sys
    from aiohttp import web

    async def handle(request):
        await request.read()
        return web.json_response({"status": "accepted"})

    app = web.Application()
    app.router.add_post("/alerts/{source}", handle)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
""")


def daemon(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    (folder / "token").write_text(TOKEN)
    config = folder / "gateway.toml"
    config.write_text(
        f'[state]\ndir = "{folder / "state"}"\n[smtp]\nenabled = false\n[http]\nenabled = false\n'
        '[log]\nlevel = "warning"\nformat = "json"\n'
        f"[alerts]\nport = {port}\nrate_per_minute = 100000000\n"
        '[[alerts.source]]\nname = "gen"\nkind = "generic"\nsecret = { file = "token" }\n'
        "rate_per_minute = 100000000\n"
    )
    return start_daemon(folder, config, port), port


def bare() -> tuple[subprocess.Popen[bytes], int]:
    import socket  # noqa: PLC0415

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", BARE, str(port)], start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit("bare server did not start")


async def load(port: int, requests: int, conns: int, tag: str) -> float:
    url = f"http://127.0.0.1:{port}/alerts/gen"
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    failures = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        while not queue.empty():
            i = queue.get_nowait()
            body = json.dumps(
                {
                    "key": f"{tag}-{i}",
                    "status": "firing",
                    "name": "DiskFull",
                    "severity": "warning",
                    "summary": "disk 91% full on db-1",
                    "labels": {"service": "db", "instance": f"db-{i % 7}"},
                }
            )
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                failures += resp.status != 200

    connector = aiohttp.TCPConnector(limit=conns)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(conns)))
        elapsed = time.perf_counter() - start
    if failures:
        raise SystemExit(f"{failures} requests failed")
    return requests / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--conns", default="1,8,32")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="alertput") as tmp:
        gw, gw_port = daemon(Path(tmp))
        bare_proc, bare_port = bare()
        try:
            for conns in (int(c) for c in args.conns.split(",")):
                gateway_rates, bare_rates = [], []
                for run in range(args.repeat):
                    tag = f"c{conns}r{run}"
                    gateway_rates.append(asyncio.run(load(gw_port, args.requests, conns, tag)))
                    bare_rates.append(asyncio.run(load(bare_port, args.requests, conns, tag)))
                g, b = statistics.median(gateway_rates), statistics.median(bare_rates)
                results.append(
                    {
                        "conns": conns,
                        "gateway_per_s": round(g),
                        "bare_aiohttp_per_s": round(b),
                        "ratio": round(g / b, 2),
                    }
                )
        finally:
            for proc in (gw, bare_proc):
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
