"""Durable SMTP intake throughput, compared with a bare aiosmtpd sink measured in the same run.

What it measures: messages per second that Postfix's `smtp-source` load generator gets
accepted (250 after DATA) by

* a bare aiosmtpd sink — aiosmtpd on its own event loop, `handle_RCPT` accepting every
  recipient and `handle_DATA` answering "250 OK" without storing anything: the cost of
  aiosmtpd itself; and
* the gateway daemon (`python -m gateway run`) with a fresh state directory — every 250
  is given only after the message is committed to the SQLite inbox (group commit), while
  the inbox and outbox workers run as they do in production.

The figure of interest is the ratio gateway / sink at the same connection count; the
targets (issue 22) are a ratio of at least 0.9 at 32 connections and 0.8 at 8. Absolute
figures vary from machine to machine and run to run: compare ratios measured in one run.
On a machine shared with other work, read the ratio of each round (a sink run and a daemon
run back to back; the median and the spread over the rounds are printed), the load average,
and the CPU time each server spent per message: the last (on-CPU time of the server and
its children, from /proc/PID/task/*/schedstat, over the timed load) hardly moves with the
machine's load, where msg/s does. Each run's line on stderr splits that time into the
server's event loop (its main thread), its other threads (the daemon's store thread and
executors) and its children (the daemon's parse child).

Method: each server runs in its own process on a free 127.0.0.1 port. When `taskset` exists
and at least two CPUs are available, the servers are pinned to CPU 0 and smtp-source to
CPU 1. For each connection count the sink and the daemon are run `--repeat` times,
alternating which goes first, each on a fresh process; the wall time of the smtp-source
subprocess is measured with `time.perf_counter()` and the median of the repeats reported.
Before the timed load each server gets one warm-up message (not counted), and the daemon
is given time to process it, so start-up work (its parse process loading the rulebook) is
not measured as intake: time to start is a benchmark of its own (bench/ready_time.py).
Accepted counts are checked after each run (the sink reports how many messages it answered
250; for the daemon the rows in its `inbox` table are counted) and a run in which fewer
messages were accepted than sent is reported as a failure.

Run from the repository root, with the project's virtualenv:

    .venv/bin/python bench/smtp_throughput.py                      # 2000 x 2 KB, 1/8/32 conns
    .venv/bin/python bench/smtp_throughput.py --conns 32 --repeat 5 --json
    .venv/bin/python bench/smtp_throughput.py --backend both   # + the daemon on PostgreSQL

With `--backend postgresql` (or `both`: SQLite and PostgreSQL in the same run) the daemon
keeps its state in a throwaway PostgreSQL cluster the script starts (Debian `postgresql`;
as root, the cluster runs as the `postgres` user), a fresh database per run.

Needs `smtp-source` from the Debian `postfix` package (installed without configuring
Postfix). The script is also the sink's program: `smtp_throughput.py --sink PORT` serves
until SIGTERM and then prints its count. Exit codes: 0 measured; 1 a run failed or lost
messages; 2 usage error or smtp-source missing; 130 interrupted (everything started is
stopped and the temporary folders are removed first).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import shutil
import signal
import smtplib
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.smtp import SMTP

REPO = Path(__file__).resolve().parent.parent
SENDER = "alice@tenant.example"
WARMUP_SENDER = "warm-up@tenant.example"
WARMUP_MESSAGE = (
    b"From: warm-up@tenant.example\r\nTo: emergency@localhost\r\n"
    b"Subject: benchmark warm-up\r\n\r\nNot counted.\r\n"
)
RECIPIENT = "emergency@localhost"
TARGETS = {32: 0.9, 8: 0.8}  # connections -> least ratio gateway / bare aiosmtpd
READY_TIMEOUT_S = 15.0
# The daemon drains its inbox and outbox on SIGTERM (up to 10 s each by default).
STOP_TIMEOUT_S = 60.0
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
INSTALL_HINT = """\
smtp-source (Postfix's SMTP load generator) is not installed. Install the postfix package
without configuring or starting Postfix:

    echo "postfix postfix/main_mailer_type select No configuration" | sudo debconf-set-selections
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfix
"""

Server = Literal["sink", "gateway", "postgresql"]  # "gateway": the daemon on SQLite


# -- the bare sink (runs in its own process: `smtp_throughput.py --sink PORT`) -----------------
class _SinkHandler:
    """Accepts every recipient and every message without keeping anything."""

    def __init__(self) -> None:
        self.accepted = 0

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.accepted += 1
        return "250 OK"


async def _serve_sink(port: int) -> int:
    handler = _SinkHandler()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="localhost"), "127.0.0.1", port
    )
    async with server:
        await stop.wait()
    return handler.accepted


def run_sink(port: int) -> None:
    """Serve the sink until SIGTERM, then print how many messages it accepted."""
    accepted = asyncio.run(_serve_sink(port))
    print(json.dumps({"accepted": accepted}), flush=True)


# -- processes --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pinning:
    """CPU affinity prefixes for the servers and for the load generator."""

    server: tuple[str, ...]
    load: tuple[str, ...]
    description: str


def choose_pinning(enabled: bool) -> Pinning:
    """Servers on CPU 0, smtp-source on CPU 1, when taskset and two CPUs are available."""
    taskset = shutil.which("taskset")
    cpus = len(os.sched_getaffinity(0))
    if not enabled:
        return Pinning((), (), "none (--no-pin)")
    if taskset is None:
        return Pinning((), (), "none (taskset not found)")
    if cpus < 2:
        return Pinning((), (), f"none (only {cpus} CPU available)")
    return Pinning(
        (taskset, "-c", "0"),
        (taskset, "-c", "1"),
        "servers on CPU 0, smtp-source on CPU 1 (taskset -c)",
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StartError(RuntimeError):
    """A server did not come up; the message includes the end of its stderr."""


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, indented, for error reports."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "    (no output)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:]) or "    (no output)"


class ServerProcess:
    """One server in its own session, its output in files, always stopped by `close`."""

    def __init__(self, argv: Sequence[str], workdir: Path, name: str) -> None:
        self.name = name
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            # A session of its own: Ctrl-C reaches this script only, which then stops it.
            self.proc = subprocess.Popen(
                list(argv),
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    def wait_ready(self, port: int, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Return once the port accepts a connection; raise StartError otherwise."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StartError(
                    f"{self.name} exited with status {self.proc.returncode}:\n"
                    f"{tail(self.stderr_path)}"
                )
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise StartError(
            f"{self.name} did not accept connections on port {port} within "
            f"{timeout_s:.0f} s:\n{tail(self.stderr_path)}"
        )

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def close(self) -> None:
        """Kill without grace if still running (used on errors and Ctrl-C)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@contextmanager
def started(argv: Sequence[str], workdir: Path, name: str, port: int) -> Iterator[ServerProcess]:
    """A running server, ready on `port`; killed on the way out whatever happens."""
    server = ServerProcess(argv, workdir, name)
    try:
        server.wait_ready(port)
        yield server
    finally:
        server.close()


# -- one measured run ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Load:
    """What smtp-source sends."""

    smtp_source: str
    messages: int
    size: int
    pinning: Pinning

    def timeout_s(self) -> float:
        """Generous: two minutes plus 100 ms per message (the daemon takes 1-20 ms each)."""
        return 120.0 + 0.1 * self.messages


@dataclass
class Run:
    """One smtp-source run against one server."""

    server: Server
    conns: int
    sent: int
    accepted: int | None = None
    seconds: float | None = None
    msg_per_s: float | None = None
    cpu_us_per_msg: float | None = None  # the server and its children, on CPU, per message
    cpu_parts_us: dict[str, float] = field(default_factory=dict)  # loop / threads / children
    runqueue_share: float | None = None  # seconds its threads waited for a CPU, summed, / wall
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every message sent was accepted, and the figure is usable."""
        return not self.problems and self.msg_per_s is not None


def tree_schedstat(pid: int, parts: dict[str, float] | None = None) -> tuple[float, float]:
    """Seconds on a CPU and seconds waiting for one, summed over every thread of a process
    and of its descendants (/proc/PID/task/TID/schedstat); zeros where /proc lacks them.
    `parts` gets the seconds on a CPU of the process's main thread (its event loop), of its
    other threads, and of its descendants (the daemon's parse child)."""
    on_cpu = waiting = 0.0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            folder = f"/proc/{current}/task/{task}"
            try:
                run_ns, wait_ns, _ = Path(folder, "schedstat").read_text().split()
                pids += [int(child) for child in Path(folder, "children").read_text().split()]
            except (OSError, ValueError):
                continue
            on_cpu += int(run_ns) / 1e9
            waiting += int(wait_ns) / 1e9
            if parts is not None:
                part = "children" if current != pid else "loop" if int(task) == pid else "threads"
                parts[part] = parts.get(part, 0.0) + int(run_ns) / 1e9
    return on_cpu, waiting


def send_load(load: Load, conns: int, port: int, run: Run, server_pid: int | None = None) -> None:
    """Time smtp-source against the port (and the server's CPU time meanwhile); record
    failures in `run.problems`."""
    argv = [
        *load.pinning.load,
        load.smtp_source,
        "-d",
        "-s",
        str(conns),
        "-m",
        str(load.messages),
        "-l",
        str(load.size),
        "-f",
        SENDER,
        "-t",
        RECIPIENT,
        f"127.0.0.1:{port}",
    ]
    parts_before: dict[str, float] = {}
    before = tree_schedstat(server_pid, parts_before) if server_pid else (0.0, 0.0)
    started_at = time.perf_counter()
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=load.timeout_s()
        )
    except subprocess.TimeoutExpired:
        run.problems.append(f"smtp-source did not finish within {load.timeout_s():.0f} s")
        return
    run.seconds = time.perf_counter() - started_at
    if server_pid:
        parts_after: dict[str, float] = {}
        after = tree_schedstat(server_pid, parts_after)
        run.cpu_us_per_msg = (after[0] - before[0]) / load.messages * 1e6
        run.cpu_parts_us = {
            part: (seconds - parts_before.get(part, 0.0)) / load.messages * 1e6
            for part, seconds in parts_after.items()
        }
        run.runqueue_share = (after[1] - before[1]) / run.seconds
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        run.problems.append(f"smtp-source exited with status {done.returncode}: {message[0]}")


def finish(run: Run) -> Run:
    """Compute msg/s from accepted messages, and flag a run that lost any."""
    if run.accepted is None:
        run.problems.append("accepted count unknown")
    elif run.accepted < run.sent:
        run.problems.append(f"only {run.accepted} of {run.sent} messages accepted")
    if run.seconds and run.accepted:
        run.msg_per_s = run.accepted / run.seconds
    return run


def sink_run(load: Load, conns: int, workdir: Path) -> Run:
    """One run against a fresh bare aiosmtpd sink."""
    port = free_port()
    run = Run("sink", conns, load.messages)
    argv = [
        *load.pinning.server,
        sys.executable,
        str(Path(__file__).resolve()),
        "--sink",
        str(port),
    ]
    with started(argv, workdir, "sink", port) as server:
        warm_up(port)
        send_load(load, conns, port, run, server.proc.pid)
        status = server.stop()
    if status != 0:
        run.problems.append(f"sink exited with status {status}:\n{tail(server.stderr_path)}")
    try:
        run.accepted = int(json.loads(server.stdout_path.read_text())["accepted"]) - 1
    except (OSError, ValueError, KeyError):
        run.problems.append("the sink did not report its count")
    return finish(run)


def gateway_config(workdir: Path, port: int, dsn: str | None = None) -> Path:
    """A daemon configuration with its own empty state directory (and PostgreSQL database)."""
    path = workdir / "gateway.toml"
    backend = "" if dsn is None else f'backend = "postgresql"\n[state.postgresql]\ndsn = "{dsn}"\n'
    path.write_text(
        f'[state]\ndir = "{workdir / "state"}"\n{backend}\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {port}\n\n'
        '[log]\nlevel = "warning"\nformat = "json"\n',
        encoding="utf-8",
    )
    return path


def count_inbox(database: Path, *, pending: bool = False) -> int:
    """The load's messages in the daemon's inbox table, or (`pending`) every message not
    yet processed."""
    query, args = (
        ("SELECT count(*) FROM inbox WHERE state = 'pending'", ())
        if pending
        else ("SELECT count(*) FROM inbox WHERE mail_from = ?", (SENDER,))
    )
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        (count,) = conn.execute(query, args).fetchone()
    finally:
        conn.close()
    return int(count)


def warm_up(
    port: int, database: Path | None = None, pending: Callable[[], int] | None = None
) -> None:
    """One message (not counted) before the timed run, so both servers are measured warm:
    imports done and, for the daemon, the message parsed and triaged (its parse process
    loaded). Raises StartError when that does not happen in time."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=READY_TIMEOUT_S) as client:
            client.sendmail(WARMUP_SENDER, [RECIPIENT], WARMUP_MESSAGE)
    except (OSError, smtplib.SMTPException) as exc:
        raise StartError(f"the warm-up message was not accepted: {exc}") from exc
    deadline = time.monotonic() + READY_TIMEOUT_S
    if database is not None:
        pending = partial(count_inbox, database, pending=True)
    while pending is not None and pending():
        if time.monotonic() > deadline:
            raise StartError("the warm-up message was not processed in time")
        time.sleep(0.05)


def postgres_run(load: Load, conns: int, workdir: Path, cluster: Any) -> Run:
    """One run against the daemon on PostgreSQL, with a fresh database."""
    import psycopg  # noqa: PLC0415  (only with --backend postgresql)

    port = free_port()
    run = Run("postgresql", conns, load.messages)
    dsn = cluster.new_database()
    config = gateway_config(workdir, port, dsn)

    def count(pending: bool = False) -> int:
        query = (
            "SELECT count(*) FROM inbox WHERE state = 'pending'"
            if pending
            else f"SELECT count(*) FROM inbox WHERE mail_from = '{SENDER}'"
        )
        with psycopg.connect(dsn) as conn:
            row = conn.execute(query.encode()).fetchone()
        return int(row[0]) if row else 0

    argv = [*load.pinning.server, sys.executable, "-m", "gateway", "run", "--config", str(config)]
    with started(argv, workdir, "gateway", port) as server:
        warm_up(port, pending=lambda: count(pending=True))
        send_load(load, conns, port, run, server.proc.pid)
        status = server.stop()
    if status != 0:
        run.problems.append(f"gateway exited with status {status}:\n{tail(server.stderr_path)}")
    try:
        run.accepted = count()
    except psycopg.Error as exc:
        run.problems.append(f"cannot count the inbox: {exc}")
    return finish(run)


def gateway_run(load: Load, conns: int, workdir: Path) -> Run:
    """One run against the daemon, started on a fresh state directory."""
    port = free_port()
    run = Run("gateway", conns, load.messages)
    config = gateway_config(workdir, port)
    argv = [*load.pinning.server, sys.executable, "-m", "gateway", "run", "--config", str(config)]
    with started(argv, workdir, "gateway", port) as server:
        warm_up(port, workdir / "state" / "gateway.sqlite3")
        send_load(load, conns, port, run, server.proc.pid)
        status = server.stop()
    if status != 0:
        run.problems.append(f"gateway exited with status {status}:\n{tail(server.stderr_path)}")
    try:
        run.accepted = count_inbox(workdir / "state" / "gateway.sqlite3")
    except sqlite3.Error as exc:
        run.problems.append(f"cannot count the inbox: {exc}")
    return finish(run)


# -- the whole benchmark ------------------------------------------------------------------------
@dataclass
class Row:
    """Medians for one connection count."""

    conns: int
    sink_msg_per_s: float | None
    gateway_msg_per_s: float | None
    ratio: float | None
    runs: list[Run]
    postgresql_msg_per_s: float | None = None
    postgresql_ratio: float | None = None
    round_ratios: list[float] = field(default_factory=list)  # gateway / sink, each round
    sink_cpu_us: float | None = None  # median CPU time per message
    gateway_cpu_us: float | None = None
    load_average: tuple[float, float] = (0.0, 0.0)  # 1-minute load at the start and the end


def median_cpu(runs: Sequence[Run], server: Server) -> float | None:
    """The median CPU µs per message of the successful runs against `server`."""
    values = [r.cpu_us_per_msg for r in runs if r.server == server and r.ok and r.cpu_us_per_msg]
    return statistics.median(values) if values else None


def median_rate(runs: Sequence[Run], server: Server) -> float | None:
    """The median msg/s of the successful runs against `server`."""
    rates = [r.msg_per_s for r in runs if r.server == server and r.ok and r.msg_per_s]
    return statistics.median(rates) if rates else None


def measure(
    load: Load,
    conns: int,
    repeat: int,
    root: Path,
    servers: Sequence[Server] = ("sink", "gateway"),
    cluster: Any = None,
) -> Row:
    """`repeat` rounds of the servers, rotating which goes first."""
    runs: list[Run] = []
    load_at_start = os.getloadavg()[0]
    round_ratios: list[float] = []
    for index in range(repeat):
        this_round: dict[str, Run] = {}
        shift = index % len(servers)
        for server in [*servers[shift:], *servers[:shift]]:
            workdir = Path(tempfile.mkdtemp(prefix=f"{server}-{conns}-", dir=root))
            try:
                if server == "postgresql":
                    run = postgres_run(load, conns, workdir, cluster)
                else:
                    run = (sink_run if server == "sink" else gateway_run)(load, conns, workdir)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            progress(run, index + 1, repeat)
            runs.append(run)
            this_round[run.server] = run
        pair = this_round.get("sink"), this_round.get("gateway")
        if pair[0] and pair[1] and pair[0].ok and pair[1].ok:
            round_ratios.append((pair[1].msg_per_s or 0) / (pair[0].msg_per_s or 1))
    sink, gateway = median_rate(runs, "sink"), median_rate(runs, "gateway")
    pg = median_rate(runs, "postgresql")
    ratio = gateway / sink if sink and gateway else None
    return Row(
        conns,
        sink,
        gateway,
        ratio,
        runs,
        pg,
        pg / sink if sink and pg else None,
        round_ratios,
        median_cpu(runs, "sink"),
        median_cpu(runs, "gateway"),
        (load_at_start, os.getloadavg()[0]),
    )


def progress(run: Run, index: int, repeat: int) -> None:
    """One line per run on stderr (stdout is kept for the report)."""
    figures = (
        f"{run.accepted}/{run.sent} accepted in {run.seconds:.2f} s = {run.msg_per_s:,.0f} msg/s"
        + (
            f", {run.cpu_us_per_msg:.0f} µs CPU/msg ("
            + ", ".join(f"{k} {v:.0f}" for k, v in sorted(run.cpu_parts_us.items()))
            + f"), run-queue wait {run.runqueue_share:.0%}"
            if run.cpu_us_per_msg is not None and run.runqueue_share is not None
            else ""
        )
        if run.ok and run.seconds
        else "FAILED"
    )
    print(
        f"  {run.conns:>2} conns, run {index}/{repeat}, {run.server:<7}: {figures}",
        file=sys.stderr,
        flush=True,
    )
    for problem in run.problems:
        print(f"    !! {problem}", file=sys.stderr, flush=True)


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    try:
        aiosmtpd = metadata.version("aiosmtpd")
    except metadata.PackageNotFoundError:
        aiosmtpd = "not installed"
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "aiosmtpd": aiosmtpd,
        "os": f"{platform.system()} {platform.release()}",
    }


def machine_line(info: dict[str, Any]) -> str:
    """The machine in one line."""
    return (
        f"{info['nproc']} CPUs, {info['cpu']}, Python {info['python']}, "
        f"aiosmtpd {info['aiosmtpd']}, {info['os']}"
    )


def fmt(value: float | None, spec: str) -> str:
    """A figure, or 'failed' when there is none."""
    return "failed" if value is None else format(value, spec)


def judged_ratio(row: Row) -> float | None:
    """The median of the rounds' ratios (each round back to back), else the medians' ratio."""
    return statistics.median(row.round_ratios) if row.round_ratios else row.ratio


def target(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """The targets whose connection count was measured, judged on `judged_ratio`."""
    goals = []
    for row in rows:
        if row.conns in TARGETS:
            ratio = judged_ratio(row)
            goals.append(
                {
                    "conns": row.conns,
                    "min_ratio": TARGETS[row.conns],
                    "ratio": ratio,
                    "met": ratio is not None and ratio >= TARGETS[row.conns],
                }
            )
    return goals


def spread(row: Row) -> str:
    """'0.91 (0.80-1.02 over 5 rounds)' for the rounds' ratios."""
    if not row.round_ratios:
        return "failed"
    low, high = min(row.round_ratios), max(row.round_ratios)
    return (
        f"{statistics.median(row.round_ratios):.2f} "
        f"({low:.2f}-{high:.2f} over {len(row.round_ratios)} rounds)"
    )


def failures(rows: Sequence[Row]) -> list[str]:
    """Every problem of every run, one line each."""
    return [
        f"{r.server} at {r.conns} conns: {p}" for row in rows for r in row.runs for p in r.problems
    ]


def accepted_line(runs: Sequence[Run], server: Server) -> str:
    """'6000/6000' over the runs against one server."""
    mine = [r for r in runs if r.server == server]
    return f"{sum(r.accepted or 0 for r in mine)}/{sum(r.sent for r in mine)}"


def report_text(rows: Sequence[Row], header: dict[str, Any]) -> str:
    """The human-readable report."""
    lines = [
        f"command:  {header['command']}",
        f"machine:  {machine_line(header['machine'])}",
        f"pinning:  {header['pinning']}",
        f"load:     smtp-source, {header['messages']} messages of {header['size']} bytes, "
        f"sessions reused (-d); median of {header['repeat']} runs each",
        "",
        "| conns | bare aiosmtpd msg/s | gateway msg/s | ratio |"
        + (" gateway on PostgreSQL msg/s | ratio |" if header.get("postgresql") else ""),
        "|---:|---:|---:|---:|" + ("---:|---:|" if header.get("postgresql") else ""),
    ]
    lines += [
        f"| {r.conns} | {fmt(r.sink_msg_per_s, ',.0f')} | "
        f"{fmt(r.gateway_msg_per_s, ',.0f')} | {fmt(r.ratio, '.2f')} |"
        + (
            f" {fmt(r.postgresql_msg_per_s, ',.0f')} | {fmt(r.postgresql_ratio, '.2f')} |"
            if header.get("postgresql")
            else ""
        )
        for r in rows
    ]
    lines += ["", "accepted / sent, all runs:"]
    lines += [
        f"  {r.conns:>3} conns: sink {accepted_line(r.runs, 'sink')}, "
        f"gateway {accepted_line(r.runs, 'gateway')}"
        + (
            f", on PostgreSQL {accepted_line(r.runs, 'postgresql')}"
            if header.get("postgresql")
            else ""
        )
        for r in rows
    ]
    lines += [
        "",
        "| conns | ratio per round, median (spread) | CPU µs/msg sink | CPU µs/msg gateway "
        "| load average start / end |",
        "|---:|---|---:|---:|---|",
    ]
    lines += [
        f"| {r.conns} | {spread(r)} | {fmt(r.sink_cpu_us, '.0f')} | "
        f"{fmt(r.gateway_cpu_us, '.0f')} | {r.load_average[0]:.1f} / {r.load_average[1]:.1f} |"
        for r in rows
    ]
    for goal in header["target"]:
        verdict = "MET" if goal["met"] else "NOT MET"
        lines += [
            f"target:   gateway >= {goal['min_ratio']:.2f}x bare aiosmtpd at "
            f"{goal['conns']} connections (median of the rounds): {verdict} "
            f"({fmt(goal['ratio'], '.2f')}x)",
        ]
    problems = failures(rows)
    if problems:
        lines += ["", "!! RUNS FAILED OR LOST MESSAGES — their figures are excluded:"]
        lines += [f"!!   {p}" for p in problems]
    else:
        lines += ["", "accepted: every message sent was accepted in every run"]
    return "\n".join(lines)


def report_json(rows: Sequence[Row], header: dict[str, Any]) -> str:
    """The machine-readable report."""
    data = {
        **header,
        "results": [
            {
                **{k: v for k, v in asdict(row).items() if k != "runs"},
                "runs": [{**asdict(run), "ok": run.ok} for run in row.runs],
            }
            for row in rows
        ],
        "ok": not failures(rows),
    }
    return json.dumps(data, indent=2)


# -- command line -------------------------------------------------------------------------------
def find_smtp_source() -> str | None:
    """smtp-source on PATH or in the sbin folders a non-root PATH often lacks."""
    return shutil.which("smtp-source") or shutil.which(
        "smtp-source", path="/usr/sbin:/usr/local/sbin:/sbin"
    )


def connection_counts(text: str) -> list[int]:
    """'1,8,32' -> [1, 8, 32]."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("connection counts must be positive")
    return counts


def positive(text: str) -> int:
    """A positive integer argument."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--conns",
        type=connection_counts,
        default=[1, 8, 32],
        help="comma-separated parallel SMTP sessions (default: 1,8,32)",
    )
    p.add_argument("--messages", type=positive, default=2000, help="messages per run")
    p.add_argument("--size", type=positive, default=2048, help="message payload in bytes")
    p.add_argument(
        "--repeat",
        type=positive,
        default=3,
        help="runs per server and connection count; the median is reported",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes with taskset")
    p.add_argument(
        "--backend",
        choices=["sqlite", "postgresql", "both"],
        default="sqlite",
        help="the daemon's store: SQLite (default), PostgreSQL, or both in one run",
    )
    p.add_argument("--sink", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the report."""
    args = parse_args(argv)
    if args.sink is not None:
        run_sink(args.sink)
        return EXIT_OK
    smtp_source = find_smtp_source()
    if smtp_source is None:
        print(INSTALL_HINT, file=sys.stderr)
        return EXIT_USAGE
    load = Load(smtp_source, args.messages, args.size, choose_pinning(not args.no_pin))
    header: dict[str, Any] = {
        "command": shlex.join(sys.orig_argv),
        "machine": machine(),
        "pinning": load.pinning.description,
        "messages": args.messages,
        "size": args.size,
        "repeat": args.repeat,
    }
    servers: list[Server] = ["sink"]
    servers += ["gateway"] if args.backend in ("sqlite", "both") else []
    servers += ["postgresql"] if args.backend in ("postgresql", "both") else []
    header["postgresql"] = "postgresql" in servers
    print(f"pinning: {load.pinning.description}", file=sys.stderr)
    with (
        tempfile.TemporaryDirectory(prefix="smtp-bench-") as root,
        _cluster(header["postgresql"]) as cluster,
    ):
        try:
            rows = [
                measure(load, conns, args.repeat, Path(root), servers, cluster)
                for conns in args.conns
            ]
        except StartError as exc:
            print(f"cannot start a server: {exc}", file=sys.stderr)
            return EXIT_FAILED
    header["target"] = target(rows)
    print(report_json(rows, header) if args.json else report_text(rows, header))
    return EXIT_FAILED if failures(rows) else EXIT_OK


@contextmanager
def _cluster(wanted: bool) -> Iterator[Any]:
    """A throwaway PostgreSQL cluster (tests/peers/postgres.py) when the run needs one."""
    if not wanted:
        yield None
        return
    sys.path.insert(0, str(REPO))
    from tests.peers.postgres import running_server  # noqa: PLC0415

    with running_server() as server:
        yield server


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupted)  # a kill runs the same cleanup as Ctrl-C
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the servers and smtp-source were stopped on the way out
        print("interrupted", file=sys.stderr)
        sys.exit(130)
