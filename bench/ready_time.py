"""Time from exec to READY=1: how long `chatops-gateway run` takes to tell systemd it is up.

Each run starts the daemon as a child process with `$NOTIFY_SOCKET` pointing at a datagram
socket this script binds (as systemd does for Type=notify), on a fresh state folder (the
first run of a fresh database includes creating its schema) or on the folder of the
previous run (`--reuse-state`, a restart), and measures exec → READY=1. In the same run it
measures two baselines: a bare `python -c pass` (the interpreter's own start) and
`python -c "import gateway.cli.commands"` (importing the daemon's code), so the figure can be read
as a ratio on a noisy machine. Prints p50/max per phase, or JSON with --json.

    .venv/bin/python bench/ready_time.py              # 10 runs
    .venv/bin/python bench/ready_time.py --runs 30 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 1.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ})
    return time.perf_counter() - start


def _ready_once(folder: Path, state: Path, sock: socket.socket, address: str) -> float:
    config = folder / "gateway.toml"
    config.write_text(
        f'[state]\ndir = "{state}"\n[smtp]\nport = {_free_port()}\n'
        '[http]\nport = 0\n[log]\nformat = "json"\nlevel = "warning"\n'
    )
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "NOTIFY_SOCKET": address},
    )
    try:
        sock.settimeout(60)
        while True:
            data = sock.recv(4096)
            if b"READY=1" in data.split(b"\n"):
                elapsed = time.perf_counter() - start
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return elapsed


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(values) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument(
        "--reuse-state",
        action="store_true",
        help="restart on the previous run's state (default: a fresh one each)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="rdy", dir="/tmp"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = str(folder / "notify")
    sock.bind(address)
    python, imports, ready = [], [], []
    try:
        for i in range(args.runs):
            python.append(_timed([sys.executable, "-c", "pass"]))
            imports.append(_timed([sys.executable, "-c", "import gateway.cli.commands"]))
            state = folder / ("state" if args.reuse_state else f"state-{i}")
            ready.append(_ready_once(folder, state, sock, address))
    finally:
        sock.close()
        shutil.rmtree(folder, ignore_errors=True)
    result = {
        "runs": args.runs,
        "fresh_state": not args.reuse_state,
        "python_start": _stats(python),
        "import_gateway": _stats(imports),
        "exec_to_ready": _stats(ready),
        "ready_over_python_p50": round(statistics.median(ready) / statistics.median(python), 1),
        "target_ms": TARGET_S * 1000,
        "within_target": max(ready) <= TARGET_S,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.runs} runs, {'fresh' if not args.reuse_state else 'reused'} state")
    for name in ("python_start", "import_gateway", "exec_to_ready"):
        s = result[name]
        assert isinstance(s, dict)
        print(f"  {name:<16} p50 {s['p50_ms']:>7.1f} ms   max {s['max_ms']:>7.1f} ms")
    verdict = "met" if result["within_target"] else "MISSED"
    print(
        f"  READY p50 = {result['ready_over_python_p50']}x a bare interpreter start; "
        f"target max <= {TARGET_S * 1000:.0f} ms: {verdict}"
    )


if __name__ == "__main__":
    main()
