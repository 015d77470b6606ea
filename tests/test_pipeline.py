"""The pure pipeline: parsed email + thread + clock in, Plan out. No event loop needed."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email import policy

from gateway.domain import Channel, InboxRow, Incident, OutboxKind, Reporter, Status
from gateway.parse.mail import parse_mail
from gateway.plan.pipeline import Settings, plan_email, plan_unreadable
from gateway.plan.replies import LOOP_HEADER, Sender
from gateway.plan.tokens import ThreadSigner
from gateway.plan.trust import TrustPolicy
from rules.book import default_rulebook
from rules.types import Mailbox, Priority
from tests.conftest import IN_HOURS, OVERNIGHT, email_bytes

BOOK = default_rulebook()
SIGNER = ThreadSigner(b"pipeline-test-key-0123456789", "gw.example")
SETTINGS = Settings(
    Sender(
        "emergency@gw.example",
        "Platform support",
        "gw.example",
        "chatops-gateway; gw.example",
        SIGNER,
    ),
    "chatops-gateway",
    "Platform support",
    trust=TrustPolicy(allow_domains=frozenset({"tenant.example", "t.example"})),
)


def row(
    raw: bytes, mailbox: Mailbox = Mailbox.EMERGENCY, mail_from: str = "alice@tenant.example"
) -> InboxRow:
    return InboxRow(7, Channel.EMAIL, mailbox, mail_from, ("emergency@gw.example",), IN_HOURS, raw)


def plan_for(
    raw: bytes,
    now: datetime = IN_HOURS,
    thread: Incident | None = None,
    mailbox: Mailbox = Mailbox.EMERGENCY,
):
    r = row(raw, mailbox)
    return plan_email(r, parse_mail(raw, r.mail_from), thread, 42, BOOK, SETTINGS, now)


def incident(status: Status = Status.OPEN) -> Incident:
    return Incident(
        3,
        "INC-3",
        "Site down",
        Priority.P1,
        status,
        Mailbox.EMERGENCY,
        IN_HOURS,
        None,
        (),
        None,
        None,
        None,
        (Reporter(Channel.EMAIL, "alice@tenant.example", ("<a@t>",)),),
    )


def outbox_kinds(plan) -> list[str]:
    return [spec.kind for spec in plan.outbox]


def test_p1_report_opens_incident_pages_tickets_and_acknowledges() -> None:
    """A site-down mail becomes INC-42 at P1 with a page, a ticket and an acknowledgement."""
    plan = plan_for(email_bytes())
    assert plan.new_incident is not None and plan.new_incident.priority is Priority.P1
    assert outbox_kinds(plan) == [
        OutboxKind.PAGE_TRIGGER,
        OutboxKind.TICKET_CREATE,
        OutboxKind.MAIL_SEND,
    ]
    page = plan.outbox[0].payload
    assert page["dedup_key"] == "INC-42" and page["severity"] == "critical"
    assert plan.outcome.startswith("opened INC-42")


def test_acknowledgement_is_threaded_marked_automatic_and_single_recipient() -> None:
    """The ack answers in the reporter's thread, says Auto-Submitted, carries our loop header."""
    raw = email_bytes(message_id="<r1@tenant.example>", References="<r0@tenant.example>")
    plan = plan_for(raw)
    ack = plan.outbox[-1].payload
    msg = email.message_from_bytes(ack["data"].encode(), policy=policy.default)
    assert msg["In-Reply-To"] == "<r1@tenant.example>"
    assert msg["References"] == "<r0@tenant.example> <r1@tenant.example>"
    assert msg["Subject"] == "Re: [INC-42] Our site is down"
    assert msg["Auto-Submitted"] == "auto-replied" and msg[LOOP_HEADER]
    assert msg.get_all("To") == ["alice@tenant.example"] and msg["Cc"] is None
    assert ack["message_id"] in plan.message_ids and "<r1@tenant.example>" in plan.message_ids


def test_ack_says_priority_meaning_paging_and_respond_by_in_uk_time() -> None:
    """The ack names the reference, the priority and its meaning, the page and the time."""
    plan = plan_for(email_bytes())
    body = email.message_from_bytes(
        plan.outbox[-1].payload["data"].encode(), policy=policy.default
    ).get_content()
    level = BOOK.priorities.get(Priority.P1)
    assert "INC-42" in body and "P1" in body and level.meaning in body
    assert "paged the on-call engineer" in body
    assert "10:20 on Monday 23 November" in body  # 20 minutes, in hours, GMT


def test_out_of_hours_non_p1_is_a_ticket_with_an_honest_start() -> None:
    """A P3-style mail overnight is not paged; the ack says when work will start."""
    raw = email_bytes(
        subject="Intermittent slowness",
        body="Some requests are intermittently slow since yesterday.",
    )
    plan = plan_for(raw, now=OVERNIGHT, mailbox=Mailbox.SUPPORT)
    assert plan.new_incident is not None and plan.new_incident.priority is not Priority.P1
    assert OutboxKind.PAGE_TRIGGER not in outbox_kinds(plan)
    body = email.message_from_bytes(
        plan.outbox[-1].payload["data"].encode(), policy=policy.default
    ).get_content()
    assert "outside our support hours" in body and "Monday 23 November" in body


def test_header_injection_in_subject_does_not_reach_reply_headers() -> None:
    """CR/LF smuggled into the subject never becomes a header of our reply."""
    raw = (
        b"From: alice@tenant.example\r\nTo: emergency@gw.example\r\n"
        b"Subject: =?utf-8?q?down=0D=0ABcc:_victim@evil.example?=\r\n"
        b"Message-ID: <x@t>\r\n\r\nOur site is down, 502 everywhere.\r\n"
    )
    plan = plan_for(raw)
    msg = email.message_from_bytes(plan.outbox[-1].payload["data"].encode(), policy=policy.default)
    assert msg["Bcc"] is None and "\n" not in msg["Subject"]


def test_reply_in_thread_joins_without_paging() -> None:
    """A message found in an incident's thread joins its timeline; nothing is paged or sent."""
    plan = plan_for(email_bytes(subject="Re: Site down", body="Still broken."), thread=incident())
    assert plan.incident_id == 3 and plan.new_incident is None and plan.outbox == ()
    assert [e.kind for e in plan.timeline] == ["reporter.replied"]


def test_reply_to_resolved_incident_reopens_it() -> None:
    """A reporter's reply after resolution reopens the incident and says so."""
    plan = plan_for(email_bytes(body="It is broken again"), thread=incident(Status.RESOLVED))
    assert plan.reopen and [e.kind for e in plan.timeline] == ["reporter.replied", "reopened"]


def test_automatic_mail_is_ignored_even_in_a_thread() -> None:
    """An auto-reply is recorded as ignored and never joins, pages or answers."""
    plan = plan_for(email_bytes(Auto_Submitted="auto-replied"), thread=incident())
    assert plan.outcome.startswith("ignored") and plan.incident_id is None
    assert plan.outbox == () and plan.new_incident is None


def test_null_return_path_is_automatic() -> None:
    """A message with the null reverse-path (<>) is never answered."""
    raw = email_bytes()
    r = row(raw, mail_from="")
    plan = plan_email(r, parse_mail(raw, ""), None, 1, BOOK, SETTINGS, IN_HOURS)
    assert plan.outcome.startswith("ignored")


def test_unreadable_message_becomes_a_ticket_for_a_human() -> None:
    """A message that cannot be read is kept as a flagged P4 ticket, never paged or answered."""
    plan = plan_unreadable(row(b"\x00\x01"), "no headers", IN_HOURS)
    assert plan.new_incident is not None and plan.new_incident.flags == ("unparseable",)
    assert outbox_kinds(plan) == [OutboxKind.TICKET_CREATE]


def test_support_mailbox_unmatched_is_p4_and_not_paged() -> None:
    """An ordinary question to the support address is P4, ticketed and answered, not paged."""
    raw = email_bytes(
        subject="Quick question",
        body="Hello, could you tell me where the billing report lives? Thanks",
        to="support@gw.example",
    )
    plan = plan_for(raw, mailbox=Mailbox.SUPPORT)
    assert plan.new_incident is not None and plan.new_incident.priority is Priority.P4
    assert outbox_kinds(plan) == [OutboxKind.TICKET_CREATE, OutboxKind.MAIL_SEND]


def test_respond_by_is_utc_aware() -> None:
    """Clocks on the incident are aware UTC instants."""
    plan = plan_for(email_bytes())
    assert plan.new_incident is not None and plan.new_incident.respond_by is not None
    assert plan.new_incident.respond_by.utcoffset() == UTC.utcoffset(None)
