"""Time from exec to READY=1: how long `chatops-gateway run` takes to tell systemd it is up.

Each run starts the daemon as a child process with `$NOTIFY_SOCKET` pointing at a datagram
socket this script binds (as systemd does for Type=notify), on a fresh state folder (the
first run of a fresh database includes creating its schema) or on the folder of the
previous run (`--reuse-state`, a restart), and measures exec → READY=1. Each run starts
once everything the previous one started (its parse child, the bank-holiday helper) has
exited. It also reads the
daemon's own CPU time (user + system, from /proc) at READY=1, which a loaded machine
inflates far less than the wall-clock figure, and in the same run measures two baselines:
a bare `python -c pass` (the interpreter's own start) and `python -c "import
gateway.cli.commands"` (importing the daemon's code), so the figure can be read as a ratio
on a noisy machine. Prints p50, min and max per phase, or JSON with --json.

`--config FILE` starts the daemon with that configuration instead of the minimal one (its
`[state] dir`, `[smtp] port` and `[http] port` are replaced, so that each run gets its own
state and free ports; secrets it names must exist). `--importtime` also runs the daemon
once under `python -X importtime` and lists what was imported before READY=1, largest
first (the figures include importtime's own overhead).

    .venv/bin/python bench/ready_time.py              # 10 runs
    .venv/bin/python bench/ready_time.py --runs 30 --json
    .venv/bin/python bench/ready_time.py --runs 1 --importtime
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 0.4
_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ})
    return time.perf_counter() - start


def _config_text(base: str | None, state: Path) -> str:
    """The minimal configuration, or `base` with its own state folder and free ports."""
    ours = (
        f'[state]\ndir = "{state}"\n[smtp]\nport = {_free_port()}\n'
        '[http]\nport = 0\n[log]\nformat = "json"\nlevel = "warning"\n'
    )
    if base is None:
        return ours
    text = re.sub(r'(?m)^dir = ".*"$', f'dir = "{state}"', base)
    text = re.sub(r"(?m)^port = 2525$", f"port = {_free_port()}", text)
    return re.sub(r"(?m)^port = 9725$", "port = 0", text)


def _cpu_s(pid: int) -> float:
    """User + system CPU time the process has used so far (its children not included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _until_gone(group: int, timeout_s: float = 10.0) -> None:
    """Wait until every process the daemon started (its parse child, the bank-holiday
    helper) has exited too, so that no run starts while the last one's children still use
    the CPU."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)


def _ready_once(
    folder: Path,
    state: Path,
    sock: socket.socket,
    address: str,
    base: str | None = None,
    importtime: Path | None = None,
    cpu: list[float] | None = None,
    config_dir: Path | None = None,
) -> float:
    # next to the given configuration, whose secret files are found beside it
    config = (folder if config_dir is None else config_dir) / f"bench-{os.getpid()}.toml"
    config.write_text(_config_text(base, state))
    flags = ["-X", "importtime"] if importtime is not None else []
    stderr = importtime.open("wb") if importtime is not None else subprocess.DEVNULL
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, *flags, "-m", "gateway", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        env={**os.environ, "NOTIFY_SOCKET": address},
        start_new_session=True,  # its own process group: see _until_gone
    )
    try:
        sock.settimeout(0.5)
        deadline = time.monotonic() + 60
        while True:
            try:
                data = sock.recv(4096)
            except TimeoutError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"no READY=1 from the daemon ({config})") from None
                continue
            if b"READY=1" in data.split(b"\n"):
                elapsed = time.perf_counter() - start
                if cpu is not None:
                    cpu.append(_cpu_s(proc.pid))
                if importtime is not None:  # what was written so far came before READY
                    (folder / "before-ready").write_text(str(importtime.stat().st_size))
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        _until_gone(proc.pid)
        if importtime is not None and not isinstance(stderr, int):
            stderr.close()
        config.unlink()
    return elapsed


def _imports_before_ready(folder: Path, base: str | None, config_dir: Path | None) -> None:
    """One run under -X importtime: the top-level imports before READY=1, largest first."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = str(folder / "notify-importtime")
    sock.bind(address)
    log = folder / "importtime.txt"
    try:
        ready = _ready_once(
            folder, folder / "state-importtime", sock, address, base, log, config_dir=config_dir
        )
    finally:
        sock.close()
    size = int((folder / "before-ready").read_text())
    text = log.read_bytes()[:size].decode(errors="replace")
    rows = [m.groups() for m in map(_IMPORT_LINE.match, text.splitlines()) if m]
    total = sum(int(own) for own, _, _, _ in rows)
    by_package: dict[str, int] = {}
    for own, _, _, name in rows:
        top = name.split(".")[0]
        by_package[top] = by_package.get(top, 0) + int(own)
    print(
        f"under -X importtime: READY after {ready * 1000:.0f} ms, {total / 1000:.0f} ms importing"
    )
    print("  by top-level package (own time, ms):")
    for name, own in sorted(by_package.items(), key=lambda kv: -kv[1])[:15]:
        print(f"    {own / 1000:7.1f}  {name}")
    print("  modules (own time, ms):")
    for own, _, _, name in sorted(rows, key=lambda row: -int(row[0]))[:25]:
        print(f"    {int(own) / 1000:7.1f}  {name}")


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(values) * 1000, 1),
        "min_ms": round(min(values) * 1000, 1),
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
    parser.add_argument("--config", type=Path, help="start with this configuration")
    parser.add_argument("--importtime", action="store_true", help="list the imports before READY=1")
    args = parser.parse_args()
    base = args.config.read_text() if args.config else None
    config_dir = args.config.resolve().parent if args.config else None
    folder = Path(tempfile.mkdtemp(prefix="rdy", dir="/tmp"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = str(folder / "notify")
    sock.bind(address)
    python, imports, ready, cpu = [], [], [], []
    try:
        for i in range(args.runs):
            python.append(_timed([sys.executable, "-c", "pass"]))
            imports.append(_timed([sys.executable, "-c", "import gateway.cli.commands"]))
            state = folder / ("state" if args.reuse_state else f"state-{i}")
            ready.append(
                _ready_once(folder, state, sock, address, base, cpu=cpu, config_dir=config_dir)
            )
        if args.importtime:
            _imports_before_ready(folder, base, config_dir)
    finally:
        sock.close()
        shutil.rmtree(folder, ignore_errors=True)
    if not ready:  # --runs 0: the import listing only
        return
    result = {
        "runs": args.runs,
        "fresh_state": not args.reuse_state,
        "python_start": _stats(python),
        "import_gateway": _stats(imports),
        "exec_to_ready": _stats(ready),
        "cpu_to_ready": _stats(cpu),
        "ready_over_python_p50": round(statistics.median(ready) / statistics.median(python), 1),
        "target_ms": TARGET_S * 1000,
        "within_target": statistics.median(ready) <= TARGET_S,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.runs} runs, {'fresh' if not args.reuse_state else 'reused'} state")
    for name in ("python_start", "import_gateway", "exec_to_ready", "cpu_to_ready"):
        s = result[name]
        assert isinstance(s, dict)
        print(
            f"  {name:<16} p50 {s['p50_ms']:>7.1f} ms   min {s['min_ms']:>7.1f} ms"
            f"   max {s['max_ms']:>7.1f} ms"
        )
    verdict = "met" if result["within_target"] else "MISSED"
    print(
        f"  READY p50 = {result['ready_over_python_p50']}x a bare interpreter start; "
        f"target p50 <= {TARGET_S * 1000:.0f} ms: {verdict}"
    )


if __name__ == "__main__":
    main()
