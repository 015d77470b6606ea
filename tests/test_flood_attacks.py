"""Nobody muted, nobody let in, end to end over real SMTP (issue 17 items 1, 2, 9; issue 16
item 7): floods that tried to hold a tenant's authenticated page, forged storm joins, and a
pre-sent copy under the genuine report's Message-ID."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiosmtplib

from gateway.run import metrics
from tests.conftest import IN_HOURS, email_bytes, eventually, make_config, running, ticking
from tests.test_http_status import get, sample
from tests.test_trust_e2e import incidents, read, send, settled

MTA = "mx.gateway.test"
PASS = f"{MTA}; dmarc=pass (p=reject) header.from=tenant.example"
FAIL = f"{MTA}; dmarc=fail (p=none) header.from=tenant.example"


def authenticated_config(tmp_path: Path, **limits: Any) -> Any:
    """The reviewed set-up: a trusted MTA in front, tenant.example allow-listed."""
    return make_config(
        tmp_path, trust={"trusted_authserv_id": MTA}, limits={"storm_window_s": 1800.0, **limits}
    )


def outcomes(state: Path) -> list[str]:
    return [o for (o,) in read(state, "SELECT outcome FROM inbox ORDER BY id")]


def p1(subject: str = "Our site is down", **headers: str) -> bytes:
    """The tenant's genuine, authenticated P1."""
    return email_bytes(subject=subject, Authentication_Results=PASS, **headers)


async def test_forged_flood_in_a_tenants_name_does_not_hold_their_authenticated_page(
    tmp_path: Path,
) -> None:
    """Twelve forged mails in alice's name (DMARC fail) are held past per_sender, but her
    authenticated P1 sent after them pages, and is acknowledged."""
    async with running(authenticated_config(tmp_path), ticking(IN_HOURS)) as app:
        port = app.smtp_port or 0
        for n in range(12):
            await send(
                port,
                email_bytes(
                    subject=f"Spam number {n}", body=f"junk {n}", Authentication_Results=FAIL
                ),
                "alice@tenant.example",
            )
        await send(port, p1(), "alice@tenant.example")
        await eventually(lambda: settled(tmp_path), timeout=30)
    seen = outcomes(tmp_path)
    assert seen[-1].startswith("opened") and "paged" in seen[-1], seen[-1]
    [genuine] = [i for i in incidents(tmp_path) if i.title == "Our site is down"]
    assert genuine.pages_sent == 1 and "unverified sender" not in genuine.flags
    assert sum(o.startswith("held: rate limit") for o in seen) == 2  # the 11th and 12th forged


async def test_global_flood_does_not_hold_an_authenticated_page(tmp_path: Path) -> None:
    """Past global_per_minute unverified messages from many senders, further unverified
    mail is held and visible (state, /metrics outcome "held", /healthz), but an
    authenticated allow-listed P1 still pages."""
    held_before = metrics.TRIAGED.value(outcome="held")
    async with running(
        authenticated_config(tmp_path, global_per_minute=5), ticking(IN_HOURS)
    ) as app:
        port = app.smtp_port or 0
        for n in range(8):
            sender = f"stranger{n}@elsewhere.example"
            await send(
                port, email_bytes(subject=f"Problem {n}", body=f"text {n}", sender=sender), sender
            )
        await send(port, p1(), "alice@tenant.example")
        await eventually(lambda: settled(tmp_path), timeout=30)
        _, _, health = await get(app.http_port, "/healthz")
        _, _, text = await get(app.http_port, "/metrics")
    seen = outcomes(tmp_path)
    assert seen[-1].startswith("opened") and "paged" in seen[-1], seen[-1]
    assert [o.startswith("held: rate limit") for o in seen[:8]] == [False] * 5 + [True] * 3
    assert read(tmp_path, "SELECT COUNT(*) FROM inbox WHERE state = 'held'") == [(3,)]
    assert metrics.TRIAGED.value(outcome="held") - held_before == 3
    assert 'chatops_triage_total{outcome="held"}' in text
    assert sample(text, "chatops_inbox_held") == 3
    assert health["inbox"]["held"] == 3


async def test_forged_storm_join_opens_its_own_unverified_incident(tmp_path: Path) -> None:
    """A forged mail in alice's name (DMARC fail) with a similar subject and a Reply-To does
    not join her incident: not on its timeline, not a reporter; it opens its own unverified
    incident. A forged new reporter at an allow-listed domain does not join either."""
    async with running(authenticated_config(tmp_path), ticking(IN_HOURS)) as app:
        port = app.smtp_port or 0
        await send(port, p1(), "alice@tenant.example")
        await eventually(lambda: settled(tmp_path))
        await send(
            port,
            email_bytes(
                subject="Re: Site is down again",
                body="All fixed, ignore",
                Authentication_Results=FAIL,
                Reply_To="mallory@evil.example",
            ),
            "alice@tenant.example",
        )
        await send(
            port,
            email_bytes(
                subject="Site down",
                body="Me too, send me updates",
                sender="bob@tenant.example",
                Authentication_Results=FAIL,
                Reply_To="mallory@evil.example",
            ),
            "bob@tenant.example",
        )
        await eventually(lambda: settled(tmp_path) and len(incidents(tmp_path)) == 3)
    first, *others = incidents(tmp_path)
    assert [r.address for r in first.reporters] == ["alice@tenant.example"]
    assert not any("ignore" in e.text or "Me too" in e.text for e in first.timeline)
    for other in others:
        assert other.pages_sent == 0 and "unverified sender" in other.flags


async def test_genuine_storm_join_still_works(tmp_path: Path) -> None:
    """Authenticated tenants reporting the same outage still join one incident (one page)."""
    async with running(authenticated_config(tmp_path), ticking(IN_HOURS)) as app:
        port = app.smtp_port or 0
        await send(port, p1(), "alice@tenant.example")
        await eventually(lambda: settled(tmp_path))
        await send(port, p1(subject="Site down"), "alice@tenant.example")
        await send(
            port,
            email_bytes(
                subject="Site is down!", sender="bob@tenant.example", Authentication_Results=PASS
            ),
            "bob@tenant.example",
        )
        await eventually(lambda: settled(tmp_path))
    [incident] = incidents(tmp_path)
    assert incident.pages_sent == 1
    assert [r.address for r in incident.reporters] == ["alice@tenant.example", "bob@tenant.example"]


async def test_a_pre_sent_copy_does_not_swallow_the_genuine_report(tmp_path: Path) -> None:
    """Same envelope sender and Message-ID, different content: both processed (the genuine
    P1 pages); the genuine report sent again byte for byte is processed once."""
    msgid = "<genuine-1@tenant.example>"
    decoy = email_bytes(
        subject="Hello",
        body="Just testing, nothing to see",
        message_id=msgid,
        Authentication_Results=FAIL,
    )
    genuine = p1(message_id=msgid)
    async with running(authenticated_config(tmp_path, storm_window_s=0), ticking(IN_HOURS)) as app:
        port = app.smtp_port or 0
        await send(port, decoy, "alice@tenant.example")
        await send(port, genuine, "alice@tenant.example")
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
            errors, answer = await client.sendmail(
                "alice@tenant.example", ["emergency@localhost"], genuine
            )
        assert not errors and "OK queued" in answer
        await eventually(lambda: settled(tmp_path))
    assert read(tmp_path, "SELECT COUNT(*) FROM inbox") == [(2,)]
    titles = {i.title: i for i in incidents(tmp_path)}
    assert titles["Our site is down"].pages_sent == 1
    assert set(titles) == {"Hello", "Our site is down"}


async def test_a_forged_report_opened_first_does_not_absorb_the_genuine_page(
    tmp_path: Path,
) -> None:
    """A forged mail in alice's name opens an unverified "Our site is down" first; alice's
    authenticated P1 with the same subject does not join it (which would page nobody): it
    opens its own incident and pages. So does bob's, arriving next, which joins hers."""
    async with running(authenticated_config(tmp_path), ticking(IN_HOURS)) as app:
        port = app.smtp_port or 0
        await send(port, email_bytes(Authentication_Results=FAIL), "alice@tenant.example")
        await eventually(lambda: settled(tmp_path))
        await send(port, p1(), "alice@tenant.example")
        await eventually(lambda: settled(tmp_path))
        await send(
            port,
            email_bytes(
                subject="Site is down", sender="bob@tenant.example", Authentication_Results=PASS
            ),
            "bob@tenant.example",
        )
        await eventually(lambda: settled(tmp_path))
    forged, genuine = incidents(tmp_path)
    assert "unverified sender" in forged.flags and forged.pages_sent == 0
    assert genuine.pages_sent == 1 and "unverified sender" not in genuine.flags
    assert [r.address for r in genuine.reporters] == ["alice@tenant.example", "bob@tenant.example"]


async def test_a_forged_low_priority_report_does_not_absorb_a_genuine_p1(tmp_path: Path) -> None:
    """The forger opens a P3 that pages nobody under a subject; alice's authenticated
    report under a similar subject, which reads as a P1, opens its own incident and pages."""
    async with running(authenticated_config(tmp_path), ticking(IN_HOURS)) as app:
        port = app.smtp_port or 0
        await send(
            port,
            email_bytes(
                subject="Deploys are slow",
                body="Deploys are a bit slow.",
                Authentication_Results=FAIL,
            ),
            "alice@tenant.example",
        )
        await eventually(lambda: settled(tmp_path))
        await send(port, p1(subject="Deploys are slow"), "alice@tenant.example")
        await eventually(lambda: settled(tmp_path))
    forged, genuine = incidents(tmp_path)
    assert forged.pages_sent == 0 and forged.flags == ("unverified sender",)
    assert forged.priority != "P1"
    assert genuine.priority == "P1" and genuine.pages_sent == 1
