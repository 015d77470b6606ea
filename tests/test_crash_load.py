"""Crash safety under load: the daemon is SIGKILLed again and again while clients send
2,000 messages over several SMTP connections. Every message that got 250 is processed
exactly once, none that got a 4xx is processed, and no acknowledgement is sent twice.

A longer test (about half a minute): marked `slow`, and it runs in CI like every other.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from pathlib import Path

import aiosmtplib
import pytest

from tests.conftest import email_bytes
from tests.daemon import Daemon

MESSAGES = 2000
CONNECTIONS = 8
KILLS = 5

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def subject(n: int) -> str:
    """A subject of its own per message (digits spelled as letters: a distinct key term), so
    no report is taken for another's outage and joined to it."""
    return f"Load report {n:05d} " + "".join(chr(ord("a") + int(d)) for d in f"{n:05d}")


def sender(n: int) -> str:
    return f"user{n}@tenant.example"


async def client(port: int, todo: asyncio.Queue[int], outcome: dict[int, str]) -> None:
    """Send from the queue on one connection; reconnect whenever the daemon went away."""
    raw = {
        n: email_bytes(
            subject=subject(n),
            to="support@localhost",
            sender=sender(n),
            message_id=f"<load-{n}@tenant.example>",
        )
        for n in range(MESSAGES)
    }
    while not todo.empty():
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10)
        try:
            await smtp.connect()
        except (OSError, aiosmtplib.SMTPException):
            await asyncio.sleep(0.05)  # the daemon is being restarted
            continue
        try:
            while not todo.empty():
                n = todo.get_nowait()
                outcome[n] = "dropped"  # until a reply says otherwise
                try:
                    await smtp.sendmail(sender(n), ["support@localhost"], raw[n])
                    outcome[n] = "250"
                except aiosmtplib.SMTPResponseException as exc:
                    outcome[n] = f"{exc.code // 100}xx"
                    if exc.code == 421:
                        break
        except (OSError, aiosmtplib.SMTPException):
            pass  # connection dropped: the message in flight stays "dropped"
        finally:
            smtp.close()


async def killer(d: Daemon, todo: asyncio.Queue[int], stop: asyncio.Event) -> int:
    """SIGKILL and restart each time another sixth of the messages has been taken by the
    clients (by progress, not by the clock: a faster daemon gets as many kills); returns
    the kill count."""
    kills = 0
    while kills < KILLS and not stop.is_set():
        if MESSAGES - todo.qsize() < (kills + 1) * MESSAGES // (KILLS + 1):
            await asyncio.sleep(0.005)
            continue
        await asyncio.to_thread(d.kill)
        kills += 1
        await asyncio.to_thread(d.start)
    return kills


def state(folder: Path) -> tuple[Counter[str], int, int, int]:
    conn = sqlite3.connect(folder / "state" / "gateway.sqlite3")
    try:
        titles = Counter(t for (t,) in conn.execute("SELECT title FROM incidents"))
        (pending_in,) = conn.execute("SELECT COUNT(*) FROM inbox WHERE state != 'done'").fetchone()
        (pending_out,) = conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE state != 'done'"
        ).fetchone()
        (inbox,) = conn.execute("SELECT COUNT(*) FROM inbox").fetchone()
        return titles, pending_in, pending_out, inbox
    finally:
        conn.close()


async def test_repeated_sigkill_under_load_loses_and_doubles_nothing(tmp_path: Path) -> None:
    """2,000 messages on 8 connections, the daemon SIGKILLed and restarted 5 times: every
    250 is one incident and one acknowledgement, no 4xx is processed."""
    # A load test, not a flood to hold back: the global rate limit is raised.
    d = Daemon(tmp_path, "[limits]\nglobal_per_minute = 100000\n")
    d.start()
    todo: asyncio.Queue[int] = asyncio.Queue()
    for n in range(MESSAGES):
        todo.put_nowait(n)
    outcome: dict[int, str] = {}
    stop = asyncio.Event()
    try:
        kill_task = asyncio.create_task(killer(d, todo, stop))
        await asyncio.gather(*(client(d.port, todo, outcome) for _ in range(CONNECTIONS)))
        stop.set()
        kills = await kill_task
        await asyncio.to_thread(d.kill)
        await asyncio.to_thread(d.start)  # a final clean start, then drain
        while True:
            titles, pending_in, pending_out, inbox = state(tmp_path)
            if not pending_in and not pending_out:
                break
            await asyncio.sleep(0.2)
        assert d.stop() == 0
    finally:
        d.kill()
    titles, _, _, inbox = state(tmp_path)
    counts = Counter(outcome.values())
    acked = [n for n, o in outcome.items() if o == "250"]
    refused = [n for n, o in outcome.items() if o.startswith("4")]
    dropped = [n for n, o in outcome.items() if o == "dropped"]
    acks = len(list((tmp_path / "state" / "outgoing-mail").glob("*.eml")))
    duplicates = sum(c - 1 for c in titles.values() if c > 1)
    print(
        f"\nFIGURE crash under load: sent={len(outcome)} got_250={counts['250']} "
        f"got_4xx={len(refused)} dropped={len(dropped)} "
        f"dropped_but_kept={sum(titles[subject(n)] for n in dropped)} inbox={inbox} "
        f"processed={sum(titles.values())} duplicates={duplicates} acks={acks} kills={kills}"
    )
    assert len(outcome) == MESSAGES and kills == KILLS
    assert not counts.keys() - {"250", "4xx", "dropped"}
    assert all(titles[subject(n)] == 1 for n in acked)
    assert all(titles[subject(n)] == 0 for n in refused)
    assert duplicates == 0 and inbox == sum(titles.values())
    assert acks == sum(titles.values())
