"""`held list` and `held release` on PostgreSQL: a held message is listed with its client,
released exactly once (back to pending, without the limits), and a second release or an
unknown id is refused with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from gateway.domain import Plan
from gateway.store.postgres.store import PostgresStore
from tests.peers.postgres import PostgresServer
from tests.store_contract.builders import NOW, message, work


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "held", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_held_mail_is_listed_and_released_once_on_postgresql(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """The CLI reads the held message from PostgreSQL, releases it once, refuses again."""
    dsn = postgres.new_database()
    (tmp_path / "pg-password").write_text("unused-with-trust\n")
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[state]\nbackend = "postgresql"\n[state.postgresql]\ndsn = "{dsn}"\n'
        'password = { file = "pg-password" }\n'
    )
    store = PostgresStore(dsn)
    await store.open()
    try:
        held = await store.accept(replace(message(1), client="192.0.2.7"))
        await store.process(
            [work(held.inbox_id, lambda _c: Plan(outcome="held: rate limit", held=True))], NOW
        )
        assert await store.pending_inbox() == []
        listed = _cli(config, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        [item] = json.loads(listed.stdout)
        assert (item["id"], item["client"], item["subject"], item["reason"]) == (
            held.inbox_id,
            "192.0.2.7",
            "1",
            "rate limit",
        )
        released = _cli(config, "release", str(held.inbox_id))
        assert released.returncode == 0 and "released" in released.stdout
        [row] = await store.pending_inbox()
        assert row.id == held.inbox_id and row.released and row.client == "192.0.2.7"
        again = _cli(config, "release", str(held.inbox_id), "9999")
        assert again.returncode == 2
        assert "is pending, not held" in again.stderr and "no inbox message 9999" in again.stderr
        assert (await store.queue_stats()).inbox_held == 0
    finally:
        await store.close()
