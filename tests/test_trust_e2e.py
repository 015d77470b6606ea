"""Nobody let in, end to end over real SMTP: unverified senders, forged thread references,
storms of reports, rate limits, loops, and a ping-pong against a naive auto-responder."""

from __future__ import annotations

import asyncio
import email
import sqlite3
from email import policy
from pathlib import Path
from typing import Any

import aiosmtplib

from gateway.plan.relay import to_reporters
from gateway.plan.replies import Sender
from gateway.store import schema
from gateway.store.incidents import list_incidents, load_incident
from tests.conftest import IN_HOURS, email_bytes, eventually, make_config, running, ticking
from tests.fakes.smtp_capture import SmtpCapture


async def send(port: int, raw: bytes, sender: str) -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
        errors, _ = await client.sendmail(sender, ["emergency@localhost"], raw)
    assert not errors


def read(state: Path, sql: str) -> list[Any]:
    conn = schema.connect(str(state / "gateway.sqlite3"), readonly=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def incidents(state: Path) -> list[Any]:
    conn = schema.connect(str(state / "gateway.sqlite3"), readonly=True)
    try:
        return [load_incident(conn, i.id) for i in reversed(list_incidents(conn))]
    finally:
        conn.close()


def settled(state: Path) -> bool:
    try:
        return not read(
            state,
            "SELECT 1 FROM inbox WHERE state = 'pending' UNION ALL "
            "SELECT 1 FROM outbox WHERE state = 'pending'",
        )
    except sqlite3.OperationalError:
        return False


def mails(state: Path) -> list[email.message.EmailMessage]:
    return [
        email.message_from_bytes(p.read_bytes(), policy=policy.default)  # type: ignore[misc]
        for p in sorted((state / "outgoing-mail").glob("*.eml"))
    ]


async def test_unknown_sender_gets_an_unverified_ticket_not_a_page(tmp_path: Path) -> None:
    """A stranger's 'site down' is P1 but pages nobody: a ticket flagged, an honest ack."""
    async with running(make_config(tmp_path), ticking(IN_HOURS)) as app:
        await send(
            app.smtp_port or 0, email_bytes(sender="mallory@evil.example"), "mallory@evil.example"
        )
        await eventually(lambda: settled(tmp_path) and mails(tmp_path))
    [incident] = incidents(tmp_path)
    assert incident.priority == "P1" and incident.pages_sent == 0
    assert "unverified sender" in incident.flags
    assert any(e.kind == "unverified" and "!page INC-1" in e.text for e in incident.timeline)
    assert read(tmp_path, "SELECT COUNT(*) FROM tickets") == [(1,)]
    [ack] = mails(tmp_path)
    assert "engineer will check it before paging" in ack.get_content()


async def test_forged_references_do_not_attach_but_a_genuine_reply_does(tmp_path: Path) -> None:
    """A stranger guessing [INC-1] and our old-style id, or quoting the reporter's own id,
    opens their own ticket; the reporter's reply to our signed Message-ID joins INC-1."""
    async with running(make_config(tmp_path), ticking(IN_HOURS)) as app:
        port = app.smtp_port or 0
        await send(port, email_bytes(message_id="<orig@tenant.example>"), "alice@tenant.example")
        await eventually(lambda: settled(tmp_path) and mails(tmp_path))
        [ack] = mails(tmp_path)
        forged = email_bytes(
            subject="Re: [INC-1] Our site is down",
            body="Ignore this, fixed",
            sender="mallory@evil.example",
            message_id="<f1@evil.example>",
            In_Reply_To="<inc-1.1.ack@localhost>",
            References=f"<orig@tenant.example> <inc1.ack.1.{'a' * 26}@localhost>",
        )
        await send(port, forged, "mallory@evil.example")
        genuine = email_bytes(
            subject="Re: [INC-1] Our site is down",
            body="Now 503 as well",
            message_id="<r2@tenant.example>",
            In_Reply_To=ack["Message-ID"],
            References=f"<orig@tenant.example> {ack['Message-ID']}",
        )
        await send(port, genuine, "alice@tenant.example")
        await eventually(lambda: settled(tmp_path) and len(incidents(tmp_path)) == 2)
    first, second = incidents(tmp_path)
    assert [r.address for r in first.reporters] == ["alice@tenant.example"]
    assert any("Now 503 as well" in e.text for e in first.timeline)
    assert not any("fixed" in e.text for e in first.timeline)
    assert [r.address for r in second.reporters] == ["mallory@evil.example"]
    assert second.pages_sent == 0 and "unverified sender" in second.flags


async def test_storm_of_fifty_reporters_is_one_incident_one_page(tmp_path: Path) -> None:
    """50 tenants report the same outage: 1 incident, 1 page, 50 acknowledgements, and an
    update would reach all 50."""
    subjects = ["Our site is down", "Site down", "site is DOWN", "Site down again", "Site is down!"]
    async with running(make_config(tmp_path), ticking(IN_HOURS)) as app:
        for n in range(50):
            sender = f"user{n}@tenant.example"
            await send(
                app.smtp_port or 0, email_bytes(subject=subjects[n % 5], sender=sender), sender
            )
        await eventually(lambda: settled(tmp_path) and len(mails(tmp_path)) >= 50, timeout=60)
    [incident] = incidents(tmp_path)
    assert incident.pages_sent == 1 and len(incident.reporters) == 50
    acks = mails(tmp_path)
    assert len(acks) == 50 and len({m["To"] for m in acks}) == 50
    assert all("[INC-1]" in m["Subject"] for m in acks)
    update = to_reporters(
        incident,
        "Fixed.",
        "update",
        "u1",
        Sender("emergency@localhost", "S", "localhost", "loop"),
        IN_HOURS,
    )
    assert len(update) == 50
    print(
        f"\nstorm: 50 reports -> {len(incidents(tmp_path))} incident, "
        f"{incident.pages_sent} page, {len(acks)} acknowledgements"
    )


async def test_rate_limit_and_loop_hold_mail_without_answering(tmp_path: Path) -> None:
    """Past the per-sender limit mail is held; the same body three times is a loop: held,
    recorded, never answered."""
    config = make_config(tmp_path, limits={"per_sender": 4, "loop_threshold": 3})
    async with running(config, ticking(IN_HOURS)) as app:
        port = app.smtp_port or 0
        for n in range(3):  # a loop: same sender, same text
            await send(
                port,
                email_bytes(
                    body="Same text every time",
                    sender="bob@tenant.example",
                    subject=f"Loop test {n}",
                ),
                "bob@tenant.example",
            )
        for n in range(6):  # a flood of different mails
            await send(
                port,
                email_bytes(
                    body=f"Report {n}", subject=f"Problem {n}", sender="carol@tenant.example"
                ),
                "carol@tenant.example",
            )
        await eventually(lambda: settled(tmp_path))
    outcomes = [o for (o,) in read(tmp_path, "SELECT outcome FROM inbox ORDER BY id")]
    assert outcomes[0].startswith("opened INC-1") and outcomes[1] == "joined INC-1"
    assert outcomes[2].startswith("held: mail loop")
    assert outcomes[3].startswith("opened INC-2")
    assert outcomes[4:7] == ["joined INC-2"] * 3  # carol's own further reports
    assert [o.startswith("held: rate limit") for o in outcomes[7:]] == [True, True]
    assert "rate limit" in outcomes[-1]
    assert len(mails(tmp_path)) == 2  # one acknowledgement each for bob and carol


async def _ping_pong(tmp_path: Path, threaded: bool) -> tuple[int, int]:
    """Alice's mailbox answers every mail the gateway relays, without Auto-Submitted."""
    async with SmtpCapture() as relay:
        config = make_config(
            tmp_path,
            mail_out={
                "mode": "smtp",
                "smtp": {"host": "127.0.0.1", "port": relay.port, "starttls": False},
            },
        )
        sent_by_responder = 0
        async with running(config, ticking(IN_HOURS)) as app:
            port = app.smtp_port or 0
            await send(port, email_bytes(), "alice@tenant.example")
            answered = 0
            for _ in range(20):  # bounded: a real loop would go on for ever
                await eventually(lambda: settled(tmp_path))
                if answered == len(relay.messages):
                    break
                for captured in relay.messages[answered:]:
                    incoming = email.message_from_bytes(captured.content, policy=policy.default)
                    reply = email_bytes(
                        subject=f"Re: {incoming['Subject']}" if threaded else "Message received",
                        body="Thank you for your email. I am away and will reply on my return.",
                        **({"In_Reply_To": incoming["Message-ID"]} if threaded else {}),
                    )
                    await send(port, reply, "alice@tenant.example")
                    sent_by_responder += 1
                answered = len(relay.messages)
        return len(relay.messages), sent_by_responder


async def test_ping_pong_with_a_naive_auto_responder_ends_at_once(tmp_path: Path) -> None:
    """An auto-responder that keeps threading headers gets the one acknowledgement and no
    further reply; one that drops them and writes its own subject gets one more, then none."""
    for threaded in (True, False):
        state = tmp_path / ("threaded" if threaded else "unthreaded")
        gateway_sent, responder_sent = await _ping_pong(state, threaded)
        print(
            f"\nping-pong ({'threaded' if threaded else 'no threading headers'}): "
            f"gateway sent {gateway_sent}, responder sent {responder_sent}, "
            f"extra replies {gateway_sent - 1}"
        )
        # Without threading headers and with a subject of its own, the first auto-reply
        # looks like a new report and is acknowledged once; the next is joined, not answered.
        assert gateway_sent == (1 if threaded else 2)
        assert responder_sent == gateway_sent
        assert sum(i.pages_sent for i in incidents(state)) == gateway_sent
        await asyncio.sleep(0)


async def test_global_rate_limit_holds_mail_from_everyone_past_the_minute_limit(
    tmp_path: Path,
) -> None:
    """Past `global_per_minute` unverified messages in a minute, unverified mail from any
    sender is held (kept, never answered, never paged); once the minute has passed mail is
    processed again."""
    from tests.test_sla_e2e import JumpingClock  # noqa: PLC0415  (a clock, not the Matrix set)

    clock = JumpingClock(IN_HOURS)
    config = make_config(tmp_path, limits={"global_per_minute": 3, "per_sender": 100})
    async with running(config, clock) as app:
        port = app.smtp_port or 0
        problems = [
            "Login page returns 500",
            "Database connection refused",
            "Deploys fail with a timeout",
            "Certificate expired on the API",
            "Logs missing since this morning",
        ]
        for n, subject in enumerate(problems):  # five tenants, five problems, one minute
            sender = f"user{n}@stranger.example"
            await send(
                port, email_bytes(subject=subject, body=f"Report {n}", sender=sender), sender
            )
        await eventually(lambda: settled(tmp_path) and len(mails(tmp_path)) == 3)
        clock.jump(app, seconds=61)
        await send(
            port,
            email_bytes(
                subject="Queue workers stopped", body="Later", sender="late@stranger.example"
            ),
            "late@stranger.example",
        )
        await eventually(lambda: settled(tmp_path) and len(mails(tmp_path)) == 4)
    outcomes = [o for (o,) in read(tmp_path, "SELECT outcome FROM inbox ORDER BY id")]
    assert [o.startswith("opened INC-") for o in outcomes] == [True] * 3 + [False] * 2 + [True]
    assert outcomes[3:5] == ["held: rate limit: more than 3 unverified messages a minute"] * 2
    assert read(tmp_path, "SELECT COUNT(*) FROM inbox WHERE state = 'held'") == [(2,)]
    assert sorted(m["To"] for m in mails(tmp_path)) == [
        "late@stranger.example",
        "user0@stranger.example",
        "user1@stranger.example",
        "user2@stranger.example",
    ]
    reporters = {r.address for i in incidents(tmp_path) for r in i.reporters}
    assert len(incidents(tmp_path)) == 4
    assert not reporters & {"user3@stranger.example", "user4@stranger.example"}
