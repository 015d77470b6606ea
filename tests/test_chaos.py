"""Chaos against real peers: the daemon with SMTP intake, one IMAP mailbox (Dovecot), Matrix
(Synapse), PagerDuty (fake) and an SMTP relay (fake), under a steady trickle of reports and
engineers' commands, while a driver per peer restarts it, hangs it without closing, makes
it refuse (503 / 421 / BYE) or drops its TCP connections mid-command, at random, for a
bounded time. Afterwards: every report that got 250 or reached the mailbox was processed
once, every page, email and chat message exists once, nothing was dead-lettered, /healthz
was never healthy while a link was down past its grace, and every link is connected.

CHAOS_SECONDS (default 40) sets how long the faults go on, CHAOS_MAX_OUTAGE_S (default 6)
the longest single outage: `CHAOS_SECONDS=600 CHAOS_MAX_OUTAGE_S=30` is a soak. The figures
are printed as `FIGURE chaos ...` lines (docs/reliability.md, "Links and self-healing").
"""

from __future__ import annotations

import asyncio
import email
import os
import random
import sqlite3
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from gateway.app import App
from tests.conftest import IN_HOURS, email_bytes, eventually, make_config, running, ticking
from tests.fakes.chaos_proxy import ChaosProxy
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.smtp_capture import SmtpCapture
from tests.peers.dovecot import Dovecot
from tests.peers.synapse import Synapse
from tests.test_http_status import get

pytestmark = [pytest.mark.peer, pytest.mark.slow]

DURATION_S = float(os.environ.get("CHAOS_SECONDS", "40"))
REPORT_EVERY_S = float(os.environ.get("CHAOS_REPORT_EVERY_S", "0.4"))
MAX_OUTAGE_S = float(os.environ.get("CHAOS_MAX_OUTAGE_S", "6"))
GRACE_S = 2.0  # [health] down_grace_s
# How long after a peer goes away its link may still look up (the daemon cannot know yet):
# a refused or dropped connection is seen at once; a hang only when a command times out.
DETECT_S = {"imap": {"hang": 3 + 2 + 1}, "matrix": {"hang": 1 + 10 + 1}}
DETECT_DEFAULT_S = 2.5  # backoff cap (1 s) and a command timeout (1-2 s)
SLACK_S = 1.0  # the health sampler's and the state watcher's own granularity
ROUTING_KEY = "ChaosRoutingKey0123456789abcdefA"
MODES = {
    "imap": ("restart", "hang", "drop", "error"),
    "matrix": ("restart", "hang", "drop", "error"),
    "pager": ("refuse", "hang", "drop", "error"),
    "mail": ("refuse", "hang", "drop", "error"),
}


@dataclass
class Outage:
    """One injected fault: `end` is when the peer was back (for a drop, the same instant)."""

    peer: str
    mode: str
    start: float
    end: float = 0.0


@dataclass
class Record:
    """What the run saw."""

    outages: list[Outage] = field(default_factory=list)
    smtp_accepted: list[str] = field(default_factory=list)  # subjects that got 250
    imap_delivered: list[str] = field(default_factory=list)  # subjects in the mailbox
    acks: dict[int, str] = field(default_factory=dict)  # incident id -> command event id
    # (when, healthy, problems, the links the report itself shows down)
    samples: list[tuple[float, bool, list[str], set[str]]] = field(default_factory=list)
    links: dict[str, list[tuple[float, bool]]] = field(default_factory=dict)


@dataclass
class Peers:
    """The real and fake peers and the proxies the daemon reaches them through."""

    dovecot: Dovecot
    synapse: Synapse
    pd: FakePagerDuty
    relay: SmtpCapture
    proxies: dict[str, ChaosProxy]


def query(state: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{state / 'gateway.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        return list(conn.execute(sql, args))
    finally:
        conn.close()


# -- the fault driver ---------------------------------------------------------------------


async def inject(peers: Peers, peer: str, mode: str, seconds: float, record: Record) -> None:
    """One fault on one peer, for about `seconds`."""
    outage = Outage(peer, mode, time.monotonic())
    record.outages.append(outage)
    proxy = peers.proxies[peer]
    if mode == "drop":
        proxy.drop()
    elif mode == "restart":
        server = peers.dovecot if peer == "imap" else peers.synapse
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(seconds)
        await asyncio.to_thread(server.start)
    else:
        await proxy.set_mode(mode)
        await asyncio.sleep(seconds)
        await proxy.set_mode("up")
    outage.end = time.monotonic()


async def driver(peers: Peers, peer: str, until: float, rng: random.Random, record: Record) -> None:
    """Faults on one peer at random until `until`."""
    while time.monotonic() < until:
        await asyncio.sleep(rng.uniform(1.5, 5.0))
        if time.monotonic() >= until:
            return
        await inject(peers, peer, rng.choice(MODES[peer]), rng.uniform(0.5, MAX_OUTAGE_S), record)


# -- the load -----------------------------------------------------------------------------


async def smtp_reports(app: App, until: float, record: Record) -> None:
    """A report every REPORT_EVERY_S through the SMTP listener (never faulted here)."""
    n = 0
    while time.monotonic() < until:
        n += 1
        subject = f"Chaos report S{n}"
        raw = email_bytes(
            subject=subject,
            body=f"{subject}: all requests fail",
            sender=f"s{n}@tenant.example",
            message_id=f"<chaos-s{n}@tenant.example>",
        )
        try:
            assert app.smtp_port is not None
            await aiosmtplib.send(
                raw,
                sender=f"s{n}@tenant.example",
                recipients=["emergency@localhost"],
                hostname="127.0.0.1",
                port=app.smtp_port,
                timeout=30,
            )
            record.smtp_accepted.append(subject)
        except (aiosmtplib.SMTPException, OSError):
            pass
        await asyncio.sleep(REPORT_EVERY_S)


async def imap_reports(dv: Dovecot, until: float, record: Record) -> None:
    """A report every 3 x REPORT_EVERY_S into the mailbox (while Dovecot runs)."""
    n = 0
    while time.monotonic() < until:
        n += 1
        subject = f"Chaos report I{n}"
        raw = email_bytes(
            subject=subject,
            body=f"{subject}: the database is down",
            sender=f"i{n}@tenant.example",
            message_id=f"<chaos-i{n}@tenant.example>",
        )
        try:
            await asyncio.to_thread(dv.deliver, "gw", raw, f"i{n}@tenant.example")
            record.imap_delivered.append(subject)
        except Exception:
            pass
        await asyncio.sleep(3 * REPORT_EVERY_S)


async def engineer(
    synapse: Synapse, token: str, room: str, state: Path, until: float, record: Record
) -> None:
    """Every 2 s an engineer acknowledges an incident already paged (straight to Synapse)."""
    while time.monotonic() < until:
        await asyncio.sleep(2.0)
        paged = [
            row[0]
            for row in query(
                state, "SELECT incident_id FROM pages WHERE action = 'trigger' ORDER BY id"
            )
        ]
        todo = [i for i in paged if i not in record.acks]
        if not todo:
            continue
        try:
            event_id = await asyncio.wait_for(
                asyncio.to_thread(synapse.send_text, token, room, f"!ack INC-{todo[0]}"), 15
            )
        except Exception:
            continue
        record.acks[todo[0]] = event_id


# -- watching -------------------------------------------------------------------------------


def link_states(app: App) -> dict[str, bool]:
    """Whether each link is up, as the daemon sees it."""
    assert app.matrix is not None
    gates = {gate.name: gate.state() == "ok" for gate in app.gates}
    return {
        "imap": app.imap[0].state == "connected",
        "matrix": app.matrix.state == "connected",
        "pager": gates["pager"],
        "mail": gates["mail"],
    }


async def watch(app: App, stop: asyncio.Event, record: Record) -> None:
    """Sample /healthz every 0.25 s and the links' states every 0.05 s."""
    last_sample = 0.0
    while not stop.is_set():
        now = time.monotonic()
        for name, up in link_states(app).items():
            timeline = record.links.setdefault(name, [])
            if not timeline or timeline[-1][1] != up:
                timeline.append((now, up))
        if now - last_sample >= 0.25:
            last_sample = now
            _, _, body = await get(app.http_port, "/healthz")
            record.samples.append(
                (time.monotonic(), bool(body["healthy"]), body["problems"], shown_down(body))
            )
        await asyncio.sleep(0.05)


def shown_down(body: dict[str, Any]) -> set[str]:
    """The links a health report shows as not up (an egress answering with errors is up)."""
    parts = body["components"]
    egress = {k: v.rpartition(": ")[2] for k, v in body["egress"].items()}
    down = {"imap"} if parts.get("imap:ops") != "connected" else set()
    down |= {"matrix"} if parts.get("matrix") != "connected" else set()
    return down | {k for k in ("pager", "mail") if egress.get(k) not in ("ok", "backing_off")}


def down_spans(timeline: list[tuple[float, bool]], end: float) -> Iterator[tuple[float, float]]:
    """(from, to) of each span the link was down."""
    since = None
    for at, up in timeline:
        if not up and since is None:
            since = at
        elif up and since is not None:
            yield since, at
            since = None
    if since is not None:
        yield since, end


def violations(record: Record, end: float) -> list[str]:
    """Healthy samples taken while a link had been down past its grace: as the daemon saw
    it (the report itself shows the link down, and the 50 ms watcher saw it down since more
    than the grace), and, for the connected links, as the injected outage says."""
    found = []
    for name, timeline in record.links.items():
        for start, stop in down_spans(timeline, end):
            found += [
                f"{name} down since {t - start:.1f}s, /healthz healthy"
                for t, healthy, _, down in record.samples
                if healthy and name in down and start + GRACE_S + SLACK_S < t < stop
            ]
    for o in record.outages:
        if o.peer not in DETECT_S or o.mode == "drop":
            continue
        allowed = GRACE_S + DETECT_S[o.peer].get(o.mode, DETECT_DEFAULT_S) + SLACK_S
        found += [
            f"{o.peer} {o.mode} for {t - o.start:.1f}s, /healthz healthy"
            for t, healthy, _, _ in record.samples
            if healthy and o.start + allowed < t < o.end
        ]
    return found


def recovery_s(o: Outage, timeline: list[tuple[float, bool]]) -> float:
    """From the peer's return to its link being up (0 if the link never noticed)."""
    state = True
    for at, up in timeline:
        if at > o.end:
            return at - o.end if up and not state else 0.0 if state else at - o.end
        state = up
    return 0.0


PROBLEM_NAMES = {"imap": "imap:", "matrix": "matrix", "pager": "pager", "mail": "mail"}


def shown_s(o: Outage, samples: list[tuple[float, bool, list[str], set[str]]]) -> float | None:
    """From the fault to the first /healthz naming the peer's link as a problem, if it did
    during the outage."""
    name = PROBLEM_NAMES[o.peer]
    for t, healthy, problems, _ in samples:
        if (
            o.start <= t <= o.end + SLACK_S
            and not healthy
            and any(p.startswith(name) for p in problems)
        ):
            return t - o.start
    return None


def figures(record: Record) -> list[str]:
    lines = []
    for peer, kinds in MODES.items():
        outs = [o for o in record.outages if o.peer == peer]
        rec = [recovery_s(o, record.links.get(peer, [])) for o in outs]
        shown = [
            s
            for o in outs
            if o.end - o.start > GRACE_S + DETECT_DEFAULT_S + SLACK_S
            and (s := shown_s(o, record.samples)) is not None
        ]
        modes = {m: sum(o.mode == m for o in outs) for m in kinds}
        lines.append(
            f"FIGURE chaos {peer}: outages={len(outs)} {modes} "
            f"longest={max((o.end - o.start for o in outs), default=0):.1f}s "
            f"back_to_connected_p50={statistics.median(rec) if rec else 0:.2f}s "
            f"max={max(rec, default=0):.2f}s healthz_shown_p50="
            f"{statistics.median(shown) if shown else 0:.2f}s max={max(shown, default=0):.2f}s "
            f"(of {len(shown)} outages longer than grace+detection)"
        )
    return lines


# -- the test -------------------------------------------------------------------------------


def chaos_config(state: Path, peers: Peers, bot: str, room: str, eng: str) -> Any:
    p = peers.proxies
    return make_config(
        state,
        health={"down_grace_s": GRACE_S},
        canary={"interval_s": 2, "deadline_s": 120},
        limits={"per_sender": 1000, "global_per_minute": 100000, "storm_window_s": 0},
        outbox={
            "backoff_initial_s": 0.2,
            "backoff_max_s": 2,
            "max_attempts": 60,
            "drain_timeout_s": 5,
        },
        pagerduty={
            "routing_key": {"value": ROUTING_KEY},
            "url": f"http://127.0.0.1:{p['pager'].port}",
            "timeout_s": 1,
        },
        mail_out={
            "mode": "smtp",
            "smtp": {
                "host": "127.0.0.1",
                "port": p["mail"].port,
                "starttls": False,
                "timeout_s": 2,
            },
        },
        matrix={
            "homeserver": f"http://127.0.0.1:{p['matrix'].port}",
            "user_id": bot,
            "password": {"value": "chaos-bot-pw"},
            "incidents_room": room,
            "engineers": [eng],
            "sync_timeout_s": 1,
            "backoff_max_s": 1,
        },
        imap=[
            {
                "name": "ops",
                "host": "127.0.0.1",
                "port": p["imap"].port,
                "tls": "none",
                "allow_plaintext": True,
                "user": "gw",
                "password": {"value": "gw-secret"},
                "idle_renew_s": 3,
                "timeout_s": 2,
                "backoff_max_s": 1,
            }
        ],
    )


async def settled(app: App, state: Path) -> bool:
    """Every link up, nothing waiting in the inbox or the outbox."""
    if not all(link_states(app).values()):
        return False
    pending = query(
        state,
        "SELECT (SELECT count(*) FROM inbox WHERE state = 'pending'),"
        " (SELECT count(*) FROM outbox WHERE state = 'pending')",
    )[0]
    return pending == (0, 0)


@pytest.mark.timeout(int(DURATION_S) + 400)
async def test_chaos_loses_nothing_doubles_nothing_and_heals(
    tmp_path: Path, dovecot: Dovecot, synapse: Synapse
) -> None:
    """Random restarts, hangs, refusals and dropped connections of every peer under load:
    nothing lost, nothing doubled, nothing dead, /healthz truthful, every link back."""
    bot, _, _ = synapse.register("chaos-bot", password="chaos-bot-pw")
    eng, eng_token, _ = synapse.register("chaos-eng")
    room = synapse.create_room(eng_token, invite=[bot], name="incidents")
    rng = random.Random(int(os.environ.get("CHAOS_SEED", str(time.time_ns()))))
    record = Record()
    async with (
        FakePagerDuty(routing_keys={ROUTING_KEY}) as pd,
        SmtpCapture() as relay,
        ChaosProxy(dovecot.port, "imap") as p_imap,
        ChaosProxy(synapse.port, "http") as p_mx,
        ChaosProxy(int(pd.url.rsplit(":", 1)[1]), "http") as p_pd,
        ChaosProxy(relay.port, "smtp") as p_mail,
    ):
        peers = Peers(
            dovecot,
            synapse,
            pd,
            relay,
            {"imap": p_imap, "matrix": p_mx, "pager": p_pd, "mail": p_mail},
        )
        try:
            async with running(
                chaos_config(tmp_path, peers, bot, room, eng), ticking(IN_HOURS)
            ) as app:
                await eventually(
                    lambda: (
                        app.imap[0].state == "connected"
                        and app.matrix is not None
                        and app.matrix.state == "connected"
                    ),
                    30,
                )
                stop_watch = asyncio.Event()
                watcher = asyncio.create_task(watch(app, stop_watch, record))
                until = time.monotonic() + DURATION_S
                await asyncio.gather(
                    *(driver(peers, peer, until, rng, record) for peer in MODES),
                    smtp_reports(app, until, record),
                    imap_reports(dovecot, until, record),
                    engineer(synapse, eng_token, room, tmp_path, until, record),
                )
                calm = time.monotonic()
                await eventually(lambda: settled(app, tmp_path), 180)
                # Acknowledgements of the last pages, now that every link is back.
                await engineer(synapse, eng_token, room, tmp_path, time.monotonic() + 4, record)
                await eventually(lambda: settled(app, tmp_path), 60)
                await eventually(
                    lambda: (
                        len(query(tmp_path, "SELECT 1 FROM pages WHERE action = 'acknowledge'"))
                        == len(record.acks)
                    ),
                    60,
                )
                stop_watch.set()
                await watcher
                end = time.monotonic()
                _, _, health = await get(app.http_port, "/healthz")
        finally:
            await asyncio.to_thread(dovecot.start)
            await asyncio.to_thread(synapse.start)
        check(tmp_path, peers, record, eng_token, room, bot)
    for line in figures(record):
        print("\n" + line)
    print(
        f"\nFIGURE chaos totals: seconds={DURATION_S:.0f} smtp_250={len(record.smtp_accepted)} "
        f"imap_delivered={len(record.imap_delivered)} acks={len(record.acks)} "
        f"settled_after={end - calm:.1f}s healthz_samples={len(record.samples)} "
        f"relay_copies={len(relay.messages)} pd_requests={pd.requests}"
    )
    assert health["healthy"] is True, health
    assert violations(record, end) == []


def check(state: Path, peers: Peers, record: Record, eng_token: str, room: str, bot: str) -> None:
    """Once each: incidents, pages, mails, chat announcements; none dead."""
    reports = record.smtp_accepted + record.imap_delivered
    titles = [row[0] for row in query(state, "SELECT title FROM incidents ORDER BY id")]
    assert sorted(titles) == sorted(reports), "each report that got 250 or reached the mailbox"
    assert query(state, "SELECT count(*) FROM outbox WHERE state = 'dead'") == [(0,)]
    ids = [row[0] for row in query(state, "SELECT id FROM incidents")]
    # Pages: one alert per incident, acknowledged where an engineer said so.
    assert set(peers.pd.alerts) == {f"INC-{i}" for i in ids}
    assert peers.pd.alerts_opened == len(ids)
    for incident in record.acks:
        assert peers.pd.alerts[f"INC-{incident}"] == "acknowledged", incident
    # Mail: each delivered entry one Message-ID at the relay, each reporter acknowledged.
    delivered = query(
        state, "SELECT count(*) FROM outbox WHERE kind = 'mail.send' AND state = 'done'"
    )[0][0]
    messages = [
        email.message_from_bytes(m.content, policy=policy.default) for m in peers.relay.messages
    ]
    assert len({str(m["Message-ID"]) for m in messages}) == delivered
    reporters = {rcpt for m in peers.relay.messages for rcpt in m.rcpt_tos}
    assert {f"{s.rsplit(' ', 1)[1].lower()}@tenant.example" for s in reports} <= reporters
    # Chat: each announcement once, one event per delivered chat entry.
    chat_done = query(
        state,
        "SELECT json_extract(result, '$.event_id') FROM outbox"
        " WHERE kind LIKE 'chat.%' AND state = 'done'",
    )
    events = [
        e
        for e in all_messages(peers.synapse, eng_token, room)
        if e["sender"] == bot and e["type"] == "m.room.message"
    ]
    assert {e["event_id"] for e in events} == {row[0] for row in chat_done}
    bodies = [e["content"]["body"] for e in events]
    for i in ids:
        assert sum(b.startswith(f"INC-{i} ·") for b in bodies) == 1, i
    # Commands: each engineer's !ack taken in once.
    for event_id in record.acks.values():
        rows = query(
            state,
            "SELECT count(*) FROM inbox WHERE channel = 'matrix'"
            " AND instr(CAST(raw AS TEXT), ?) > 0",
            event_id,
        )
        assert rows == [(1,)], event_id


def all_messages(synapse: Synapse, token: str, room: str) -> list[dict[str, Any]]:
    """Every event of the room's timeline (paged back from the newest)."""
    out: list[dict[str, Any]] = []
    start = ""
    while True:
        query_ = f"dir=b&limit=1000{'&from=' + start if start else ''}"
        reply = synapse.api("GET", f"/_matrix/client/v3/rooms/{room}/messages?{query_}", token)
        out.extend(reply["chunk"])
        if not reply["chunk"] or not reply.get("end"):
            return out
        start = reply["end"]
