"""`migrate-state` copies a single-host SQLite state into PostgreSQL: incidents with their
timelines and reporters, the outbox with its states, thread keys (a reply still threads),
fired SLA items, held mail with its client, the per-address answer counts, the kv values
(cursors, tokens, the threading key) and the Matrix crypto store's files; a second copy into
a database that is no longer empty is refused."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from gateway.deliver.timeline import worded
from gateway.domain import Attempt, Plan, PlanContext, ThreadKeys
from gateway.store.folder import write_folder
from gateway.store.postgres.store import PostgresStore
from gateway.store.sqlite import SqliteStore
from tests.peers.postgres import PostgresServer
from tests.store_contract.builders import NOW, message, opened, work


async def _single_host_state(path: Path) -> None:
    store = SqliteStore(path)
    await store.open()
    try:
        first = await store.accept(message(1))
        second = await store.accept(message(2))
        await store.process(
            [work(first.inbox_id), work(second.inbox_id, lambda _c: opened("Disk full", "<b@x>"))],
            NOW,
        )
        [page, *_] = await store.due_outbox(NOW, 10)
        await store.settle_outbox([worded(Attempt(page, result={"provider": "local"}), NOW)], NOW)

        def hold(ctx: PlanContext) -> Plan:
            assert ctx.answers is not None and ctx.answers("bob@y", NOW, 3600.0, 1)
            return Plan(outcome="held: too many", held=True)

        held = await store.accept(replace(message(3), client="192.0.2.7"))
        await store.process([work(held.inbox_id, hold)], NOW)
        await store.accept(message(4))  # accepted, not processed yet
        await store.kv_set("threading_key", "k" * 32)
        await store.kv_set("imap:support", '{"uidvalidity": 7, "uid": 42}')
    finally:
        await store.close()


def _cli(config: Path, source: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "migrate-state",
            "--from-sqlite",
            str(source),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_a_single_host_state_moves_to_postgresql(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """Everything is copied with its ids; a reply finds its incident on PostgreSQL, the
    unprocessed message is still pending, new incidents continue the numbering; copying
    again is refused with exit 2."""
    source = tmp_path / "gateway.sqlite3"
    await _single_host_state(source)
    crypto = tmp_path / "matrix-crypto"
    crypto.mkdir(mode=0o700)
    (crypto / "@gw:m.example_DEV.trusted_devices").write_bytes(b"@eng:m.example DEV key\n")
    keys = sqlite3.connect(crypto / "@gw:m.example_DEV.db")
    keys.execute("CREATE TABLE accounts (pickle BLOB)")
    keys.execute("INSERT INTO accounts VALUES (?)", (b"encrypted pickle",))
    keys.commit()
    keys.close()
    dsn = postgres.new_database()
    (tmp_path / "pg-password").write_text("unused-with-trust\n")
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[state]\nbackend = "postgresql"\n[state.postgresql]\ndsn = "{dsn}"\n'
        'password = { file = "pg-password" }\n'
    )
    done = _cli(config, source)
    assert done.returncode == 0, done.stderr
    assert "incidents" in done.stdout and "matrix_crypto" in done.stdout
    assert "unused-with-trust" not in done.stdout + done.stderr

    old, new = SqliteStore(source), PostgresStore(dsn)
    await old.open()
    await new.open()
    try:
        assert await new.incidents() == await old.incidents()
        for iid in (1, 2):
            assert await new.incident(iid) == await old.incident(iid)
        assert await new.outbox_rows() == await old.outbox_rows()
        assert await new.queue_stats() == await old.queue_stats()
        assert await new.sla_snapshot() == await old.sla_snapshot()
        for key in ("threading_key", "imap:support"):
            assert await new.kv_get(key) == await old.kv_get(key)
        shared = await new.load_crypto_files()
        assert shared["@gw:m.example_DEV.trusted_devices"] == b"@eng:m.example DEV key\n"
        write_folder(tmp_path / "restored", shared)
        restored = sqlite3.connect(tmp_path / "restored" / "@gw:m.example_DEV.db")
        assert restored.execute("SELECT pickle FROM accounts").fetchall() == [
            (b"encrypted pickle",)
        ]
        restored.close()
        [pending] = await new.pending_inbox()
        assert pending == (await old.pending_inbox())[0]
        assert (await new.queue_stats()).inbox_held == 1
        seen: list[int | None] = []
        fits: list[bool] = []

        def reply(ctx: PlanContext) -> Plan:
            seen.append(ctx.thread.id if ctx.thread else None)
            assert ctx.answers is not None  # the answer recorded on SQLite still counts
            fits.append(ctx.answers("Bob@y", NOW, 3600.0, 1))
            return Plan(outcome="joined")

        answer = await new.accept(message(5))
        await new.process([work(answer.inbox_id, reply, ThreadKeys(("<b@x>",), "", "bob@y"))], NOW)
        assert seen == [2] and fits == [False]
        fresh = await new.accept(message(6))
        await new.process([work(fresh.inbox_id, lambda _c: opened("New", "<c@x>"))], NOW)
        assert [i.id for i in await new.incidents()] == [3, 2, 1]
        assert answer.inbox_id == 5 and fresh.inbox_id == 6
    finally:
        await old.close()
        await new.close()
    again = _cli(config, source)
    assert again.returncode == 2 and "not empty" in again.stderr
