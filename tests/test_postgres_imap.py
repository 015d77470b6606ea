"""IMAP intake on PostgreSQL with the database down: the watcher leaves mail unseen while
PostgreSQL is stopped (a commit that fails marks nothing), and once the database is back
every message is taken, processed exactly once, and marked seen. Real daemon, real
Dovecot, real PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import email_bytes
from tests.daemon import Daemon
from tests.peers.dovecot import Dovecot
from tests.peers.postgres import PostgresServer
from tests.pg_nodes import all_processed, health, pg_node, query, wait_for

pytestmark = pytest.mark.peer


def _imap(dv: Dovecot) -> str:
    return (
        f'[[imap]]\nname = "ops"\nhost = "127.0.0.1"\nport = {dv.port}\ntls = "none"\n'
        'allow_plaintext = true\nuser = "gw"\npassword = { value = "gw-secret" }\n'
        "backoff_max_s = 1.0\n"
    )


def _report(n: int) -> bytes:
    return email_bytes(
        subject=f"Outage {n}: service {n * 7919} down",
        sender=f"tenant{n}@tenant.example",
        message_id=f"<imap-{n}@tenant.example>",
    )


def _events(d: Daemon, name: str) -> list[dict[str, object]]:
    found = []
    for line in d.log.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == name:
            found.append(event)
    return found


def _stored(dsn: str) -> list[str]:
    """The Message-IDs of the stored reports, with repeats."""
    return [
        m
        for (m,) in query(
            dsn, "SELECT substring(convert_from(raw, 'UTF8') from '<(imap-[0-9]+)@') FROM inbox"
        )
    ]


def test_mail_stays_unseen_while_postgresql_is_down_then_is_taken_once(
    postgres_own: PostgresServer, dovecot: Dovecot, tmp_path: Path
) -> None:
    """Mail delivered right after PostgreSQL stops wakes the watcher, which cannot go on
    without the database, marks nothing and backs off (no crash logged); mail delivered
    after the watcher's lease lapsed is not touched either; after the restart both are
    stored once, processed once (one incident each) and marked seen."""
    dsn = postgres_own.new_database("gw")
    # A lease long enough that the watcher still holds it when the commit fails.
    d = pg_node(tmp_path / "a", dsn, "a", lease_s=10.0, extra=_imap(dovecot))
    try:
        d.start()
        assert wait_for(lambda: (h := health(d)) and h["components"].get("imap:ops") == "connected")
        dovecot.deliver("gw", _report(1))
        assert wait_for(lambda: all_processed(dsn) == 1)
        assert wait_for(lambda: dovecot.uids("gw", "UNSEEN") == [])
        postgres_own.stop("fast")
        dovecot.deliver("gw", _report(2))
        # woken by the new mail, the watcher cannot read its cursor or commit: it backs off
        # (a database that does not answer is a reason to retry, not a bug to report)
        assert wait_for(lambda: _events(d, "imap.backing_off"), 30)
        assert _events(d, "imap.crashed") == []
        assert wait_for(lambda: (h := health(d)) and not h["healthy"] and h, 30)
        dovecot.deliver("gw", _report(3))
        assert wait_for(lambda: _events(d, "lease.lost"), 30)
        assert dovecot.uids("gw", "UNSEEN") == [2, 3]
        postgres_own.start()
        assert wait_for(lambda: all_processed(dsn) == 3, 60)
        assert wait_for(lambda: dovecot.uids("gw", "UNSEEN") == [], 30)
        assert wait_for(lambda: (h := health(d)) and h["healthy"], 30)
        assert d.stop() == 0
    finally:
        d.stop()
        d.kill()
    assert sorted(_stored(dsn)) == ["imap-1", "imap-2", "imap-3"]
    assert query(dsn, "SELECT COUNT(*) FROM incidents")[0][0] == 3


def test_a_stop_while_postgresql_is_down_is_clean(
    postgres_own: PostgresServer, tmp_path: Path
) -> None:
    """SIGTERM with the database unreachable: the daemon cannot record more, says so in
    a warning and exits 0 (a requested stop); nothing on the way logs a traceback."""
    dsn = postgres_own.new_database("gw")
    d = pg_node(tmp_path / "a", dsn, "a", lease_s=10.0)
    try:
        d.start()
        assert wait_for(lambda: (h := health(d)) and h["healthy"], 30)
        postgres_own.stop("fast")
        assert wait_for(lambda: (h := health(d)) and not h["healthy"] and h, 30)
        assert d.stop() == 0
    finally:
        d.kill()
        postgres_own.start()
    assert _events(d, "gateway.drain_skipped") and _events(d, "gateway.stopped")
    assert "Traceback" not in d.log.read_text()  # a database away is not a bug
