"""Mail through a Google Group or a Mailman 3 list: reports are reports, the author is the
reporter, automatic mail passing through is never answered, and nothing goes to the group.

The fixtures in tests/fixtures/groupmail carry the headers Google Groups and Mailman 3 write
(List-ID, Mailing-list, Precedence: list, List-Post/Help/Archive/Unsubscribe,
X-Google-Group-Id, a `+bnc…` or `-bounces` Return-Path, and with DMARC From-rewriting the
"'Ana' via Emergency" From with the author in X-Original-From / Reply-To / Cc)."""

from __future__ import annotations

import email
from dataclasses import replace
from email import policy
from pathlib import Path

import pytest

from gateway.domain import Channel, InboxRow, Incident, OutboxKind, Plan, Reporter, Status
from gateway.parse.mail import ParsedMail, parse_mail
from gateway.plan.forwarder import Forwarder, forwarder_judge
from gateway.plan.imapsync import envelope_sender
from gateway.plan.pipeline import Settings, plan_email
from gateway.plan.relay import ChatSettings, to_reporters
from gateway.plan.replies import Sender
from gateway.plan.tokens import ThreadSigner
from gateway.plan.trust import TrustPolicy
from rules.book import default_rulebook
from rules.types import Mailbox, Priority
from tests.conftest import IN_HOURS, OVERNIGHT

FIXTURES = Path(__file__).parent / "fixtures" / "groupmail"
BOOK = default_rulebook()
GROUP_ADDRESSES = {"emergency@paas.example", "emergency@lists.paas.example"}
# Google's record of the author, as a trusted MTA in front reads it (arc=pass).
GOOGLE = Forwarder("emergency-group", "mx.google.com", "emergency.paas.example", "google.com")
MAILMAN = Forwarder(
    "emergency-list",
    "lists.paas.example",
    "emergency.lists.paas.example",
    dkim_domain="lists.paas.example",
)
HUMAN = [
    "gg-rewritten-p1.eml",
    "gg-plain-p1.eml",
    "mm3-munged-p1.eml",
    "mm3-munged-cc.eml",
    "mm3-plain-p1.eml",
    "mm3-wrapped-p1.eml",
]
AUTOMATIC = {
    "gg-autoreply.eml": "Auto-Submitted",
    "gg-notes-auto.eml": "Lotus Notes",
    "gg-moderation.eml": "list manager (X-Original-From)",
    "gg-bounce.eml": "delivery status notification",
    "gg-digest.eml": "list software notice",
    "mm3-autoreply.eml": "X-Autoreply",
    "mm3-moderation.eml": "list manager (From)",
    "mm3-bounce.eml": "delivery status notification",
}
AUTHORS = {
    "gg-rewritten-p1.eml": "ana.silva@tenant.example",
    "gg-plain-p1.eml": "rui.costa@t.example",
    "mm3-munged-p1.eml": "ana.silva@tenant.example",
    "mm3-munged-cc.eml": "ana.silva@tenant.example",
    "mm3-plain-p1.eml": "rui.costa@t.example",
    "mm3-wrapped-p1.eml": "ana.silva@tenant.example",
}


def settings(forwarders: tuple[Forwarder, ...] = (), mta: str | None = "mx.gw.example") -> Settings:
    judge = forwarder_judge(forwarders, mta_authserv_id=mta)
    trust = TrustPolicy(
        authserv_id=mta, allow_domains=frozenset({"tenant.example", "t.example"}), forwarded=judge
    )
    return Settings(
        Sender(
            "gateway@paas.example",
            "Platform support",
            "paas.example",
            "loop",
            ThreadSigner(b"group-test-key-0123456789abcdef", "paas.example"),
        ),
        "gw",
        "Platform support",
        trust=trust,
    )


def delivered(name: str, our_mta: str = "") -> bytes:
    """The fixture as our MTA hands it on: its own results header on top."""
    raw = (FIXTURES / name).read_bytes()
    return (our_mta.encode() + b"\r\n" if our_mta else b"") + raw


def plan(raw: bytes, s: Settings, now=IN_HOURS) -> tuple[Plan, ParsedMail]:
    mail_from = envelope_sender(raw)
    row = InboxRow(
        1, Channel.EMAIL, Mailbox.EMERGENCY, mail_from, ("emergency-gw@paas.example",), now, raw
    )
    mail = parse_mail(raw, mail_from)
    return plan_email(row, mail, None, 1, BOOK, s, now), mail


def recipients(p: Plan) -> list[str]:
    return [str(o.payload["rcpt_to"]) for o in p.outbox if o.kind is OutboxKind.MAIL_SEND]


@pytest.mark.parametrize("name", HUMAN)
def test_group_post_is_a_report_from_its_author(name: str) -> None:
    """A person's post through the group is not automatic, and its reporter is the author."""
    raw = (FIXTURES / name).read_bytes()
    mail = parse_mail(raw, envelope_sender(raw))
    assert mail.automatic is None
    assert mail.from_addr == AUTHORS[name] and mail.through_list
    assert not set(mail.list_addresses) & {AUTHORS[name]}


@pytest.mark.parametrize(("name", "sign"), sorted(AUTOMATIC.items()))
def test_automatic_mail_through_the_group_is_recognised_and_ignored(name: str, sign: str) -> None:
    """An auto-reply, a moderation notice, a bounce or a digest through the group is automatic
    (the sign named), opens nothing and answers nobody, in hours and out."""
    for now in (IN_HOURS, OVERNIGHT):
        p, mail = plan(delivered(name), settings((GOOGLE,)), now)
        assert mail.automatic is not None and sign in mail.automatic
        assert p.outcome.startswith("ignored") and p.outbox == () and p.new_incident is None


MTA_ARC_PASS = (
    "Authentication-Results: mx.gw.example; arc=pass (i=1 as.1.google.com=pass);"
    " dkim=pass header.d=paas.example; spf=pass smtp.mailfrom=paas.example;"
    " dmarc=pass header.from=paas.example"
)


def test_trusted_google_group_author_pages_and_is_acknowledged_in_their_thread() -> None:
    """With the group trusted, Google's sealed DMARC pass for the author makes a rewritten
    "'Ana' via Emergency" P1 page, and the acknowledgement goes to Ana, threaded, only."""
    p, mail = plan(delivered("gg-rewritten-p1.eml", MTA_ARC_PASS), settings((GOOGLE,)))
    assert "paged" in p.outcome and "unverified" not in p.outcome
    assert p.reporter is not None and p.reporter.address == "ana.silva@tenant.example"
    [ack] = [o for o in p.outbox if o.kind is OutboxKind.MAIL_SEND]
    msg = email.message_from_string(str(ack.payload["data"]), policy=policy.default)
    assert msg["To"] == "ana.silva@tenant.example" and msg["In-Reply-To"] == mail.message_id
    assert "production apps all returning 503" in str(msg["Subject"])


def test_without_forwarder_config_a_group_author_is_unverified_and_not_mailed() -> None:
    """No trusted forwarder: the P1 still reaches engineers (a ticket awaiting !page), but
    nothing authenticates the author and the envelope is the group's: nobody is mailed."""
    p, _ = plan(delivered("gg-rewritten-p1.eml", MTA_ARC_PASS), settings())
    assert "unverified sender" in p.outcome and p.new_incident is not None
    assert OutboxKind.TICKET_CREATE in [o.kind for o in p.outbox]
    assert recipients(p) == [] and p.reporter is None
    assert any(e.kind == "not_acknowledged" and "list" in e.text for e in p.timeline)


def test_a_message_wrapped_by_mailman_is_read_from_the_authors_own_message() -> None:
    """Mailman's wrap_message mitigation: the text and the message are the author's own
    (inside the message/rfc822 part), not the list's "The original message is attached"."""
    raw = (FIXTURES / "mm3-wrapped-p1.eml").read_bytes()
    mail = parse_mail(raw, envelope_sender(raw))
    assert mail.from_addr == "ana.silva@tenant.example"
    assert "every cf push fails with 502" in mail.new_text
    assert "original message is attached" not in mail.new_text


def test_the_incidents_room_is_told_why_an_author_was_not_acknowledged() -> None:
    """Without a trusted forwarder, engineers read in the incidents room that the author
    behind the group was not mailed, and why."""
    chat = ChatSettings("@gw:hs", "!incidents:hs", {}, frozenset({"@alice:hs"}), None)
    s = replace(settings(), chat=chat)
    p, _ = plan(delivered("gg-rewritten-p1.eml", MTA_ARC_PASS), s)
    notes = [str(o.payload["body"]) for o in p.outbox if o.kind is OutboxKind.CHAT_SEND]
    assert any("not acknowledged by email" in n and "list" in n for n in notes)


def test_a_broken_arc_chain_does_not_vouch_for_the_author() -> None:
    """Our MTA found the chain broken (arc=fail): the group's record does not count."""
    broken = MTA_ARC_PASS.replace("arc=pass", "arc=fail")
    p, _ = plan(delivered("gg-rewritten-p1.eml", broken), settings((GOOGLE,)))
    assert "unverified sender" in p.outcome and recipients(p) == []


def test_mailman_list_results_count_when_its_own_signature_verifies() -> None:
    """A Mailman list trusted by List-Id and DKIM domain: its Authentication-Results (DMARC
    pass for the author) count when our MTA verified the list's signature."""
    ours = "Authentication-Results: mx.gw.example; dkim=pass header.d=lists.paas.example"
    p, _ = plan(delivered("mm3-munged-p1.eml", ours), settings((MAILMAN,)))
    assert "paged" in p.outcome and recipients(p) == ["ana.silva@tenant.example"]
    unsigned = "Authentication-Results: mx.gw.example; dkim=fail header.d=lists.paas.example"
    p, _ = plan(delivered("mm3-munged-p1.eml", unsigned), settings((MAILMAN,)))
    assert "unverified sender" in p.outcome and recipients(p) == []


def test_results_added_above_the_lists_signature_do_not_count() -> None:
    """Someone replaying a genuinely list-signed post with their own "lists.paas.example;
    dmarc=pass" header and an X-Original-From naming a tenant on top gets nothing: only
    the list's header below its signature counts, and it records someone else."""
    ours = "Authentication-Results: mx.gw.example; dkim=pass header.d=lists.paas.example"
    forged = (
        "Authentication-Results: lists.paas.example; dmarc=pass header.from=t.example\r\n"
        "X-Original-From: Rui Costa <rui.costa@t.example>\r\n"
    )
    raw = delivered("mm3-munged-p1.eml", ours + "\r\n" + forged.rstrip("\r\n"))
    p, mail = plan(raw, settings((MAILMAN,)))
    assert mail.from_addr == "rui.costa@t.example"
    assert "unverified sender" in p.outcome and recipients(p) == []


@pytest.mark.parametrize("name", [*HUMAN, *AUTOMATIC])
def test_no_mail_ever_goes_to_a_group_or_list_address(name: str) -> None:
    """Whatever comes through the group, trusted or not, no answer goes to a group address
    or a list's bounce address."""
    for s in (settings((GOOGLE, MAILMAN)), settings(), settings(mta=None)):
        for our in ("", MTA_ARC_PASS):
            p, mail = plan(delivered(name, our), s)
            sent = set(recipients(p))
            assert not sent & (GROUP_ADDRESSES | set(mail.list_addresses))
            assert all("+bnc" not in a and "-bounces" not in a for a in sent)


def test_forged_group_headers_on_direct_mail_do_not_make_an_author() -> None:
    """A stranger writing "via Emergency" and X-Original-From: a tenant is unverified and
    not answered (the envelope is theirs, but their text is not echoed to the tenant)."""
    raw = (
        b"Return-Path: <mallory@evil.example>\r\n"
        b"From: \"'Ana Silva' via Emergency\" <emergency@paas.example>\r\n"
        b"X-Original-From: Ana Silva <ana.silva@tenant.example>\r\n"
        b"List-ID: <emergency.paas.example>\r\nTo: emergency@paas.example\r\n"
        b"Subject: Site down, call +1 900 555 0100 now\r\nMessage-ID: <f@evil.example>\r\n"
        b"\r\nAll apps down.\r\n"
    )
    p, mail = plan(raw, settings((GOOGLE,)))
    assert mail.from_addr == "ana.silva@tenant.example"
    assert "unverified sender" in p.outcome and recipients(p) == []


def test_a_reply_through_the_group_without_an_author_never_makes_the_group_a_reporter() -> None:
    """A reply in an incident's thread whose From is the group and whose author the group did
    not name joins the incident's timeline, but the group is not added as a reporter."""
    s = settings((GOOGLE,))
    first, _ = plan(delivered("gg-rewritten-p1.eml", MTA_ARC_PASS), s)
    [ack] = [o for o in first.outbox if o.kind is OutboxKind.MAIL_SEND]
    reply = (
        f"{MTA_ARC_PASS}\r\nReturn-Path: <emergency+bncQQ@paas.example>\r\n"
        "From: \"'Someone' via Emergency\" <emergency@paas.example>\r\n"
        "List-ID: <emergency.paas.example>\r\nTo: emergency@paas.example\r\n"
        f"Subject: Re: [INC-1] production apps\r\nIn-Reply-To: {ack.payload['message_id']}\r\n"
        "Message-ID: <reply-1@tenant.example>\r\n\r\nStill down.\r\n"
    ).encode()
    incident = Incident(
        1,
        "INC-1",
        "production apps",
        Priority.P1,
        Status.OPEN,
        Mailbox.EMERGENCY,
        IN_HOURS,
        None,
        (),
        None,
        None,
        None,
        (Reporter(Channel.EMAIL, "ana.silva@tenant.example", ()),),
    )
    mail_from = envelope_sender(reply)
    row = InboxRow(2, Channel.EMAIL, Mailbox.EMERGENCY, mail_from, (), IN_HOURS, reply)
    joined = plan_email(row, parse_mail(reply, mail_from), incident, 2, BOOK, s, IN_HOURS)
    assert joined.outcome == "joined INC-1" and joined.reporter is None
    updates = to_reporters(
        replace(
            incident,
            reporters=(
                *incident.reporters,
                Reporter(Channel.EMAIL, "emergency+bncQQ@paas.example", ()),
            ),
        ),
        "Fixed.",
        "update",
        "u1",
        s.sender,
        IN_HOURS,
    )
    assert [u.payload["rcpt_to"] for u in updates] == ["ana.silva@tenant.example"]
