"""Latency from an engineer's `!update <text>` in Matrix to the reporter's email being accepted.

What it measures: for each of `--updates` updates, the wall time from the moment the engineer
starts sending `!update bench <i>` in the incident's thread (a client-server API PUT to a
local Synapse) until the SMTP relay the gateway mails through has accepted the email that
carries the update to the reporter (its DATA handler has recorded the message, just before it
answers 250). The spec's target is a p99 of at most 500 ms.

Each figure is also split in two, twice. First at the moment the engineer's PUT is answered
(Synapse answers once it has persisted the event): the rest is mostly the gateway's time —
its /sync long-poll answered, the event committed to the inbox, the command planned, the
outbox mailing the reporter over a fresh SMTP session. Second at the event's
`origin_server_ts` (read back from Synapse after the run; wall clock, 1 ms resolution): the
time before it is the request reaching Synapse and the event being created, the time after
it includes Synapse persisting the event.

Method: a throwaway Synapse (the test suite's `tests.peers.synapse.Synapse`, in its own
virtualenv) in a temporary folder; a bot user, an engineer, and an incidents room created by
the engineer with the bot invited. The real `gateway.app.App` runs in this process (the test
suite's `running()`), with the real clock, outbound mail in `smtp` mode to a capture SMTP
server on the same event loop (`tests.fakes.smtp_capture.SmtpCapture`), the default rulebook,
the default outbox retry policy, and logs at warning. One P1 email is sent to the gateway's
SMTP port; once the incident is announced in the incidents room and the reporter's
acknowledgement email has arrived, the updates are sent one at a time in the announcement's
thread, each only after the previous one's email was accepted (`--gap-ms` adds a pause
between them; without one, each update's PUT can meet the bot's "Update sent to" notice for
the previous update in the same room). The engineer's request is a blocking urllib call,
run in a worker thread so the gateway's event loop keeps running.
Percentiles are nearest-rank over all updates, the first one included.

Run from the repository root, with the project's virtualenv:

    .venv/bin/python bench/matrix_update_latency.py                  # 200 updates
    .venv/bin/python bench/matrix_update_latency.py --updates 50 --sync-timeout-s 5

Set-up takes about `--sync-timeout-s` seconds before the first update: the gateway's Matrix
link counts as connected only once its first long-poll /sync has returned, and in a quiet
room that is when the timeout expires.

Needs Synapse in `.venv-synapse` (or `$SYNAPSE_VENV`); `./scripts/test` installs it. Exit
codes: 0 measured (whether or not the target is met, which the report says); 1 the run
failed (Synapse or the gateway did not come up, an email did not arrive in time, the overall
timeout); 2 usage error or Synapse not installed; 130 interrupted. Synapse and the gateway
are always stopped and the temporary folder removed, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import logging
import math
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email import policy
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import aiosmtplib  # noqa: E402

from gateway.run import logs  # noqa: E402
from tests.conftest import email_bytes, make_config, running  # noqa: E402
from tests.fakes.smtp_capture import Captured, SmtpCapture  # noqa: E402
from tests.peers.synapse import Synapse, synapse_python  # noqa: E402

REPORTER = "alice@tenant.example"
EMERGENCY = "emergency@localhost"
TARGET_P99_MS = 500.0
SETUP_TIMEOUT_S = 60.0  # the gateway connecting, the announcement, the acknowledgement
UPDATE_TIMEOUT_S = 30.0  # one update's email
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
INSTALL_HINT = """\
Synapse is not installed. It lives in its own virtualenv, .venv-synapse in the repository
(or the one $SYNAPSE_VENV names), which ./scripts/test creates:

    ./scripts/test

Then run this benchmark again.
"""


STARTED = time.monotonic()


def progress(text: str) -> None:
    """A progress line on stderr, with the seconds since the script started."""
    print(f"[{time.monotonic() - STARTED:6.1f} s] {text}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """The run could not be completed; the message says why."""


@dataclass
class Sample:
    """One update: milliseconds from the start of the send."""

    sent_ms: float  # the engineer's PUT answered
    total_ms: float  # the reporter's email accepted
    # For the split at the event's creation, on the wall clock (Synapse's origin_server_ts
    # has a resolution of 1 ms): filled in after the run.
    event_id: str = ""
    start_wall_ms: float = 0.0
    accepted_wall_ms: float = 0.0
    created_wall_ms: float | None = None

    @property
    def after_send_ms(self) -> float:
        return self.total_ms - self.sent_ms


@dataclass
class World:
    """The homeserver and the accounts and room the run uses."""

    synapse: Synapse
    bot: str
    bot_password: str
    eng: str
    eng_token: str
    incidents: str
    samples: list[Sample] = field(default_factory=list)


# -- set-up ----------------------------------------------------------------------------------
def make_world(synapse: Synapse) -> World:
    """A bot account, an engineer, and the incidents room (the bot is invited; it joins)."""
    bot_password = "bench-bot-password"
    bot, _, _ = synapse.register("gateway", password=bot_password)
    eng, eng_token, _ = synapse.register("engineer")
    incidents = synapse.create_room(eng_token, invite=[bot], name="incidents")
    return World(synapse, bot, bot_password, eng, eng_token, incidents)


def gateway_config(w: World, state: Path, relay_port: int, sync_timeout_s: float) -> Any:
    return make_config(
        state,
        # The production retry policy, not the test suite's short one.
        outbox={"backoff_initial_s": 1.0, "backoff_max_s": 300.0, "drain_timeout_s": 10.0},
        mail_out={
            "mode": "smtp",
            "smtp": {"host": "127.0.0.1", "port": relay_port, "starttls": False},
        },
        matrix={
            "homeserver": w.synapse.url,
            "user_id": w.bot,
            "password": {"value": w.bot_password},
            "incidents_room": w.incidents,
            "engineers": [w.eng],
            "sync_timeout_s": sync_timeout_s,
            "backoff_max_s": 1,
        },
    )


def announcements(w: World) -> list[dict[str, Any]]:
    """The bot's notices announcing INC-1 in the incidents room."""
    return [
        e
        for e in w.synapse.messages(w.eng_token, w.incidents, limit=100)
        if e["sender"] == w.bot
        and e.get("content", {}).get("msgtype") == "m.notice"
        and "INC-1 · P1" in e["content"].get("body", "")
    ]


async def until(
    check: Callable[[], Any], within_s: float, what: str, interval: float = 0.05
) -> Any:
    """Poll a blocking check in a worker thread until it returns something truthy."""
    deadline = time.monotonic() + within_s
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"{what} not seen within {within_s:.0f} s")
        await asyncio.sleep(interval)


def body_text(captured: Captured) -> str:
    """The decoded text of a captured email (whatever transfer encoding it used)."""
    msg = email.message_from_bytes(captured.content, policy=policy.default)
    part = msg.get_body(preferencelist=("plain",))
    return str(part.get_content()) if part is not None else ""


async def email_with(
    relay: SmtpCapture, seen: int, pattern: re.Pattern[str], within_s: float
) -> tuple[float, float, int]:
    """Wait for an email to the reporter, after the first `seen`, whose text matches.

    Returns the perf_counter() and time.time() readings taken as soon as that email is known
    to be accepted (before its text is decoded), and the number of emails captured so far.
    """
    deadline = time.monotonic() + within_s
    while True:
        remaining = deadline - time.monotonic()
        try:
            messages = await relay.wait_for(seen + 1, timeout=max(remaining, 0.0))
        except TimeoutError:
            raise BenchError(
                f"no email matching {pattern.pattern!r} within {within_s:.0f} s"
            ) from None
        accepted, accepted_wall = time.perf_counter(), time.time()
        for captured in messages[seen:]:
            if REPORTER in captured.rcpt_tos and pattern.search(body_text(captured)):
                return accepted, accepted_wall, len(messages)
        seen = len(messages)


# -- the measurement --------------------------------------------------------------------------
async def measure(w: World, state: Path, args: argparse.Namespace) -> None:
    async with SmtpCapture() as relay:
        config = gateway_config(w, state, relay.port, args.sync_timeout_s)
        async with running(config) as app:
            assert app.matrix is not None and app.smtp_port is not None
            try:
                await asyncio.wait_for(app.matrix.connected.wait(), SETUP_TIMEOUT_S)
            except TimeoutError:
                raise BenchError("the gateway did not connect to Synapse") from None
            progress("the gateway is connected; sending the P1 email")
            async with aiosmtplib.SMTP(
                hostname="127.0.0.1", port=app.smtp_port, start_tls=False
            ) as client:
                await client.sendmail(
                    REPORTER, [EMERGENCY], email_bytes(message_id="<bench-report-1@tenant.example>")
                )
            [root] = await until(
                lambda: announcements(w), SETUP_TIMEOUT_S, "the incident's announcement"
            )
            # The reporter's acknowledgement comes first; the updates are counted after it.
            try:
                await relay.wait_for(1, timeout=SETUP_TIMEOUT_S)
            except TimeoutError:
                raise BenchError("the reporter's acknowledgement email did not arrive") from None
            seen = len(relay.messages)
            progress(f"the incident is announced; timing {args.updates} updates")
            progress_every = max(1, args.updates // 10)
            for i in range(args.updates):
                text = f"!update bench {i}"
                pattern = re.compile(rf"\bbench {i}\b")
                t0, t0_wall = time.perf_counter(), time.time()
                event_id = await asyncio.to_thread(
                    w.synapse.send_text,
                    w.eng_token,
                    w.incidents,
                    text,
                    thread_root=root["event_id"],
                )
                t_sent = time.perf_counter()
                t_accepted, accepted_wall, seen = await email_with(
                    relay, seen, pattern, UPDATE_TIMEOUT_S
                )
                w.samples.append(
                    Sample(
                        sent_ms=(t_sent - t0) * 1000,
                        total_ms=(t_accepted - t0) * 1000,
                        event_id=event_id,
                        start_wall_ms=t0_wall * 1000,
                        accepted_wall_ms=accepted_wall * 1000,
                    )
                )
                if (i + 1) % progress_every == 0 or i + 1 == args.updates:
                    progress(
                        f"{i + 1}/{args.updates} updates, last {w.samples[-1].total_ms:.1f} ms"
                    )
                if args.gap_ms:
                    await asyncio.sleep(args.gap_ms / 1000)
            progress("stopping the gateway")
        progress("the gateway has stopped")


def fill_creation_times(w: World) -> None:
    """Ask Synapse when it created each update's event (origin_server_ts, after the run)."""
    room = urllib.parse.quote(w.incidents, safe="")
    for sample in w.samples:
        event = urllib.parse.quote(sample.event_id, safe="")
        reply = w.synapse.api("GET", f"/_matrix/client/v3/rooms/{room}/event/{event}", w.eng_token)
        sample.created_wall_ms = float(reply["origin_server_ts"])


# -- the report -------------------------------------------------------------------------------
def nearest_rank(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..100) of non-empty `values`."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def synapse_version(python: Path) -> str:
    probe = subprocess.run(
        [python, "-c", "import synapse; print(synapse.__version__)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return probe.stdout.strip().split()[0] if probe.returncode == 0 and probe.stdout else "?"


def machine_line(synapse_python_path: Path) -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{len(os.sched_getaffinity(0))} CPUs (nproc), {cpu_model()}, "
        f"Python {platform.python_version()}, Synapse {synapse_version(synapse_python_path)}"
        f", matrix-nio {version('matrix-nio')}, aiosmtplib {version('aiosmtplib')}, "
        f"{platform.system()} {platform.release()}; load average before the run {load}"
    )


def report(samples: list[Sample], args: argparse.Namespace, machine: str) -> str:
    rows = [
        ("total: !update sent -> email accepted", [s.total_ms for s in samples]),
        ("  engineer's PUT until Synapse answers", [s.sent_ms for s in samples]),
        ("  Synapse's answer -> email accepted", [s.after_send_ms for s in samples]),
    ]
    if all(s.created_wall_ms is not None for s in samples):
        rows += [
            (
                "  PUT start -> event created (*)",
                [(s.created_wall_ms or 0) - s.start_wall_ms for s in samples],
            ),
            (
                "  event created -> email accepted (*)",
                [s.accepted_wall_ms - (s.created_wall_ms or 0) for s in samples],
            ),
        ]
    lines = [
        f"command: {shlex.join(sys.orig_argv)}",
        f"machine: {machine}",
        f"updates: {len(samples)}, one at a time, gap {args.gap_ms} ms; gateway "
        f"sync_timeout_s = {args.sync_timeout_s:g}",
        "",
        f"{'ms':<40} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8} {'mean':>8}",
    ]
    for name, values in rows:
        figures = [nearest_rank(values, q) for q in (50, 90, 99)]
        figures += [max(values), sum(values) / len(values)]
        lines.append(f"{name:<40} " + " ".join(f"{x:8.1f}" for x in figures))
    p99 = nearest_rank([s.total_ms for s in samples], 99)
    if len(rows) > 3:
        lines.append(
            "(*) split at the event's origin_server_ts, on the wall clock (1 ms resolution)"
        )
    lines += [
        "",
        f"first update: {samples[0].total_ms:.1f} ms",
        f"target (spec): p99 <= {TARGET_P99_MS:.0f} ms -> "
        f"{'MET' if p99 <= TARGET_P99_MS else 'NOT MET'} (p99 {p99:.1f} ms)",
    ]
    return "\n".join(lines)


# -- command line ----------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    def positive_int(text: str) -> int:
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError("must be at least 1")
        return value

    def positive_float(text: str) -> float:
        value = float(text)
        if not value > 0:
            raise argparse.ArgumentTypeError("must be greater than 0")
        return value

    p = argparse.ArgumentParser(
        description="Latency from !update in Matrix to the "
        "reporter's email, against a local Synapse."
    )
    p.add_argument("--updates", type=positive_int, default=200, help="updates to time")
    p.add_argument(
        "--sync-timeout-s",
        type=positive_float,
        default=30.0,
        help="the gateway's /sync long-poll timeout (it returns as soon as events arrive)",
    )
    p.add_argument(
        "--gap-ms",
        type=float,
        default=0.0,
        help="pause after each update's email before sending the next",
    )
    p.add_argument(
        "--timeout-s",
        type=positive_float,
        default=900.0,
        help="give up on the whole run after this long",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    python = synapse_python()
    if python is None:
        print(INSTALL_HINT, file=sys.stderr)
        return EXIT_USAGE
    machine = machine_line(python)
    logs.configure("warning", "json")
    for handler in logging.getLogger().handlers:  # keep stdout for the report
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)
    base = Path(tempfile.mkdtemp(prefix="matrix-bench-"))
    synapse = Synapse(base / "synapse", python)
    try:
        progress("starting Synapse")
        try:
            synapse.start()
        except RuntimeError as exc:
            print(f"cannot start Synapse: {exc}", file=sys.stderr)
            return EXIT_FAILED
        world = make_world(synapse)
        state = base / "state"
        state.mkdir()
        progress("Synapse is up; starting the gateway")

        async def bounded() -> None:
            # SIGTERM cancels the measurement only, so the gateway is stopped the way the
            # test suite stops it (asyncio.run does the same for Ctrl-C).
            task = asyncio.current_task()
            assert task is not None
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
            async with asyncio.timeout(args.timeout_s):
                await measure(world, state, args)

        try:
            asyncio.run(bounded())
        except asyncio.CancelledError:
            raise KeyboardInterrupt from None
        except TimeoutError:
            print(
                f"the run did not finish within {args.timeout_s:g} s "
                f"({len(world.samples)} updates timed)",
                file=sys.stderr,
            )
            return EXIT_FAILED
        except (BenchError, Synapse.Error, AssertionError) as exc:
            print(f"the run failed after {len(world.samples)} updates: {exc}", file=sys.stderr)
            return EXIT_FAILED
        try:
            fill_creation_times(world)
        except (Synapse.Error, OSError, KeyError, ValueError) as exc:
            print(f"cannot read the events' creation times: {exc}", file=sys.stderr)
        print(report(world.samples, args, machine))
        return EXIT_OK
    finally:
        with contextlib.suppress(Exception):
            synapse.stop()
        shutil.rmtree(base, ignore_errors=True)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupted)  # a kill runs the same cleanup as Ctrl-C
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Synapse and the gateway were stopped on the way out
        print("interrupted", file=sys.stderr)
        sys.exit(130)
