"""The daemon watched from outside and end to end: the heartbeat pings only while every link
is up (against a real Dovecot), the signed canary goes through intake, pipeline and outbox
without touching anyone, a forged canary is an ordinary report, and `notify-failure` pages
once per host and unit."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import aiosmtplib
import pytest
from structlog.testing import capture_logs

from gateway.config.model import parse_config
from gateway.domain import CANARY_OUTCOME, Channel, InboxRow, OutboxEntry, OutboxKind, Plan
from gateway.ports import TransientError
from gateway.run.canary import CanaryMonitor, canary_key, message, recogniser, verified_nonce
from gateway.store.sqlite import SqliteStore
from tests.conftest import (
    IN_HOURS,
    THREAD_KEY,
    email_bytes,
    eventually,
    make_config,
    running,
    ticking,
)
from tests.fakes.healthchecks import FakeMonitor
from tests.fakes.pagerduty import FakePagerDuty
from tests.peers.dovecot import Dovecot
from tests.store_contract.builders import message as message_n
from tests.store_contract.builders import work
from tests.test_http_status import get
from tests.test_store import NOW

KEY = canary_key("k" * 32)
ROUTING_KEY = "FailureKey0123456789abcdefABCDEF"


def count(state: Path, sql: str) -> int:
    conn = sqlite3.connect(f"file:{state / 'gateway.sqlite3'}?mode=ro", uri=True)
    try:
        value: int = conn.execute(sql).fetchone()[0]
        return value
    finally:
        conn.close()


def row(raw: bytes) -> InboxRow:
    return InboxRow(1, Channel.EMAIL, None, "gw@localhost", ("support@localhost",), NOW, raw)


def test_only_a_correctly_signed_recent_token_is_a_canary() -> None:
    """Our own token verifies; a wrong key, an altered nonce, an old stamp, or the header
    in the body (not the header block) does not."""
    now = time.time()
    raw = message(KEY, "a" * 32, "gw@localhost", "support@localhost", now)
    assert verified_nonce(KEY, raw, now) == "a" * 32
    assert verified_nonce(canary_key("x" * 32), raw, now) is None
    altered = raw.replace(b"Canary: " + b"a" * 32, b"Canary: " + b"b" * 32)
    assert altered != raw and verified_nonce(KEY, altered, now) is None
    assert verified_nonce(KEY, raw, now + 2 * 86400) is None
    head, _, _ = raw.partition(b"\r\n\r\n")
    token_line = next(line for line in head.split(b"\r\n") if line.startswith(b"X-Chatops"))
    in_body = email_bytes(body="quoted:\n" + token_line.decode())
    assert verified_nonce(KEY, in_body, now) is None
    plan = recogniser(KEY)(row(raw))
    assert plan is not None and [s.kind for s in plan.outbox] == [OutboxKind.CANARY]
    assert recogniser(KEY)(row(email_bytes())) is None


async def test_canary_that_does_not_come_through_fails() -> None:
    """A canary accepted by intake but never out of the outbox within the deadline makes the
    monitor `failed` with a reason; the next one that comes through makes it `ok`."""
    seen: list[bytes] = []
    monitor: CanaryMonitor

    async def swallow(_from: str, _to: str, raw: bytes) -> None:
        seen.append(raw)

    monitor = CanaryMonitor(KEY, swallow, "gw@localhost", "support@localhost", 60, 0.1)
    assert monitor.state == "waiting"
    assert await monitor.once() is False
    assert monitor.state == "failed" and "not through within" in monitor.problem()

    async def deliver(_from: str, _to: str, raw: bytes) -> None:
        nonce = verified_nonce(KEY, raw, time.time())
        entry = OutboxEntry(1, OutboxKind.CANARY, None, {"nonce": nonce}, 0)
        asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(monitor.handler(entry)))

    monitor._submit = deliver
    assert await monitor.once() is True and monitor.state == "ok" and monitor.problem() == ""


async def test_intake_refusing_the_canary_fails_it() -> None:
    """An intake that does not take the canary (SMTP listener gone) fails it at once."""

    async def refuse(_from: str, _to: str, _raw: bytes) -> None:
        raise TransientError("SMTP listener did not take it (SMTPConnectError)")

    monitor = CanaryMonitor(KEY, refuse, "gw@localhost", "support@localhost", 60, 5)
    assert await monitor.once() is False
    assert "did not take" in monitor.problem()


async def test_old_canaries_are_pruned_and_a_failed_prune_is_only_logged(
    tmp_path: Path,
) -> None:
    """The monitor deletes the canaries older than two days (one of three here) and keeps
    the rest; with the store gone, pruning logs a warning and the monitor carries on."""
    store = SqliteStore(tmp_path / "gateway.sqlite3")
    await store.open()
    for n, age_h in enumerate((72, 47, 1)):
        at = IN_HOURS - timedelta(hours=age_h)
        accepted = await store.accept(message_n(n, at=at))
        await store.process([work(accepted.inbox_id, lambda _c: Plan(outcome=CANARY_OUTCOME))], at)

    async def submit(_from: str, _to: str, _raw: bytes) -> None:
        return None

    monitor = CanaryMonitor(
        KEY,
        submit,
        "gw@localhost",
        "support@localhost",
        60,
        5,
        prune=store.prune_canaries,
        clock=lambda: IN_HOURS,
    )
    assert await monitor.prune_old() == 1
    assert await monitor.prune_old() == 0
    await store.close()
    with capture_logs() as logs:
        assert await monitor.prune_old() == 0
    assert [e["event"] for e in logs] == ["canary.prune_failed"]


async def test_canary_goes_end_to_end_and_touches_nobody(tmp_path: Path) -> None:
    """Through the real SMTP listener, the inbox worker and the outbox: the canary comes
    through every time, /healthz shows `canary: ok`, and there is no incident, no mail, no
    page and no entry but the canary's own."""
    cfg = make_config(tmp_path, canary={"interval_s": 0.2, "deadline_s": 10})
    async with running(cfg, ticking(IN_HOURS)) as app:
        assert app.canary is not None
        await eventually(lambda: app.canary is not None and app.canary.through >= 3, 20)
        _, _, body = await get(app.http_port, "/healthz")
    assert body["components"]["canary"] == "ok" and body["healthy"] is True
    assert count(tmp_path, "SELECT count(*) FROM incidents") == 0
    assert count(tmp_path, "SELECT count(*) FROM outbox WHERE kind != 'canary'") == 0
    assert count(tmp_path, "SELECT count(*) FROM inbox") >= 3
    assert not (tmp_path / "outgoing-mail").exists() or not any(
        (tmp_path / "outgoing-mail").iterdir()
    )


async def test_forged_canary_header_is_an_ordinary_report(tmp_path: Path) -> None:
    """A tenant's report carrying a made-up canary token (right shape, wrong signature) is
    processed as a report: an incident and an acknowledgement, not swallowed."""
    forged = "X-Chatops-Canary: " + "c" * 32 + f".{int(time.time())}." + "d" * 64
    raw = email_bytes(subject="Site down").replace(b"\nSubject:", f"\n{forged}\nSubject:".encode())
    cfg = make_config(tmp_path)
    async with running(cfg, ticking(IN_HOURS)) as app:
        assert app.smtp_port is not None
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=app.smtp_port) as smtp:
            await smtp.sendmail("alice@tenant.example", ["emergency@localhost"], raw)
        await eventually(lambda: count(tmp_path, "SELECT count(*) FROM incidents") == 1)
    assert count(tmp_path, "SELECT count(*) FROM outbox WHERE kind = 'canary'") == 0


@pytest.mark.peer
async def test_heartbeat_pings_only_while_every_link_is_up(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    """With an IMAP mailbox on a real Dovecot: success pings while connected; none while
    Dovecot is down (failure pings once it is down past the grace); success pings again
    after it is back."""
    async with FakeMonitor() as monitor:
        cfg = make_config(
            tmp_path,
            health={"down_grace_s": 1},
            heartbeat={
                "url": monitor.ping_url(),
                "fail_url": monitor.ping_url() + "/fail",
                "interval_s": 0.2,
                "method": "POST",
            },
            imap=[
                {
                    "name": "ops",
                    "host": "127.0.0.1",
                    "port": dovecot.port,
                    "tls": "none",
                    "allow_plaintext": True,
                    "user": "gw",
                    "password": {"value": "gw-secret"},
                    "backoff_max_s": 0.5,
                }
            ],
        )
        async with running(cfg, ticking(IN_HOURS)) as app:
            [box] = app.imap
            await eventually(lambda: "success" in monitor.kinds(), 20)
            await asyncio.to_thread(dovecot.stop)
            await eventually(lambda: box.state != "connected")
            down_at = time.monotonic() + 0.3  # a beat under way may still land
            await eventually(lambda: "fail" in monitor.kinds(down_at), 20)
            assert "success" not in monitor.kinds(down_at)
            fails = [b for _, k, _, b in monitor.pings if k == "fail"]
            assert any("imap:ops" in b for b in fails), fails
            await asyncio.to_thread(dovecot.start)
            await eventually(lambda: box.state == "connected", 30)
            back_at = time.monotonic()
            await eventually(lambda: "success" in monitor.kinds(back_at), 20)
        assert app.heartbeat is not None and app.heartbeat.pings >= 2


async def test_notify_failure_pages_once_per_host_and_unit(tmp_path: Path) -> None:
    """`chatops-gateway notify-failure` (the OnFailure= hook) sends a critical PagerDuty event
    with the same dedup_key each time, so a repeated failure is one alert; without anything
    to notify it exits 1 and says why."""
    async with FakePagerDuty(routing_keys={ROUTING_KEY}) as pd:
        config = tmp_path / "gateway.toml"
        config.write_text(
            f'[state]\ndir = "{tmp_path}"\n[pagerduty]\nurl = "{pd.url}"\n'
            f'routing_key = {{ value = "{ROUTING_KEY}" }}\n'
            f'[threading]\nkey = {{ value = "{THREAD_KEY}" }}\n'
        )
        script = Path(sys.executable).parent / "chatops-gateway"
        for _ in range(2):
            done = await asyncio.to_thread(
                subprocess.run,
                [
                    str(script),
                    "notify-failure",
                    "--config",
                    str(config),
                    "--unit",
                    "chatops-gateway.service",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            assert "notified: pagerduty" in done.stdout
    assert len(pd.events) == 2 and pd.alerts_opened == 1
    event = pd.events[0]
    assert event["payload"]["severity"] == "critical"
    assert "chatops-gateway.service" in event["dedup_key"]
    assert ROUTING_KEY not in done.stdout + done.stderr
    bare = tmp_path / "bare.toml"
    bare.write_text(f'[state]\ndir = "{tmp_path}"\n')
    done = await asyncio.to_thread(
        subprocess.run,
        [str(script), "notify-failure", "--config", str(bare)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1 and "nothing to notify" in done.stderr


def test_heartbeat_urls_must_be_https_except_on_loopback(tmp_path: Path) -> None:
    """A plain-HTTP ping URL to another host is refused (its token would travel in clear)."""
    with pytest.raises(ValueError, match="https"):
        parse_config(
            {"state": {"dir": str(tmp_path)}, "heartbeat": {"url": "http://hc-ping.example/abc"}}
        )
    ok = parse_config(
        {"state": {"dir": str(tmp_path)}, "heartbeat": {"url": "https://hc-ping.com/abc"}}
    )
    assert ok.heartbeat is not None
