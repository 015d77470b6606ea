"""The operator CLI on PostgreSQL: every state command (`incidents`, `outbox`, `held`,
`status`) prints what it prints on SQLite, tables and JSON alike, reads a running
deployment from the node's host or from another, takes no lease and leaves no session
behind, and says plainly when the database does not answer."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest

from gateway.cli.commands import main
from gateway.deliver.timeline import worded
from gateway.domain import Attempt, Plan
from gateway.ports import Store
from gateway.run.service import INSTANCE_KEY
from gateway.store.postgres.store import PostgresStore
from gateway.store.sqlite import SqliteStore
from tests.daemon import free_port
from tests.peers.postgres import PostgresServer
from tests.pg_nodes import all_processed, pg_node, query, scalar, send, wait_for
from tests.store_contract.builders import NOW, message, opened, work


async def _fill(store: Store) -> tuple[int, int]:
    """Two incidents (the first's page given up), one held message, the instance id;
    returns the dead entry's id and the held message's id."""
    await store.open()
    try:
        await store.process([work((await store.accept(message(1))).inbox_id)], NOW)
        second = await store.accept(message(2))
        slow = opened("Mail slow \x1b[2J", "<b@x>", "bob@y.example", ())
        await store.process([work(second.inbox_id, lambda _c: slow)], NOW)
        [entry] = await store.due_outbox(NOW, 10)
        await store.settle_outbox(
            [worded(Attempt(entry, error="HTTP 400: bad key", dead=True), NOW)], NOW
        )
        held = await store.accept(replace(message(3), client="192.0.2.7"))
        await store.process(
            [work(held.inbox_id, lambda _c: Plan(outcome="held: rate limit", held=True))], NOW
        )
        await store.kv_set(INSTANCE_KEY, "same-everywhere")
        return entry.id, held.inbox_id
    finally:
        await store.close()


def _cli(capsys: pytest.CaptureFixture[str], config: Path, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--config", str(config)])
    out, err = capsys.readouterr()
    return int(exit_.value.code or 0), out, err


def _configs(postgres: PostgresServer, tmp_path: Path) -> tuple[Path, Path, int, int]:
    sqlite_cfg, pg_cfg = tmp_path / "sqlite.toml", tmp_path / "pg.toml"
    sqlite_cfg.write_text(f'[state]\ndir = "{tmp_path / "var"}"\n')
    dsn = postgres.new_database()
    pg_cfg.write_text(f'[state]\nbackend = "postgresql"\n[state.postgresql]\ndsn = "{dsn}"\n')
    (tmp_path / "var").mkdir()
    on_sqlite = asyncio.run(_fill(SqliteStore(tmp_path / "var" / "gateway.sqlite3")))
    on_pg = asyncio.run(_fill(PostgresStore(dsn, pool_size=2)))
    assert on_sqlite == on_pg
    return sqlite_cfg, pg_cfg, *on_pg


READS = (
    ("incidents", "list"),
    ("incidents", "list", "--json"),
    ("incidents", "show", "INC-1"),
    ("incidents", "show", "inc-2", "--json"),
    ("incidents", "report", "INC-1"),
    ("incidents", "show", "INC-9"),
    ("outbox", "list"),
    ("outbox", "list", "--json", "--state", "dead"),
    ("outbox", "list", "--state", "pending"),
    ("held", "list"),
    ("held", "list", "--json"),
)


def test_every_state_command_prints_the_same_on_both_backends(
    postgres: PostgresServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same state written to SQLite and to PostgreSQL reads back through each command
    byte for byte alike (exit code, standard output and error); `outbox retry` and `held
    release` then act once on each."""
    sqlite_cfg, pg_cfg, dead, held = _configs(postgres, tmp_path)
    capsys.readouterr()  # what the stores logged while the state was written
    seen = {}
    for argv in READS:
        on_sqlite = _cli(capsys, sqlite_cfg, *argv)
        seen[argv] = _cli(capsys, pg_cfg, *argv)
        assert seen[argv] == on_sqlite, argv
    code, out, _ = seen[("incidents", "list")]
    assert code == 0 and out.splitlines()[1].startswith("INC-2") and "\\x1b[2J" in out
    [slow, site] = json.loads(seen[("incidents", "list", "--json")][1])
    assert (slow["reference"], site["reference"], site["reporters"][0]["address"]) == (
        "INC-2",
        "INC-1",
        "alice@x.example",
    )
    assert "dead_lettered" in seen[("incidents", "show", "INC-1")][1]
    assert json.loads(seen[("incidents", "show", "inc-2", "--json")][1])["clocks"]
    assert seen[("incidents", "report", "INC-1")][1].startswith("#")
    assert seen[("incidents", "show", "INC-9")][0] == 2
    [entry] = json.loads(seen[("outbox", "list", "--json", "--state", "dead")][1])
    assert (entry["id"], entry["last_error"]) == (dead, "HTTP 400: bad key")
    assert seen[("outbox", "list", "--state", "pending")][1].strip() == "No outbox entries."
    [item] = json.loads(seen[("held", "list", "--json")][1])
    assert (item["id"], item["client"], item["reason"]) == (held, "192.0.2.7", "rate limit")
    for cfg in (sqlite_cfg, pg_cfg):
        assert _cli(capsys, cfg, "outbox", "retry", str(dead))[0] == 0
        code, _, err = _cli(capsys, cfg, "outbox", "retry", str(dead))
        assert code == 2 and "is pending, not dead" in err
        assert _cli(capsys, cfg, "held", "release", str(held))[0] == 0
        code, _, err = _cli(capsys, cfg, "held", "release", str(held), "777")
        assert (code, err.count("not held"), "no inbox message 777" in err) == (2, 1, True)
        code, out, _ = _cli(capsys, cfg, "outbox", "list", "--json")
        assert [(e["id"], e["state"], e["attempts"]) for e in json.loads(out)] == [
            (dead, "pending", 0)
        ]


def test_the_cli_reads_a_running_deployment_and_takes_no_lease(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """With a daemon on PostgreSQL, `status`, `incidents list` and `outbox list` answer on
    its host and (all but `status`, which needs the local daemon) on an operator's host
    that shares only the database; the leases stay the daemon's and the CLI's read-only
    sessions are gone when it exits."""
    dsn = postgres.new_database()
    node = pg_node(tmp_path / "a", dsn, "a")
    elsewhere = tmp_path / "operator.toml"
    elsewhere.write_text(
        f'[state]\ndir = "{tmp_path / "empty"}"\nbackend = "postgresql"\n'
        f'[state.postgresql]\ndsn = "{dsn}"\n[http]\nport = {free_port()}\n'
    )
    try:
        node.start()
        assert send(node, 1)[0] == 250
        assert wait_for(lambda: all_processed(dsn) == 1)
        assert wait_for(lambda: scalar(dsn, "SELECT COUNT(*) FROM pages") == 1)
        leases = query(dsn, "SELECT name, holder, token FROM leases ORDER BY name")
        status = node.cli("status", "--json")
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["healthy"] and report["components"]["store"] == "connected"
        assert report["instance"] == scalar(
            dsn, "SELECT value FROM kv WHERE key = %s", INSTANCE_KEY
        )
        text = node.cli("status")
        assert text.returncode == 0 and text.stdout.startswith("chatops-gateway: healthy")
        for where in (node.cli, partial(_process, elsewhere)):
            listed = where("incidents", "list", "--json")
            assert listed.returncode == 0, listed.stderr
            [incident] = json.loads(listed.stdout)
            assert (incident["reference"], incident["pages_sent"]) == ("INC-1", 1)
            outbox = where("outbox", "list")
            assert outbox.returncode == 0 and "page.trigger" in outbox.stdout
        away = _process(elsewhere, "status")
        assert away.returncode == 1 and "not running" in away.stderr
        assert query(dsn, "SELECT name, holder, token FROM leases ORDER BY name") == leases
        assert all(holder.startswith("a:") for _, holder, _ in leases)
        assert not query(
            dsn,
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'chatops-gateway-cli'",
        )
    finally:
        node.stop()
        node.kill()


def _process(config: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """`python -m gateway ARGV --config CONFIG` as its own process."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *argv, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_an_unreachable_database_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With nothing answering at the configured PostgreSQL address, each state command
    exits 2 with one line naming the database, never a traceback or the driver's text."""
    cfg = tmp_path / "pg.toml"
    cfg.write_text(
        '[state]\nbackend = "postgresql"\n[state.postgresql]\n'
        f'dsn = "host=127.0.0.1 port={free_port()} user=postgres dbname=x"\n'
        "connect_timeout_s = 2\n"
    )
    for argv in (
        ("incidents", "list"),
        ("outbox", "list", "--json"),
        ("outbox", "retry", "1"),
        ("held", "release", "1"),
        ("status",),
    ):
        code, out, err = _cli(capsys, cfg, *argv)
        assert (code, out) == (2, ""), argv
        assert err == (
            "chatops-gateway: cannot reach the PostgreSQL database of [state.postgresql]\n"
        )
