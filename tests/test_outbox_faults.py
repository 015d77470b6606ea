"""Outbox under faulty peers: PagerDuty and the mail relay answer 5xx, 429 with Retry-After,
reset the connection, answer slowly or refuse for good. Nothing is lost, nothing is doubled,
and what cannot be delivered is dead-lettered on the timeline until an operator retries it."""

from __future__ import annotations

import email
import sqlite3
from collections.abc import AsyncIterator
from email import policy
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from structlog.testing import capture_logs

from gateway.app import App
from gateway.cli import views
from gateway.cli.commands import main
from gateway.store import schema
from gateway.store.outbox import outbox_rows
from tests.conftest import IN_HOURS, email_bytes, eventually, make_config, running, ticking
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.smtp_capture import DROP, SmtpCapture

ROUTING_KEY = "FaultRoutingKey0123456789abcdefA"
assert len(ROUTING_KEY) == 32


@pytest.fixture
async def pagerduty() -> AsyncIterator[FakePagerDuty]:
    async with FakePagerDuty(routing_keys={ROUTING_KEY}) as fake:
        yield fake


@pytest.fixture
async def relay() -> AsyncIterator[SmtpCapture]:
    async with SmtpCapture() as capture:
        yield capture


def config(state: Path, pd: FakePagerDuty, relay: SmtpCapture, **extra: Any) -> Any:
    return make_config(
        state,
        pagerduty={"routing_key": {"value": ROUTING_KEY}, "url": pd.url, "timeout_s": 0.5},
        mail_out={
            "mode": "smtp",
            "smtp": {"host": relay.host, "port": relay.port, "starttls": False, "timeout_s": 0.5},
        },
        outbox={"poll_interval_s": 0.1, **extra},
    )


async def report(app: App, n: int = 0) -> None:
    assert app.smtp_port is not None
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=app.smtp_port) as smtp:
        await smtp.sendmail(
            "alice@tenant.example",
            ["emergency@localhost"],
            email_bytes(subject=f"Site {n} is down", message_id=f"<fault-{n}@tenant.example>"),
        )


def outbox(state: Path) -> list[dict[str, Any]]:
    conn = schema.connect(str(state / "gateway.sqlite3"), readonly=True)
    try:
        return outbox_rows(conn)
    finally:
        conn.close()


def settled(state: Path) -> bool:
    rows = outbox(state)
    return bool(rows) and all(r["state"] != "pending" for r in rows)


def timeline(state: Path, number: int = 1) -> list[tuple[str, str]]:
    conn = sqlite3.connect(state / "gateway.sqlite3")
    try:
        return list(
            conn.execute("SELECT kind, text FROM timeline WHERE incident_id = ?", (number,))
        )
    finally:
        conn.close()


async def test_pagerduty_faults_page_exactly_once(
    tmp_path: Path, pagerduty: FakePagerDuty, relay: SmtpCapture
) -> None:
    """500, 429 with Retry-After, a reset and a slow answer, then success: one alert opened,
    every request with the same dedup_key, one page recorded."""
    pagerduty.fail_next(status=500)
    pagerduty.fail_next(status=429, retry_after="1")
    pagerduty.fail_next(reset=True)
    pagerduty.fail_next(delay_s=1.5)  # past our 0.5 s timeout; then the fake processes it
    cfg = config(tmp_path, pagerduty, relay)
    async with running(cfg, ticking(IN_HOURS)) as app:
        await report(app)
        await eventually(lambda: settled(tmp_path), timeout=30)
    [page] = [r for r in outbox(tmp_path) if r["kind"] == "page.trigger"]
    keys = {e["dedup_key"] for e in pagerduty.events}
    print(
        f"\nFIGURE pagerduty faults: requests={pagerduty.requests} "
        f"attempts={page['attempts']} events_processed={len(pagerduty.events)} "
        f"alerts_opened={pagerduty.alerts_opened} dedup_keys={len(keys)}"
    )
    # The reset and the timeout found PagerDuty away: parked, not counted as attempts.
    assert page["state"] == "done" and page["attempts"] == 3 and pagerduty.requests == 5
    assert pagerduty.alerts_opened == 1 and keys == {"INC-1"}
    assert [k for k, _ in timeline(tmp_path)].count("paged") == 1


async def test_relay_faults_deliver_each_email_once(
    tmp_path: Path, pagerduty: FakePagerDuty, relay: SmtpCapture
) -> None:
    """421 at MAIL, a reset, a slow relay, 451 at RCPT and 452 at DATA: the acknowledgement
    arrives once, with the Message-ID it was given on its first attempt."""
    relay.fail_next("421 4.3.2 shutting down", stage="MAIL")
    relay.fail_next(DROP, stage="MAIL")
    relay.fail_next(None, stage="MAIL", delay_s=1.5)
    relay.fail_next("451 4.3.0 try later", stage="RCPT")
    relay.fail_next("452 4.3.1 insufficient storage", stage="DATA")
    cfg = config(tmp_path, pagerduty, relay)
    async with running(cfg, ticking(IN_HOURS)) as app:
        await report(app)
        await eventually(lambda: settled(tmp_path), timeout=30)
    [mail] = [r for r in outbox(tmp_path) if r["kind"] == "mail.send"]
    ids = [
        email.message_from_bytes(m.content, policy=policy.default)["Message-ID"]
        for m in relay.messages
    ]
    print(
        f"\nFIGURE relay faults: attempts={mail['attempts']} delivered={len(relay.messages)} "
        f"distinct_message_ids={len(set(ids))}"
    )
    # The reset and the slow relay (timeout) found it away: parked, not counted as attempts.
    assert mail["state"] == "done" and mail["attempts"] == 4
    assert len(relay.messages) == 1 and relay.messages[0].rcpt_tos == ("alice@tenant.example",)


async def test_permanent_refusal_is_dead_lettered_then_retried(
    tmp_path: Path, pagerduty: FakePagerDuty, relay: SmtpCapture
) -> None:
    """A 400 from PagerDuty dead-letters the page at once: an error log, the timeline and
    `outbox list` say so; `outbox retry` sends it back and the running daemon pages once."""
    pagerduty.fail_next(status=400)
    cfg = config(tmp_path, pagerduty, relay)
    with capture_logs() as logs:
        async with running(cfg, ticking(IN_HOURS)) as app:
            await report(app)
            await eventually(lambda: settled(tmp_path), timeout=30)
            [dead] = [r for r in outbox(tmp_path) if r["state"] == "dead"]
            assert dead["kind"] == "page.trigger" and dead["attempts"] == 1
            assert "400" in dead["last_error"]
            kinds = [k for k, _ in timeline(tmp_path)]
            assert "dead_lettered" in kinds and "paged" not in kinds
            views.retry_outbox(cfg, dead["id"], IN_HOURS)
            await eventually(lambda: pagerduty.alerts_opened == 1 and settled(tmp_path))
    [page] = [r for r in outbox(tmp_path) if r["id"] == dead["id"]]
    assert page["state"] == "done" and pagerduty.alerts_opened == 1
    kinds = [k for k, _ in timeline(tmp_path)]
    assert kinds.count("paged") == 1 and "retry_requested" in kinds
    errors = [e for e in logs if e["event"] == "outbox.dead_lettered"]
    assert [e["log_level"] for e in errors] == ["error"]
    print(
        f"\nFIGURE dead letter: attempts_before_dead={dead['attempts']} "
        f"pages_after_retry={pagerduty.alerts_opened}"
    )


async def test_transient_failures_dead_letter_after_max_attempts(
    tmp_path: Path, pagerduty: FakePagerDuty, relay: SmtpCapture
) -> None:
    """A relay that keeps answering 451 gets exactly `max_attempts` tries, then the entry is
    dead and nothing was delivered."""
    relay.fail_next("451 4.3.0 try later", stage="RCPT", count=100)
    cfg = config(tmp_path, pagerduty, relay, max_attempts=4)
    async with running(cfg, ticking(IN_HOURS)) as app:
        await report(app)
        await eventually(lambda: settled(tmp_path), timeout=30)
    [mail] = [r for r in outbox(tmp_path) if r["kind"] == "mail.send"]
    assert mail["state"] == "dead" and mail["attempts"] == 4 and relay.messages == []
    assert any("after 4 attempts" in text for _, text in timeline(tmp_path))


def test_outbox_retry_refuses_unknown_and_live_entries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`outbox retry` exits 2 with a clear message for an unknown id or an entry that is not
    dead, and changes nothing."""
    cfgfile = tmp_path / "gateway.toml"
    cfgfile.write_text(f'[state]\ndir = "{tmp_path / "state"}"\n')
    (tmp_path / "state").mkdir()
    conn = schema.connect(str(tmp_path / "state" / "gateway.sqlite3"))
    schema.migrate(conn)
    conn.execute(
        "INSERT INTO outbox (created_at, kind, payload, next_attempt_at, state)"
        " VALUES ('x', 'mail.send', '{}', 'x', 'done')"
    )
    conn.close()
    for ident, message in (("99", "no outbox entry 99"), ("1", "outbox entry 1 is done")):
        with pytest.raises(SystemExit) as exit_:
            main(["outbox", "retry", ident, "--config", str(cfgfile)])
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err
