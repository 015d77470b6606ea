"""Resource attacks on a running daemon over loopback: does the event loop keep turning, is
memory bounded, does a P1 still page?

What it measures, for each attack: the longest gap between the daemon's watchdog pings
(WATCHDOG=1 on a notify socket this script binds, `WATCHDOG_USEC` = 2 s, so a ping is due
every second; systemd kills the service after `WatchdogSec=30s` without one) and the
slowest `/healthz` answer (polled every 250 ms on a new connection) while the attack runs,
plus what the attack is after:

* `noop`      8 sessions x `--noops` pipelined NOOPs; also how long an unrelated mail took
              and how many bytes of log the daemon wrote (logs at info for this attack).
* `keepalive` 100 sessions sending a NOOP every second (idle_timeout_s = 5 for the run);
              after 10 s, does a real mail get 250 or 421?
* `http-idle` 1,100 idle connections to the status port, the daemon under systemd's default
              soft limit of 1,024 descriptors; does a mail still get 250, how many accept
              errors were logged?
* `memory`    64 sessions each sending a 10 MB message at once (452s retried after a
              second, as an MTA would, at most 60 times); peak RSS of the daemon (VmHWM) and
              of the parse child (sampled every 50 ms), RSS of the daemon once all is
              processed.
* `parts`     30 messages of 200,000 MIME parts to the support mailbox, then one P1 to the
              emergency mailbox: time from the P1's 250 to the PagerDuty fake receiving its
              trigger.

The daemon runs as `python -m gateway run` from `--repo` (default: this checkout), so the
same attack can be run against another checkout (e.g. `git archive main`) for a baseline.
Every attack is bounded in count and time (`--limit-s`). `--env NAME=VALUE` passes an
environment variable to the daemon (as the unit's `Environment=` lines do).

    .venv/bin/python bench/resource_attacks.py noop
    .venv/bin/python bench/resource_attacks.py all --repo /tmp/main-checkout
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import itertools
import os
import resource
import smtplib
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
_spec = importlib.util.spec_from_file_location("intake_to_page", HERE / "intake_to_page.py")
assert _spec is not None and _spec.loader is not None
_itp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_itp)
FakeThread, free_port, ROUTING_KEY = _itp.FakeThread, _itp.free_port, _itp.ROUTING_KEY

WATCHDOG_USEC = 2_000_000
P1 = (
    b"From: Alice <alice@tenant.example>\r\nTo: emergency@localhost\r\n"
    b"Subject: Our site is down %s\r\nMessage-ID: <%s@tenant.example>\r\n\r\n"
    b"All our apps return 502 since 09:50.\r\n"
)


@dataclass
class Daemon:
    """The daemon under attack, with its notify socket and /healthz poller."""

    repo: Path
    folder: Path
    extra_toml: str = ""
    http_extra: str = ""
    env: dict[str, str] = field(default_factory=dict)
    nofile: int | None = None
    log_level: str = "warning"
    smtp_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    pings: list[float] = field(default_factory=list)
    health: list[tuple[float, float, bytes]] = field(default_factory=list)  # start, s, status
    proc: subprocess.Popen[bytes] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self, pd_url: str) -> None:
        (self.folder / "pd-key").write_text(ROUTING_KEY)
        config = self.folder / "gateway.toml"
        config.write_text(
            f'[state]\ndir = "{self.folder / "state"}"\n[smtp]\nport = {self.smtp_port}\n'
            f"{self.extra_toml}\n"
            f"[http]\nport = {self.http_port}\n{self.http_extra}\n"
            f'[pagerduty]\nrouting_key = {{ file = "pd-key" }}\nurl = "{pd_url}"\n'
            f'[log]\nlevel = "{self.log_level}"\nformat = "json"\n'
            '[trust]\nallow_domains = ["tenant.example"]\n'
            "[limits]\nstorm_window_s = 0\nglobal_per_minute = 1000000\n"
        )
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.folder / "notify"))
        self.notify.settimeout(0.5)
        limit = self.nofile

        def lower_limit() -> None:
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        env = {
            **os.environ,
            **self.env,
            "NOTIFY_SOCKET": str(self.folder / "notify"),
            "WATCHDOG_USEC": str(WATCHDOG_USEC),
            "PYTHONPATH": str(self.repo),
        }
        self.log = self.folder / "daemon.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "--config", str(config)],
                cwd=self.repo,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=lower_limit,  # noqa: PLW1509
            )
        threading.Thread(target=self._listen, daemon=True).start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"daemon exited: {self.log.read_text()[-2000:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.smtp_port), timeout=0.5),
            ):
                break
            time.sleep(0.05)
        time.sleep(1.0)  # the parse child and the status endpoint come up
        threading.Thread(target=self._poll_health, daemon=True).start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.notify.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if b"WATCHDOG=1" in data:
                self.pings.append(time.monotonic())

    def _poll_health(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            answer = b""
            try:
                with socket.create_connection(("127.0.0.1", self.http_port), timeout=300) as s:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    while chunk := s.recv(65536):
                        answer += chunk
            except OSError:
                pass
            self.health.append((start, time.monotonic() - start, answer[9:12] or b"---"))
            time.sleep(0.25)

    def stop(self) -> None:
        self._stop.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.notify.close()

    def gap_s(self, start: float, end: float) -> float:
        """The longest time without a watchdog ping within [start, end]."""
        times = [start, *(t for t in self.pings if start <= t <= end), end]
        return max(b - a for a, b in itertools.pairwise(times))

    def slowest_health_s(self, start: float, end: float) -> float:
        return max((d for t, d, _ in self.health if start <= t <= end), default=float("nan"))

    def health_answers(self, start: float, end: float) -> str:
        codes = [c.decode() for t, _, c in self.health if start <= t <= end]
        return ", ".join(f"{codes.count(c)} x {c}" for c in sorted(set(codes)))

    def rss_kb(self, pid: int | None = None, key: str = "VmRSS") -> int:
        pid = pid or (self.proc.pid if self.proc else 0)
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def children(self) -> list[int]:
        """The daemon's child processes (started from any of its threads)."""
        assert self.proc is not None
        pids = []
        for task in Path(f"/proc/{self.proc.pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                pids += [int(p) for p in (task / "children").read_text().split()]
        return pids

    def pending(self) -> int:
        """Messages in the inbox not yet processed (read-only look at the database)."""
        db = self.folder / "state" / "gateway.sqlite3"
        try:
            with contextlib.closing(
                sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
            ) as conn:
                return int(
                    conn.execute("SELECT count(*) FROM inbox WHERE state = 'pending'").fetchone()[0]
                )
        except sqlite3.Error:
            return -1


def send_one(port: int, raw: bytes, to: str = "emergency@localhost") -> tuple[int, float]:
    """One mail over a new session: (the DATA reply code, seconds taken)."""
    start = time.monotonic()
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=300) as s:
            s.ehlo("bench.example")
            s.mail("alice@tenant.example")
            s.rcpt(to)
            code, _ = s.data(raw)
    except smtplib.SMTPResponseException as exc:
        code = exc.smtp_code
    except (OSError, smtplib.SMTPException):
        code = 0
    return code, time.monotonic() - start


async def _noop_session(port: int, count: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()
    writer.write(b"EHLO attacker.example\r\n" + b"NOOP\r\n" * count)
    answered = 0
    with contextlib.suppress(OSError):
        while line := await reader.readline():
            answered += line.startswith(b"250 ")
    writer.close()
    return answered


def attack_noop(d: Daemon, args: argparse.Namespace) -> dict[str, object]:
    result: dict[str, object] = {}

    def other() -> None:
        time.sleep(1.0)
        result["unrelated mail"] = send_one(d.smtp_port, P1 % (b"noop", b"noop-1"))

    t = threading.Thread(target=other)
    t.start()

    async def run() -> list[int]:
        return await asyncio.gather(*(_noop_session(d.smtp_port, args.noops) for _ in range(8)))

    answered = asyncio.run(asyncio.wait_for(run(), args.limit_s))
    t.join()
    code, took = result["unrelated mail"]  # type: ignore[misc]
    return {
        "NOOPs sent": 8 * args.noops,
        "NOOPs answered 250": sum(answered),
        "unrelated mail": f"{code} after {took:.2f} s",
        "daemon log bytes": d.log.stat().st_size,
    }


async def _keepalive(port: int, seconds: float) -> str:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return "refused"
    state = "held"
    try:
        greeting = await reader.readline()
        if not greeting.startswith(b"220"):
            return "421 at connect"
        writer.write(b"EHLO keepalive.example\r\n")
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            while (line := await reader.readline()) and line[3:4] == b"-":
                pass
            if not line.startswith(b"250"):
                state = "hung up"
                break
            await asyncio.sleep(1.0)
            writer.write(b"NOOP\r\n")
    except OSError:
        state = "hung up"
    writer.close()
    return state


def attack_keepalive(d: Daemon, args: argparse.Namespace) -> dict[str, object]:
    result: dict[str, object] = {}

    def real_mail() -> None:
        time.sleep(10.0)
        result["mail"] = send_one(d.smtp_port, P1 % (b"keepalive", b"keepalive-1"))

    t = threading.Thread(target=real_mail)
    t.start()

    async def run() -> list[str]:
        return await asyncio.gather(*(_keepalive(d.smtp_port, 15.0) for _ in range(100)))

    states = asyncio.run(asyncio.wait_for(run(), args.limit_s))
    t.join()
    code, took = result["mail"]  # type: ignore[misc]
    return {
        "keep-alive sessions": len(states),
        **{f"sessions {s}": states.count(s) for s in sorted(set(states))},
        "real mail at 10 s": f"{code} after {took:.2f} s",
    }


def attack_http_idle(d: Daemon, args: argparse.Namespace) -> dict[str, object]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    idle = []
    for _ in range(1100):
        with contextlib.suppress(OSError):
            idle.append(socket.create_connection(("127.0.0.1", d.http_port), timeout=5))
    time.sleep(3.0)
    code, took = send_one(d.smtp_port, P1 % (b"fd", b"fd-1"))
    time.sleep(3.0)
    still_open = 0
    for s in idle:
        s.setblocking(False)
        try:
            while s.recv(65536):  # a 503 may come before the server's close
                pass
        except BlockingIOError:  # nothing more, and not closed
            still_open += 1
        except OSError:  # reset by the server
            pass
        s.close()
    errors = d.log.read_text(errors="replace").count("socket.accept() out of system resource")
    return {
        "idle connections opened": len(idle),
        "still open after 6 s": still_open,
        "mail during the attack": f"{code} after {took:.2f} s",
        "accept-error log lines": errors,
    }


async def _big(port: int, raw: bytes, tries: int, pool: ThreadPoolExecutor) -> tuple[int, int]:
    """Send `raw` until 250 (452 and 421 retried after a second): (code, 4xx seen)."""
    retried = 0
    code = 0
    loop = asyncio.get_running_loop()
    for _ in range(tries):
        code, _took = await loop.run_in_executor(pool, send_one, port, raw)
        if code == 250 or code >= 500 or code == 0:
            return code, retried
        retried += 1
        await asyncio.sleep(1.0)
    return code, retried


def attack_memory(d: Daemon, args: argparse.Namespace, _fake: object) -> dict[str, object]:
    line = b"y" * 998 + b"\r\n"
    start = time.monotonic()
    peak_child = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for pid in d.children():
                peak_child[0] = max(peak_child[0], d.rss_kb(pid))
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()

    async def run() -> list[tuple[int, int]]:
        with ThreadPoolExecutor(max_workers=64) as pool:  # 64 sessions at once
            return await asyncio.gather(
                *(
                    _big(d.smtp_port, P1 % (b"big %d" % i, b"big-%d" % i) + line * 10_000, 60, pool)
                    for i in range(64)
                )
            )

    outcomes = asyncio.run(asyncio.wait_for(run(), args.limit_s))
    accepted = sum(code == 250 for code, _ in outcomes)
    deadline = time.monotonic() + args.limit_s
    while time.monotonic() < deadline and d.pending() != 0:
        time.sleep(0.2)
    processed_after = time.monotonic()
    time.sleep(2.0)
    done.set()
    return {
        "messages": 64,
        "accepted": accepted,
        "4xx answers (retried)": sum(r for _, r in outcomes),
        "inbox left pending": d.pending(),
        "all processed after (s)": round(processed_after - start, 1),
        "daemon peak RSS (VmHWM) MB": d.rss_kb(key="VmHWM") // 1024,
        "parse child peak RSS MB (sampled)": peak_child[0] // 1024,
        "daemon RSS after MB": d.rss_kb() // 1024,
    }


def attack_parts(d: Daemon, args: argparse.Namespace, fake: object) -> dict[str, object]:
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(200_000))
    codes = []
    for i in range(30):
        raw = (
            b"From: m@evil.example\r\nSubject: parts %d\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" % i + parts + b"--b--\r\n"
        )
        codes.append(send_one(d.smtp_port, raw, "support@localhost")[0])
    code, _ = send_one(d.smtp_port, P1 % (b"behind parts", b"parts-p1"))
    sent = time.perf_counter()
    arrivals = fake.arrivals  # type: ignore[attr-defined]
    deadline = time.monotonic() + args.limit_s
    while time.monotonic() < deadline and not arrivals:
        time.sleep(0.05)
    paged = f"{next(iter(arrivals.values())) - sent:.2f}" if arrivals else "not paged"
    return {"hostile accepted": codes.count(250), "P1": code, "P1 250 -> page (s)": paged}


ATTACKS: dict[str, Callable[..., dict[str, object]]] = {
    "noop": attack_noop,
    "keepalive": attack_keepalive,
    "http-idle": attack_http_idle,
    "memory": attack_memory,
    "parts": attack_parts,
}


def run_one(name: str, args: argparse.Namespace) -> None:
    extra = {"keepalive": "idle_timeout_s = 5.0\n"}.get(name, "")
    with tempfile.TemporaryDirectory(prefix="attack-", dir="/tmp") as tmp, FakeThread() as fake:
        d = Daemon(
            args.repo,
            Path(tmp),
            extra_toml=extra,
            http_extra=args.http_extra,
            env=dict(e.split("=", 1) for e in args.env),
            nofile=1024 if name == "http-idle" else None,
            log_level="info" if name == "noop" else "warning",
        )
        d.start(fake.url)
        try:
            start = time.monotonic()
            if name in ("memory", "parts"):
                outcome = ATTACKS[name](d, args, fake)
            else:
                outcome = ATTACKS[name](d, args)
            end = time.monotonic()
            alive = d.proc is not None and d.proc.poll() is None
        finally:
            d.stop()
        print(f"{name} ({args.repo}):")
        print(f"  attack lasted {end - start:.1f} s; daemon alive after: {alive}")
        print(
            f"  longest watchdog gap {d.gap_s(start, end):.2f} s "
            f"(pings due every {WATCHDOG_USEC / 2e6:.0f} s); slowest /healthz "
            f"{d.slowest_health_s(start, end):.2f} s ({d.health_answers(start, end)})"
        )
        for key, value in outcome.items():
            print(f"  {key}: {value}")
        sys.stdout.flush()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("attack", choices=[*ATTACKS, "all"])
    p.add_argument(
        "--repo",
        type=Path,
        default=HERE.parent,
        help="the checkout whose daemon is attacked (default: this one)",
    )
    p.add_argument("--noops", type=int, default=250_000, help="NOOPs per session (noop)")
    p.add_argument("--limit-s", type=float, default=300.0, help="bound on each attack")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for the daemon, e.g. the unit's "
        "MALLOC_MMAP_THRESHOLD_=1048576",
    )
    p.add_argument(
        "--http-extra",
        default="",
        help='TOML lines for [http], e.g. "max_connections = 4096" to run '
        "http-idle into descriptor exhaustion and see the accept errors",
    )
    args = p.parse_args()
    args.repo = args.repo.resolve()
    for name in ATTACKS if args.attack == "all" else [args.attack]:
        run_one(name, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
