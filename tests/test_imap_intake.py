"""IMAP intake end to end: a real Dovecot on loopback → the real App → inbox and incidents."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from adapters.imap_intake import ImapIntake
from gateway.app import App
from gateway.config.model import Config, parse_config
from gateway.plan.imapsync import Cursor, cursor_key
from tests.conftest import IN_HOURS, email_bytes, eventually, running, ticking
from tests.peers.dovecot import CuttingProxy, Dovecot

pytestmark = pytest.mark.peer


def imap_config(state: Path, dv: Dovecot, **box: Any) -> Config:
    """A daemon config (SMTP on a free port) with one IMAP mailbox on the test Dovecot."""
    section = {
        "name": "ops",
        "host": "127.0.0.1",
        "port": dv.port,
        "tls": "none",
        "allow_plaintext": True,
        "user": "gw",
        "password": {"value": "gw-secret"},
        "backoff_max_s": 1.0,
        **box,
    }
    return parse_config(
        {
            "state": {"dir": str(state)},
            "smtp": {"port": 0},
            # A burst of distinct reports here is the point, not a flood to hold back.
            "limits": {"global_per_minute": 10_000},
            "outbox": {"backoff_initial_s": 0.05, "backoff_max_s": 0.5, "drain_timeout_s": 5},
            "imap": [section],
        }
    )


def inbox(state: Path) -> list[tuple[str, str, str]]:
    """(mail_from, mailbox, state) of every inbox row."""
    conn = sqlite3.connect(f"file:{state / 'gateway.sqlite3'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT mail_from, mailbox, state FROM inbox ORDER BY id").fetchall()
    finally:
        conn.close()


def incident_count(state: Path) -> int:
    conn = sqlite3.connect(f"file:{state / 'gateway.sqlite3'}?mode=ro", uri=True)
    try:
        count: int = conn.execute("SELECT count(*) FROM incidents").fetchone()[0]
        return count
    finally:
        conn.close()


def processed(state: Path, n: int) -> bool:
    rows = inbox(state)
    return len(rows) == n and all(row[2] != "pending" for row in rows)


async def deliver(dv: Dovecot, raw: bytes) -> None:
    await asyncio.to_thread(dv.deliver, "gw", raw)


async def unseen(dv: Dovecot, folder: str = "INBOX") -> list[int]:
    return await asyncio.to_thread(dv.uids, "gw", "UNSEEN", folder)


async def inbox_folder_empty(dv: Dovecot) -> bool:
    return await asyncio.to_thread(dv.uids, "gw", "ALL") == []


def box_of(app: App) -> ImapIntake:
    [box] = app.imap
    return box


async def idling(box: ImapIntake) -> bool:
    client = box._client
    return client is not None and bool(client.protocol.has_pending_idle_command())


async def test_delivery_during_idle_reaches_the_pipeline(tmp_path: Path, dovecot: Dovecot) -> None:
    """Mail delivered while the intake idles becomes an incident and is marked \\Seen."""
    config = imap_config(tmp_path, dovecot)
    async with running(config, clock=ticking(IN_HOURS)) as app:
        box = box_of(app)
        await eventually(lambda: idling(box))
        assert box.state == "connected"
        await deliver(dovecot, email_bytes(message_id="<idle-1@tenant.example>"))
        await eventually(lambda: processed(tmp_path, 1) and incident_count(tmp_path) == 1)
    assert await unseen(dovecot) == []
    [(sender, mailbox, _)] = inbox(tmp_path)
    assert (sender, mailbox) == ("alice@tenant.example", "emergency")


async def test_mail_delivered_while_down_is_processed_on_start(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    """A restart catches up on everything that arrived while the daemon was stopped."""
    config = imap_config(tmp_path, dovecot)
    await deliver(dovecot, email_bytes(subject="before first start"))
    async with running(config, clock=ticking(IN_HOURS)) as app:
        await eventually(lambda: idling(box_of(app)))
        await eventually(lambda: processed(tmp_path, 1))
    for i in range(3):
        await deliver(
            dovecot, email_bytes(subject=f"while down {i}", sender=f"down{i}@tenant.example")
        )
    async with running(config, clock=ticking(IN_HOURS)):
        await eventually(lambda: processed(tmp_path, 4))
        await eventually(lambda: incident_count(tmp_path) == 4)
    assert await unseen(dovecot) == []


async def test_first_start_takes_unseen_mail_and_leaves_read_mail_alone(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    """Without a cursor, read mail is history: only unseen mail is processed."""
    await asyncio.to_thread(
        dovecot.append_many, "gw", [email_bytes(subject="old")] * 2, "INBOX", r"(\Seen)"
    )
    await deliver(dovecot, email_bytes(subject="unread backlog"))
    async with running(imap_config(tmp_path, dovecot), clock=ticking(IN_HOURS)) as app:
        await eventually(lambda: idling(box_of(app)))
        await eventually(lambda: processed(tmp_path, 1))
        await deliver(dovecot, email_bytes(subject="new"))
        await eventually(lambda: processed(tmp_path, 2))
    assert incident_count(tmp_path) == 2


async def test_dovecot_restart_mid_idle_reconnects(tmp_path: Path, dovecot: Dovecot) -> None:
    """A server restart during IDLE (BYE, then a closed connection) is followed by a
    reconnect, and mail delivered as the server comes back and after is processed."""
    async with running(imap_config(tmp_path, dovecot), clock=ticking(IN_HOURS)) as app:
        box = box_of(app)
        await eventually(lambda: idling(box))
        logins = box.logins
        await asyncio.to_thread(dovecot.stop)
        await eventually(lambda: box.state == "backing_off")
        await asyncio.to_thread(dovecot.start)
        # (dovecot-lda needs the running server's auth service: deliver once it is back.)
        await deliver(dovecot, email_bytes(subject="as the server comes back"))
        await eventually(lambda: idling(box), timeout=30)
        assert box.logins > logins and box.state == "connected"
        await deliver(dovecot, email_bytes(subject="after the restart"))
        await eventually(lambda: processed(tmp_path, 2))
    assert await unseen(dovecot) == []


async def test_connection_dropped_mid_fetch_loses_and_doubles_nothing(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    """A connection cut halfway through a FETCH answer: reconnect, fetch again, process once."""
    big = "All our apps return 502.\n" + "x" * 78 + "\n"
    async with CuttingProxy(dovecot.port) as proxy:
        config = imap_config(tmp_path, dovecot, port=proxy.port)
        async with running(config, clock=ticking(IN_HOURS)) as app:
            box = box_of(app)
            await eventually(lambda: idling(box))
            proxy.cut_next_fetch = True
            await deliver(dovecot, email_bytes(body=big * 3000))
            await eventually(lambda: proxy.cuts == 1)
            await eventually(lambda: processed(tmp_path, 1), timeout=30)
            await eventually(lambda: idling(box))
            assert box.logins == 2
    assert await unseen(dovecot) == []
    assert incident_count(tmp_path) == 1


async def test_uidvalidity_change_rescans_without_doubles(tmp_path: Path, dovecot: Dovecot) -> None:
    """After a UIDVALIDITY change the folder is re-scanned: processed mail is recognised by
    its Message-ID, mail that was committed but never marked, and new mail, are not skipped."""
    config = imap_config(tmp_path, dovecot)
    async with running(config, clock=ticking(IN_HOURS)) as app:
        await eventually(lambda: idling(box_of(app)))
        for i in range(3):
            await deliver(
                dovecot, email_bytes(subject=f"before {i}", sender=f"b{i}@tenant.example")
            )
        await eventually(lambda: processed(tmp_path, 3))
    first = dovecot.uids("gw", "ALL")
    # As if the gateway had committed the first message but crashed before marking it.
    await asyncio.to_thread(
        dovecot.doveadm,
        "flags",
        "remove",
        "-u",
        "gw",
        r"\Seen",
        "mailbox",
        "INBOX",
        "uid",
        str(first[0]),
    )
    await asyncio.to_thread(dovecot.set_uidvalidity, "gw", 424242)
    await deliver(dovecot, email_bytes(subject="after the change", sender="a@tenant.example"))
    async with running(config, clock=ticking(IN_HOURS)) as app:
        await eventually(lambda: processed(tmp_path, 4))
        await eventually(lambda: idling(box_of(app)))
        await deliver(dovecot, email_bytes(subject="later", sender="l@tenant.example"))
        await eventually(lambda: processed(tmp_path, 5))
    assert incident_count(tmp_path) == 5
    assert await unseen(dovecot) == []
    conn = sqlite3.connect(f"file:{tmp_path / 'gateway.sqlite3'}?mode=ro", uri=True)
    try:
        stored = conn.execute(
            "SELECT value FROM kv WHERE key = ?", (cursor_key("ops", "INBOX"),)
        ).fetchone()[0]
    finally:
        conn.close()
    cursor = Cursor.loads(stored)
    assert cursor is not None and cursor.uidvalidity == 424242


async def test_wrong_password_parks_in_bad_credentials(tmp_path: Path, dovecot: Dovecot) -> None:
    """Refused credentials: state `bad_credentials`, one LOGIN, no retry loop."""
    config = imap_config(tmp_path, dovecot, password={"value": "not-the-password"})
    async with running(config, clock=ticking(IN_HOURS)) as app:
        box = box_of(app)
        await eventually(lambda: box.state == "bad_credentials")
        await asyncio.sleep(1.0)  # a tight loop would log in many times meanwhile
        assert box.logins == 1
    # Dovecot logs the failed session when it ends: exactly one, with one attempt.
    await eventually(lambda: dovecot.log_count(r"auth failed") == 1)
    assert dovecot.log_count(r"auth failed, 1 attempts") == 1


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_burst_of_500_is_processed_once_each(tmp_path: Path, dovecot: Dovecot) -> None:
    """500 messages appended in a burst: 500 inbox entries, none doubled, none left unseen."""
    config = imap_config(tmp_path, dovecot, mailbox="support")
    messages = [
        email_bytes(
            subject=f"question {i}", sender=f"user{i}@tenant.example", to="support@localhost"
        )
        for i in range(500)
    ]
    async with running(config, clock=ticking(IN_HOURS)) as app:
        await eventually(lambda: idling(box_of(app)))
        await asyncio.to_thread(dovecot.append_many, "gw", messages)
        await eventually(lambda: processed(tmp_path, 500), timeout=180)
    rows = inbox(tmp_path)
    assert len({row[0] for row in rows}) == 500
    assert await unseen(dovecot) == []
    assert incident_count(tmp_path) == 500


async def test_processed_folder_receives_processed_mail(tmp_path: Path, dovecot: Dovecot) -> None:
    """With `processed_folder`, processed mail is moved there and the folder stays empty."""
    config = imap_config(tmp_path, dovecot, processed_folder="Gateway Done")
    async with running(config, clock=ticking(IN_HOURS)) as app:
        await eventually(lambda: idling(box_of(app)))
        await deliver(dovecot, email_bytes())
        await eventually(lambda: processed(tmp_path, 1))
    assert await asyncio.to_thread(dovecot.uids, "gw", "ALL") == []
    assert len(await asyncio.to_thread(dovecot.uids, "gw", "ALL", '"Gateway Done"')) == 1


async def test_server_without_idle_is_polled(tmp_path: Path, dovecot: Dovecot) -> None:
    """A server that does not offer IDLE is polled every `poll_interval_s`: mail delivered
    while the intake waits is processed, and IDLE is never sent."""
    await asyncio.to_thread(dovecot.without_capabilities, "IDLE")
    config = imap_config(tmp_path, dovecot, poll_interval_s=0.2)

    async def done_without_idling(n: int) -> bool:
        assert not await idling(box), "IDLE sent to a server without IDLE"
        return processed(tmp_path, n)

    with capture_logs() as logs:
        async with running(config, clock=ticking(IN_HOURS)) as app:
            box = box_of(app)
            await eventually(lambda: box.state == "connected")
            for i in range(2):
                await deliver(
                    dovecot, email_bytes(subject=f"polled {i}", sender=f"p{i}@tenant.example")
                )
                await eventually(lambda i=i: done_without_idling(i + 1))
    [connected] = [e for e in logs if e["event"] == "imap.connected"]
    assert connected["idle"] is False
    assert await unseen(dovecot) == []
    assert incident_count(tmp_path) == 2


async def test_processed_folder_without_move_copies_flags_and_expunges(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    """Without MOVE, processed mail is copied to `processed_folder`, flagged \\Deleted and
    expunged by UID (UIDPLUS): the folder ends empty, the copy is whole and not deleted."""
    await asyncio.to_thread(dovecot.without_capabilities, "MOVE")
    config = imap_config(tmp_path, dovecot, processed_folder="Gateway Done")
    async with running(config, clock=ticking(IN_HOURS)) as app:
        box = box_of(app)
        await eventually(lambda: idling(box))
        assert box._client is not None and not box._client.has_capability("MOVE")
        await deliver(dovecot, email_bytes(message_id="<nomove-1@tenant.example>"))
        await eventually(lambda: processed(tmp_path, 1))
        await eventually(lambda: inbox_folder_empty(dovecot))
    done = '"Gateway Done"'
    assert len(await asyncio.to_thread(dovecot.uids, "gw", "UNDELETED", done)) == 1
    assert await asyncio.to_thread(dovecot.uids, "gw", "DELETED", done) == []
    assert incident_count(tmp_path) == 1


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
async def test_tls_modes_verify_the_server(tmp_path: Path, dovecot: Dovecot, tls: str) -> None:
    """Implicit TLS and STARTTLS both work against a server whose CA is configured."""
    port = dovecot.tls_port if tls == "implicit" else dovecot.port
    config = imap_config(
        tmp_path, dovecot, tls=tls, port=port, allow_plaintext=False, ca_file=str(dovecot.cert)
    )
    async with running(config, clock=ticking(IN_HOURS)) as app:
        await eventually(lambda: idling(box_of(app)))
        await deliver(dovecot, email_bytes())
        await eventually(lambda: processed(tmp_path, 1))


async def test_untrusted_certificate_is_refused(tmp_path: Path, dovecot: Dovecot) -> None:
    """Without the server's CA the TLS handshake fails: the intake backs off, never logs in."""
    config = imap_config(
        tmp_path, dovecot, tls="implicit", port=dovecot.tls_port, allow_plaintext=False
    )
    async with running(config, clock=ticking(IN_HOURS)) as app:
        box = box_of(app)
        await eventually(lambda: box.state == "backing_off")
        assert box.logins == 0
