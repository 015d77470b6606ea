"""The README's Google Group set-up, end to end: realistic group mail over SMTP (the real
listener) and over IMAP (a real Dovecot) pages on a tenant's P1 and acknowledges the tenant;
automatic mail through the group is never answered; nothing is mailed to the group."""

from __future__ import annotations

import asyncio
import email
import re
import tomllib
from email import policy
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from gateway.config.model import Config, parse_config
from gateway.plan.imapsync import envelope_sender
from tests.conftest import IN_HOURS, eventually, running, ticking
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.smtp_capture import SmtpCapture
from tests.peers.dovecot import Dovecot
from tests.test_trust_e2e import incidents, read, settled

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "groupmail"
HUMAN = {
    "gg-rewritten-p1.eml": "ana.silva@tenant.example",
    "gg-plain-p1.eml": "rui.costa@t.example",
}
AUTOMATIC = [
    "gg-autoreply.eml",
    "gg-notes-auto.eml",
    "gg-moderation.eml",
    "gg-bounce.eml",
    "gg-digest.eml",
]
GROUP = {"emergency@paas.example"}


def readme_config() -> dict[str, Any]:
    """The configuration block the README gives for a Google Group."""
    text = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- google-group-config -->\n```toml\n(.*?)```", text, re.DOTALL)
    assert found, "the README lost its Google Group configuration"
    return tomllib.loads(found.group(1))


def config_for(
    state: Path, pd: FakePagerDuty, relay: SmtpCapture, dv: Dovecot | None, authserv_id: str
) -> Config:
    data = readme_config()
    data["trust"]["trusted_authserv_id"] = authserv_id
    if dv is None:
        del data["imap"]
    else:  # the same mailbox, on the test's Dovecot instead of imap.gmail.com
        data["imap"][0].update(
            host="127.0.0.1",
            port=dv.port,
            tls="none",
            allow_plaintext=True,
            user="gw",
            password={"value": "gw-secret"},
            backoff_max_s=1.0,
        )
    data.update(
        state={"dir": str(state)},
        smtp={"port": 0},
        http={"port": 0},
        pagerduty={"routing_key": {"value": "R" * 32}, "url": pd.url},
        mail_out={
            "mode": "smtp",
            "smtp": {"host": "127.0.0.1", "port": relay.port, "starttls": False},
        },
        outbox={"backoff_initial_s": 0.05, "backoff_max_s": 0.5, "drain_timeout_s": 5},
        threading={"key": {"value": "group-e2e-threading-key-0123"}},
    )
    return parse_config(data)


def as_delivered(name: str, authserv_id: str) -> bytes:
    """The fixture with the results header the trusted MTA adds on delivery: it checked the
    group's ARC seal and its DKIM signature."""
    ours = (
        f"Authentication-Results: {authserv_id};\r\n       dkim=pass header.i=@paas.example"
        " header.s=google;\r\n       arc=pass (i=1 spf=pass spfdomain=tenant.example dkim=pass"
        " dkdomain=tenant.example dmarc=pass fromdomain=tenant.example);\r\n       spf=pass"
        " smtp.mailfrom=emergency@paas.example;\r\n       dmarc=pass (p=NONE) "
        "header.from=paas.example\r\n"
    )
    return ours.encode() + (FIXTURES / name).read_bytes().replace(b"\r\n", b"\n").replace(
        b"\n", b"\r\n"
    )


def check_outcome(state: Path, pd: FakePagerDuty, relay: SmtpCapture) -> None:
    by_reporter = {r.address: i for i in incidents(state) for r in i.reporters}
    assert set(by_reporter) == set(HUMAN.values())
    ana = by_reporter["ana.silva@tenant.example"]
    assert ana.priority == "P1" and ana.pages_sent == 1 and "unverified sender" not in ana.flags
    assert ana.ref in [e["dedup_key"] for e in pd.events]
    acks = [
        (m.rcpt_tos, email.message_from_bytes(m.content, policy=policy.default))
        for m in relay.messages
    ]
    assert sorted(r for rcpts, _ in acks for r in rcpts) == sorted(HUMAN.values())
    [(_, to_ana)] = [(r, m) for r, m in acks if r == ("ana.silva@tenant.example",)]
    assert to_ana["In-Reply-To"] == "<CAF7mZ+0rG4pYc1qN3o8xJvWm2T@mail.tenant.example>"
    assert "production apps all returning 503" in str(to_ana["Subject"])
    sent_to = {r for rcpts, _ in acks for r in rcpts}
    assert not sent_to & GROUP and all("+bnc" not in r for r in sent_to)
    outcomes = [o for (o,) in read(state, "SELECT outcome FROM inbox ORDER BY id")]
    assert sum(o.startswith("ignored") for o in outcomes) == len(AUTOMATIC)


async def test_google_group_over_smtp_pages_and_acknowledges_the_tenant(tmp_path: Path) -> None:
    """Over the real SMTP listener, behind our MX: Ana's rewritten P1 pages and she alone
    gets the acknowledgement; Rui's plain post is acknowledged to Rui; the auto-reply,
    Notes AUTO:, moderation notice, bounce and digest through the group are never answered."""
    async with FakePagerDuty() as pd, SmtpCapture() as relay:
        config = config_for(tmp_path, pd, relay, None, "mx.gw.example")
        async with running(config, ticking(IN_HOURS)) as app:
            async with aiosmtplib.SMTP(
                hostname="127.0.0.1", port=app.smtp_port or 0, start_tls=False
            ) as client:
                for name in [*HUMAN, *AUTOMATIC]:
                    raw = as_delivered(name, "mx.gw.example")
                    await client.sendmail(envelope_sender(raw), ["emergency@paas.example"], raw)
            await eventually(
                lambda: settled(tmp_path) and len(relay.messages) >= 2 and pd.events, timeout=30
            )
            await asyncio.sleep(0.5)  # nothing more may leave
    check_outcome(tmp_path, pd, relay)


@pytest.mark.peer
async def test_google_group_over_imap_pages_and_acknowledges_the_tenant(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    """Read from the member mailbox on a real Dovecot, Gmail being the trusted MTA: the same
    outcome — one page for Ana's P1, acknowledgements to the authors only, no answer to
    automatic mail, nothing to the group."""
    async with FakePagerDuty() as pd, SmtpCapture() as relay:
        config = config_for(tmp_path, pd, relay, dovecot, "mx.google.com")
        for name in [*HUMAN, *AUTOMATIC]:
            raw = as_delivered(name, "mx.google.com")
            await asyncio.to_thread(dovecot.deliver, "gw", raw, envelope_sender(raw))
        async with running(config, ticking(IN_HOURS)):
            await eventually(
                lambda: (
                    len(read(tmp_path, "SELECT 1 FROM inbox")) == 7
                    and settled(tmp_path)
                    and len(relay.messages) >= 2
                    and pd.events
                ),
                timeout=30,
            )
            await asyncio.sleep(0.5)
    check_outcome(tmp_path, pd, relay)
