"""Engineers' Matrix commands on two nodes while the lease holder is SIGKILLed: `!ack` and
`!update`, sent as the node that holds the Matrix and inbox leases is killed (or applied by
it just before it died, with its sync cursor left behind them), and `!resolve`, sent while
no node syncs, are each carried out exactly once by the node that takes over (same bot
device, same `next_batch`, from the shared database). Real Synapse, real PostgreSQL, two
real daemons; PagerDuty is the local fake."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.daemon import Daemon
from tests.fakes.pagerduty import FakePagerDuty
from tests.peers.postgres import PostgresServer
from tests.peers.synapse import Synapse
from tests.pg_nodes import health, pg_node, query, send, wait_for
from tests.test_ha import _pd, emails

pytestmark = pytest.mark.peer

LEASES = ("inbox", "sla", "matrix")


def _matrix(synapse: Synapse, bot: str, password: str, room: str, engineer: str) -> str:
    return (
        f'[matrix]\nhomeserver = "{synapse.url}"\nuser_id = "{bot}"\n'
        f'password = {{ value = "{password}" }}\nincidents_room = "{room}"\n'
        f'engineers = ["{engineer}"]\nsync_timeout_s = 1\nbackoff_max_s = 1\n'
    )


def _holders(dsn: str) -> dict[str, str]:
    try:
        rows = query(dsn, "SELECT name, holder FROM leases WHERE expires_at > clock_timestamp()")
    except psycopg.errors.UndefinedTable:
        return {}
    return {name: holder.split(":")[0] for name, holder in rows}


def _notices(synapse: Synapse, token: str, room: str, bot: str) -> list[str]:
    return [
        e["content"].get("body", "")
        for e in synapse.messages(token, room, limit=200)
        if e["sender"] == bot and e.get("content", {}).get("msgtype") == "m.notice"
    ]


def _with(notices: list[str], text: str) -> list[str]:
    return [n for n in notices if text in n]


def _timeline(dsn: str) -> Counter[str]:
    return Counter(k for (k,) in query(dsn, "SELECT kind FROM timeline WHERE incident_id = 1"))


async def _in(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


async def test_commands_around_a_sigkill_are_carried_out_once(
    postgres: PostgresServer, synapse: Synapse, tmp_path: Path
) -> None:
    """`!ack` and `!update` are sent and the Matrix node killed at once, `!resolve` while
    nobody syncs: the other node takes the Matrix lease over and each command is applied
    once (one timeline line, one answer in the room, one PagerDuty acknowledge and resolve
    recorded, the alert resolved), the reporter gets one update and one resolution."""

    async def kill_at_once(a: Daemon, _dsn: str, _before: str) -> None:
        a.kill()

    await _scenario(postgres, synapse, tmp_path, kill_at_once)


async def test_a_batch_replayed_after_a_sigkill_applies_no_command_twice(
    postgres: PostgresServer, synapse: Synapse, tmp_path: Path
) -> None:
    """The Matrix node stored and applied `!ack` and `!update`, then died before its
    `next_batch` moved past them (the shared `kv` is set back to the token from before
    them, as such a crash leaves it): the node taking over syncs from there, gets both
    events again, and applies neither twice; `!resolve`, sent meanwhile, is applied once."""

    async def kill_before_the_cursor_moved(a: Daemon, dsn: str, before: str) -> None:
        assert await _in(wait_for, lambda: _timeline(dsn)["command.update"], 30)
        a.kill()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE kv SET value = %s WHERE key = 'matrix.next_batch'", (before,))

    await _scenario(postgres, synapse, tmp_path, kill_before_the_cursor_moved)


Kill = Callable[[Daemon, str, str], Awaitable[None]]


async def _scenario(postgres: PostgresServer, synapse: Synapse, tmp_path: Path, kill: Kill) -> None:
    """Two nodes, a holding every lease; a report is announced; the engineer sends `!ack`
    and `!update` in its thread; `kill(a, dsn, next_batch before the commands)`; then
    `!resolve`; b takes over: every command is carried out once."""
    bot, _, _ = synapse.register("gateway", password="bot-password-1")
    eng, eng_token, _ = synapse.register("engineer")
    room = synapse.create_room(eng_token, invite=[bot], name="incidents")
    dsn = postgres.new_database()
    async with FakePagerDuty() as pd:
        extra = _pd(pd.url) + _matrix(synapse, bot, "bot-password-1", room, eng)
        a = pg_node(tmp_path / "a", dsn, "a", lease_s=3.0, extra=extra)
        b = pg_node(tmp_path / "b", dsn, "b", lease_s=3.0, extra=extra)
        try:
            await _in(a.start)
            assert await _in(wait_for, lambda: all(_holders(dsn).get(n) == "a" for n in LEASES))
            assert await _in(wait_for, lambda: (h := health(a)) and h["healthy"])
            await _in(b.start)
            assert (await _in(send, b, 1, "Checkout is down"))[0] == 250
            root = await _in(wait_for, lambda: _root(synapse, eng_token, room, bot), 30)
            assert root, "no announcement"
            before = await _in(wait_for, lambda: _next_batch(dsn), 30)
            synapse.send_text(eng_token, room, "!ack", thread_root=root)
            synapse.send_text(eng_token, room, "!update Rolling back.", thread_root=root)
            await kill(a, dsn, before)
            synapse.send_text(eng_token, room, "!resolve Rolled back.", thread_root=root)
            assert await _in(wait_for, lambda: all(_holders(dsn).get(n) == "b" for n in LEASES), 30)
            assert await _in(
                wait_for, lambda: _timeline(dsn)["command.resolve"] and not _pending(dsn), 60
            )
            notices = await _in(
                wait_for,
                lambda: (
                    (n := _notices(synapse, eng_token, room, bot)) and _with(n, "resolved;") and n
                ),
                30,
            )
            assert await _in(b.stop) == 0
        finally:
            a.kill()
            b.kill()
        timeline = _timeline(dsn)
        assert [timeline[f"command.{c}"] for c in ("ack", "update", "resolve")] == [1, 1, 1]
        assert len(_with(notices, "acknowledged by")) == 1
        assert len(_with(notices, "Update sent to 1 reporter")) == 1
        assert len(_with(notices, "resolved; 1 reporter(s) told")) == 1
        assert len(_with(notices, "INC-1 · P1")) == 1
        actions = Counter(a for (a,) in query(dsn, "SELECT action FROM pages"))
        assert actions == {"trigger": 1, "acknowledge": 1, "resolve": 1}
        assert pd.alerts == {"INC-1": "resolved"} and pd.alerts_opened == 1
        # The reporter hears each once (a repeat could only be a mail in flight when the
        # node died, sent again with the same Message-ID).
        purposes = Counter(_purpose(m) for m in set(emails(a, b)))
        assert purposes["update"] == 1 and purposes["resolution"] == 1


def _next_batch(dsn: str) -> str | None:
    rows = query(dsn, "SELECT value FROM kv WHERE key = 'matrix.next_batch'")
    return str(rows[0][0]) if rows else None


def _root(synapse: Synapse, token: str, room: str, bot: str) -> str | None:
    for e in synapse.messages(token, room, limit=50):
        body = e.get("content", {}).get("body", "")
        if e["sender"] == bot and "INC-1 · P1" in body:
            return str(e["event_id"])
    return None


def _pending(dsn: str) -> bool:
    return bool(
        query(dsn, "SELECT 1 FROM outbox WHERE state = 'pending'")
        or query(dsn, "SELECT 1 FROM inbox WHERE state = 'pending'")
    )


def _purpose(message_id: str) -> str:
    """What one of our Message-IDs was sent for (`<inc1.update.…>` and the like)."""
    return message_id.strip("<>").split(".")[1]
