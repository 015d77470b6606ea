"""The daemon on PostgreSQL: mail becomes an incident and a page; while the database is
down SMTP answers 451 4.3.0 and /healthz is unhealthy; across a restart of the server under
a trickle of mail, every message that got 250 is kept and processed once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.peers.postgres import PostgresServer
from tests.pg_nodes import all_processed, health, pg_node, scalar, send, stored_reports, wait_for


def test_a_report_becomes_a_page_on_postgresql(postgres: PostgresServer, tmp_path: Path) -> None:
    """A report over SMTP opens one incident and records one page in PostgreSQL; /healthz
    shows the store connected."""
    dsn = postgres.new_database()
    d = pg_node(tmp_path / "a", dsn, "a")
    try:
        d.start()
        assert send(d, 1)[0] == 250
        assert wait_for(lambda: scalar(dsn, "SELECT COUNT(*) FROM pages") == 1)
        report = wait_for(lambda: health(d))
        assert report is not None and report["components"]["store"] == "connected"
        assert report["healthy"] is True
    finally:
        d.stop()
        d.kill()
    assert scalar(dsn, "SELECT COUNT(*) FROM incidents") == 1


def test_database_down_means_451_and_unhealthy_then_recovers(
    postgres_own: PostgresServer, tmp_path: Path
) -> None:
    """With PostgreSQL stopped, SMTP answers 451 4.3.0 and /healthz says the store failed;
    once it is back, mail is taken again and health recovers."""
    dsn = postgres_own.new_database("gw")
    d = pg_node(tmp_path / "a", dsn, "a")
    try:
        d.start()
        assert send(d, 1)[0] == 250
        postgres_own.stop("fast")
        code, text = send(d, 2)
        assert (code, text[:5]) == (451, b"4.3.0")
        report = wait_for(lambda: (h := health(d)) and not h["healthy"] and h)
        assert report and report["components"]["store"] == "failed"
        postgres_own.start()
        assert wait_for(lambda: send(d, 3)[0] == 250, timeout=30, step=0.5)
        assert wait_for(lambda: (h := health(d)) and h["healthy"], timeout=30)
        assert wait_for(lambda: all_processed(dsn) == 2)
    finally:
        d.stop()
        d.kill()
    # the refused message was never stored
    assert 2 not in stored_reports(dsn)


def test_nothing_accepted_is_lost_across_a_restart_under_load(
    postgres_own: PostgresServer, tmp_path: Path
) -> None:
    """A report every 20 ms while PostgreSQL is crashed (immediate stop) and started again:
    some are refused with 451 during the gap, and every one that got 250 is stored once and
    processed; each incident is paged exactly once."""
    dsn = postgres_own.new_database("gw")
    d = pg_node(tmp_path / "a", dsn, "a")
    answers: dict[int, int] = {}
    done = threading.Event()

    def trickle() -> None:
        n = 0
        while not done.is_set():
            n += 1
            answers[n] = send(d, n)[0]
            time.sleep(0.02)

    try:
        d.start()
        sender = threading.Thread(target=trickle)
        sender.start()
        time.sleep(1.0)
        postgres_own.stop("immediate")
        # Longer than a connection may be waited for (connect_timeout_s = 2): a session in
        # the gap is answered 451, not kept waiting until the server is back.
        time.sleep(3.0)
        postgres_own.start()
        time.sleep(2.0)
        done.set()
        sender.join(30)
        accepted = sorted(n for n, code in answers.items() if code == 250)
        assert set(answers.values()) <= {250, 451}
        assert 451 in answers.values()
        assert wait_for(lambda: all_processed(dsn) >= len(accepted), timeout=60)
    finally:
        d.stop()
        d.kill()
    stored = stored_reports(dsn)
    assert set(accepted) <= set(stored)
    assert len(stored) == len(set(stored))
    assert all_processed(dsn) == len(stored)
    # each incident paged exactly once (reports of one outage join one incident)
    assert scalar(dsn, "SELECT COUNT(*) FROM pages WHERE action = 'trigger'") == scalar(
        dsn, "SELECT COUNT(*) FROM incidents"
    )
