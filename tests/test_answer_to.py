"""Acknowledgements go only where the mail authenticates (RFC 3834 §4), never repeat an
unverified sender's words to someone else, never go to odd or list addresses, and are
limited per address across restarts (real SMTP, real store)."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path

import aiosmtplib
import pytest

from gateway.domain import Channel, InboxRow, OutboxKind
from gateway.parse.mail import parse_mail
from gateway.plan.answer_to import answer_target, usable_address
from gateway.plan.pipeline import Settings, plan_email
from gateway.plan.replies import Sender
from gateway.plan.trust import TrustPolicy
from rules.book import default_rulebook
from rules.types import Mailbox
from tests.conftest import IN_HOURS, email_bytes, eventually, make_config, running, ticking
from tests.test_trust_e2e import mails, read, settled

MTA = "mx.gw.example"


def target(**kw: object):
    args: dict[str, object] = {
        "author": "ana@tenant.example",
        "reply_to": None,
        "envelope_sender": "ana@tenant.example",
        "authentic": None,
        "through_list": False,
        "list_addresses": (),
        "own_addresses": ("emergency@paas.example",),
    }
    return answer_target(**{**args, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "address",
    [
        "victim%target.example@relay.example",
        "relay.example!victim",
        '"quoted local"@x.example',
        "@route.example:victim@x.example",
        "victim@[192.0.2.1]",
        "root@localhost",
        "a@b",
        "MAILER-DAEMON@mx.example",
        "postmaster@tenant.example",
        "emergency+bncBDX@paas.example",
        "ops-bounces@lists.example",
        "owner-ops@lists.example",
        "ops-request@lists.example",
        "noreply@tenant.example",
        "",
        "x" * 250 + "@tenant.example",
    ],
)
def test_odd_list_and_system_addresses_are_never_answered(address: str) -> None:
    """%-hacks, bang paths, quoted or routed local parts, IP literals, dotless domains, mail
    systems and list bounce/owner/request addresses are refused as answer targets."""
    assert not usable_address(address)
    assert target(author=address, envelope_sender=address, authentic=True).address is None


def test_authenticated_author_gets_the_answer_and_reply_to_only_in_their_domain() -> None:
    """Authentic: the author (or a Reply-To in the same domain), with their subject."""
    assert target(authentic=True, envelope_sender="bounce-7@esp.example").address == (
        "ana@tenant.example"
    )
    same = target(authentic=True, reply_to="desk@tenant.example")
    assert (same.address, same.echo) == ("desk@tenant.example", True)
    assert target(authentic=True, reply_to="victim@else.example").address == "ana@tenant.example"


def test_unverified_sender_is_answered_at_the_envelope_without_their_words() -> None:
    """Not authenticated: Reply-To and a From naming someone else are ignored; the envelope
    sender is answered, and only without repeating the report."""
    answer = target(
        authentic=False,
        author="victim@else.example",
        reply_to="victim@else.example",
        envelope_sender="mallory@evil.example",
    )
    assert (answer.address, answer.echo) == ("mallory@evil.example", False)
    assert target(authentic=False).echo is False  # a failed check: never repeated
    unchecked = target(authentic=None)  # no checks configured, From is the envelope
    assert (unchecked.address, unchecked.echo) == ("ana@tenant.example", True)


def test_list_mail_without_an_authenticated_author_is_answered_to_nobody() -> None:
    """Through a list the envelope is the list's: without an authenticated author, nobody."""
    answer = target(
        through_list=True,
        envelope_sender="emergency+bncX@paas.example",
        list_addresses=("emergency@paas.example",),
    )
    assert answer.address is None and "list" in answer.why
    assert (
        target(through_list=True, authentic=True, list_addresses=("ana@tenant.example",)).address
        is None
    )


def test_a_forged_report_does_not_relay_its_text_to_a_victim() -> None:
    """The relay-spam attack: From/Reply-To a victim, envelope the attacker's, trusted MTA
    saw no pass. The ack goes to the attacker's envelope, without the attacker's text."""
    settings = Settings(
        Sender("emergency@gw.example", "Support", "gw.example", "loop"),
        "gw",
        "Support",
        trust=TrustPolicy(authserv_id=MTA),
    )
    spam = "Cheap pills at pills.example, call now"
    raw = email_bytes(
        subject=spam, body=spam, sender="victim@else.example", Reply_To="victim@else.example"
    )
    row = InboxRow(
        1,
        Channel.EMAIL,
        Mailbox.SUPPORT,
        "mallory@evil.example",
        ("emergency@gw.example",),
        IN_HOURS,
        raw,
    )
    plan = plan_email(
        row, parse_mail(raw, row.mail_from), None, 1, default_rulebook(), settings, IN_HOURS
    )
    [ack] = [o.payload for o in plan.outbox if o.kind is OutboxKind.MAIL_SEND]
    assert ack["rcpt_to"] == "mallory@evil.example"
    assert "pills" not in str(ack["data"]).lower()


async def send(port: int, raw: bytes, sender: str) -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
        errors, _ = await client.sendmail(sender, ["emergency@localhost"], raw)
    assert not errors


async def test_answers_to_one_address_are_limited_across_a_restart(tmp_path: Path) -> None:
    """With two answers per address per hour, the third report gets none, and neither does
    a fourth after the daemon restarts: the count is in the store. Each report still opens
    its incident, and the timeline says why it was not acknowledged."""
    config = make_config(
        tmp_path, answers={"per_address": 2, "window_s": 3600}, limits={"storm_window_s": 0}
    )
    problems = [
        "Login page returns 500",
        "Database connection refused",
        "Deploys fail with a timeout",
        "Certificate expired on the API",
    ]
    async with running(config, ticking(IN_HOURS)) as app:
        for subject in problems[:3]:
            await send(
                app.smtp_port or 0,
                email_bytes(subject=subject, body=f"{subject}."),
                "alice@tenant.example",
            )
        await eventually(
            lambda: (
                settled(tmp_path)
                and len(read(tmp_path, "SELECT 1 FROM inbox WHERE state = 'done'")) == 3
            )
        )
    async with running(config, ticking(IN_HOURS)) as app:
        await send(
            app.smtp_port or 0,
            email_bytes(subject=problems[3], body="Expired."),
            "alice@tenant.example",
        )
        await eventually(
            lambda: (
                settled(tmp_path)
                and len(read(tmp_path, "SELECT 1 FROM inbox WHERE state = 'done'")) == 4
            )
        )
    sent = mails(tmp_path)
    assert [m["To"] for m in sent] == ["alice@tenant.example"] * 2
    assert read(tmp_path, "SELECT COUNT(*) FROM incidents") == [(4,)]
    texts = [
        t for (t,) in read(tmp_path, "SELECT text FROM timeline WHERE kind = 'not_acknowledged'")
    ]
    assert len(texts) == 2 and all("2 automatic answers" in t for t in texts)
    assert all(
        email.message_from_bytes(m.as_bytes(), policy=policy.default)["Auto-Submitted"]
        for m in sent
    )


async def test_relay_spam_through_acknowledgements_reaches_no_victim(tmp_path: Path) -> None:
    """The helpdesk relay-spam attack over real SMTP: 20 reports in a victim's name (From and
    Reply-To), unauthenticated at the trusted MTA, spam as subject and body. No mail reaches
    the victim; the attacker's own envelope gets at most `per_address` neutral answers."""
    config = make_config(
        tmp_path,
        trust={"trusted_authserv_id": MTA},
        limits={"storm_window_s": 0, "per_sender": 1000, "loop_threshold": 50},
    )
    spam = "Cheap pills at pills.example"
    async with running(config, ticking(IN_HOURS)) as app:
        for n in range(20):
            raw = email_bytes(
                subject=f"{spam} {n}",
                body=f"{spam}, offer {n}.",
                sender="victim@else.example",
                Reply_To="victim@else.example",
            )
            raw = (
                f"Authentication-Results: {MTA}; spf=fail smtp.mailfrom=evil.example\r\n".encode()
                + raw
            )
            await send(app.smtp_port or 0, raw, "mallory@evil.example")
        await eventually(
            lambda: (
                settled(tmp_path)
                and len(read(tmp_path, "SELECT 1 FROM inbox WHERE state = 'done'")) == 20
            ),
            timeout=30,
        )
    sent = mails(tmp_path)
    to = [m["To"] for m in sent]
    echoed = sum("pills" in m.as_string().lower() for m in sent)
    print(
        f"\nFIGURE relay spam: reports=20 to_victim={to.count('victim@else.example')} "
        f"to_envelope={to.count('mallory@evil.example')} echoed={echoed}"
    )
    assert "victim@else.example" not in to and echoed == 0
    assert to == ["mallory@evil.example"] * 10  # the default limit per address and hour
