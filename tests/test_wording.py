"""What reporters and engineers read: the priority line, the configured time zone in every
message, the reporter's own words in the incident report, promises never earlier than the
clock they state, and which mail says it was written by software."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from email import message_from_string, policy
from email.message import EmailMessage

import pytest

from gateway.domain import ChatMessage, Incident, OutboxKind, Plan, PlanContext, TimelineEvent
from gateway.parse.mail import parse_mail
from gateway.plan.chat import plan_report_room
from gateway.plan.commands import CommandEnv, parse_command, plan_command
from gateway.plan.pipeline import hours_text, plan_email
from gateway.plan.relay import ChatSettings, announcement
from gateway.plan.replies import LOOP_HEADER, Sender, local_time, priority_line, zone_name
from gateway.plan.report import render_report
from gateway.plan.sla import due_now
from gateway.plan.tokens import ThreadSigner
from rules.book import Rulebook, default_rulebook, default_rulebook_text, load_rulebook
from rules.engine import next_update_due, respond_due, triage
from rules.types import Mailbox, Priority, Report
from tests.conftest import IN_HOURS, email_bytes
from tests.test_pipeline import SETTINGS as PIPELINE_SETTINGS
from tests.test_pipeline import plan_for, row
from tests.test_scheduler import SETTINGS as SLA_SETTINGS
from tests.test_scheduler import incident

LONDON = default_rulebook()
BERLIN = load_rulebook(
    default_rulebook_text().replace('timezone = "Europe/London"', 'timezone = "Europe/Berlin"')
)
CHAT = ChatSettings("@bot:hs", "!inc:hs", {"!ask:hs": "emergency"}, frozenset({"@eng:hs"}), 50)
SIGNER = ThreadSigner(b"wording-test-key-0123456789abc", "gw.example")
SENDER = Sender("emergency@gw.example", "Platform support", "gw.example", "loop", SIGNER)


def mail_text(data: str) -> tuple[EmailMessage, str]:
    msg = message_from_string(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg, msg.get_content()


def command(body: str, inc: Incident, book: Rulebook, now: datetime = IN_HOURS) -> Plan:
    parsed = parse_command(body)
    assert parsed is not None
    env = CommandEnv(CHAT, book, SENDER, "chatops-gateway", "c1", now)
    msg = ChatMessage("!inc:hs", "$ev", "@eng:hs", body, thread_root="$root")
    return plan_command(msg, parsed, PlanContext(inc, 9, lambda _: None, lambda: [inc]), env)


def emails(plan: Plan) -> list[str]:
    return [s.payload["data"] for s in plan.outbox if s.kind is OutboxKind.MAIL_SEND]


# --- the priority line ---------------------------------------------------------------------


def test_ack_priority_line_does_not_stutter() -> None:
    """The ack says "Priority: P1, a critical incident: …" once, not the name and then the
    meaning that repeats it."""
    _, body = mail_text(plan_for(email_bytes()).outbox[-1].payload["data"])
    assert (
        "Priority: P1, a critical incident: your live service is down or at serious risk." in body
    )
    assert "Critical incident). a critical" not in body


@pytest.mark.parametrize(
    ("meaning", "line"),
    [
        (
            "your live service is down",
            "Priority: P1 (Critical incident): your live service is down.",
        ),
        ("Critical: the site is down.", "Priority: P1, Critical: the site is down."),
        ("an outage.", "Priority: P1, an outage."),
    ],
)
def test_priority_line_with_other_meanings(meaning: str, line: str) -> None:
    """A meaning that does not name the level gets the name in brackets; one sentence end."""
    assert priority_line("P1", "Critical incident", meaning) == line


def test_chat_ack_priority_line_does_not_stutter() -> None:
    """A chat report's answer uses the same priority line."""
    msg = ChatMessage("!ask:hs", "$r", "@tenant:hs", "All our apps return 503, site is down")
    plan = plan_report_room(msg, None, 5, LONDON, CHAT, "gw", IN_HOURS)
    [answer] = [
        s.payload["body"]
        for s in plan.outbox
        if s.kind is OutboxKind.CHAT_SEND and s.payload["body"].startswith("Thanks")
    ]
    assert "Priority: P1, a critical incident:" in answer and "(Critical incident):" not in answer


# --- the time zone -------------------------------------------------------------------------


def test_zone_names() -> None:
    """Europe/London is "UK time"; any other zone is named as configured."""
    assert zone_name("Europe/London") == "UK time"
    assert zone_name("Europe/Berlin") == "Europe/Berlin"
    assert zone_name("UTC") == "UTC"


@pytest.mark.parametrize(("book", "zone"), [(LONDON, "(UK time)"), (BERLIN, "(Europe/Berlin)")])
def test_every_message_names_the_configured_zone(book: Rulebook, zone: str) -> None:
    """Ack, chat answer, engineer update, holding reply, the incidents-room announcement and
    support hours all state the rulebook's zone, never a hard-coded one."""
    other = "(Europe/Berlin)" if zone == "(UK time)" else "UK time"
    texts: list[str] = []
    ack = plan_for_book(book)
    texts.append(mail_text(ack.outbox[-1].payload["data"])[1])
    msg = ChatMessage("!ask:hs", "$r", "@tenant:hs", "Site is down, all apps return 503")
    chat = plan_report_room(msg, None, 5, book, CHAT, "gw", IN_HOURS)
    texts += [
        s.payload["body"]
        for s in chat.outbox
        if s.kind is OutboxKind.CHAT_SEND and s.payload["body"].startswith("Thanks")
    ]
    inc = incident_in(book)
    texts += [mail_text(d)[1] for d in emails(command("!update Restarting the routers", inc, book))]
    [holding] = due_now(
        [replace(inc, next_update_by=IN_HOURS)], IN_HOURS + timedelta(minutes=2), book, SLA_SETTINGS
    )
    texts += [
        mail_text(s.payload["data"])[1]
        for s in holding.plan.outbox
        if s.kind is OutboxKind.MAIL_SEND
    ]
    report = Report(Mailbox.EMERGENCY, "alice@tenant.example", "Site down", "All apps 503")
    texts.append(
        announcement(
            "INC-1",
            "Site down",
            triage(report, IN_HOURS, book),
            "alice@tenant.example",
            "email",
            book,
        )
    )
    assert len(texts) == 5
    for text in texts:
        assert zone in text, text
        assert other not in text, text
    assert hours_text(book).endswith(zone.strip("()"))


def plan_for_book(book: Rulebook) -> Plan:
    raw = email_bytes()
    r = row(raw)
    return plan_email(r, parse_mail(raw, r.mail_from), None, 42, book, PIPELINE_SETTINGS, IN_HOURS)


def incident_in(book: Rulebook) -> Incident:
    return replace(
        incident(),
        respond_by=respond_due(Priority.P1, IN_HOURS, book),
        next_update_by=next_update_due(Priority.P1, IN_HOURS, book),
    )


# --- promises are never earlier than the clock they state ---------------------------------


def test_deadlines_are_whole_minutes_rounded_up() -> None:
    """A report at 10:00:24 promises a response by 10:21 (not 10:20), and the deadline kept
    is 10:21:00, so nothing fires before the printed promise."""
    at = IN_HOURS + timedelta(seconds=24)
    due = respond_due(Priority.P1, at, LONDON)
    assert due == IN_HOURS + timedelta(minutes=21)
    assert local_time(due, "Europe/London").startswith("10:21 ")
    assert next_update_due(Priority.P1, IN_HOURS, LONDON) == IN_HOURS + timedelta(hours=1)


def test_printing_rounds_up_too() -> None:
    """A deadline stored with seconds (before this rule) is printed at the next minute."""
    assert local_time(IN_HOURS + timedelta(minutes=3, seconds=36), "UTC").startswith("10:04 ")
    assert local_time(IN_HOURS + timedelta(minutes=3), "UTC").startswith("10:03 ")


def test_holding_reply_fires_at_the_printed_promise_and_promises_whole_minutes() -> None:
    """An update promised (printed) "by 11:01" is overdue at 11:01:00, not before; the holding
    reply sent at 11:01:10 promises 12:02, and keeps 12:02:00 as the next deadline."""
    promised = next_update_due(Priority.P1, IN_HOURS + timedelta(seconds=30), LONDON)
    assert promised == IN_HOURS + timedelta(hours=1, minutes=1)
    inc = replace(incident(), next_update_by=promised)
    early = due_now([inc], promised - timedelta(seconds=1), LONDON, SLA_SETTINGS)
    assert all(d.kind != "update.overdue" for d in early)
    [holding] = [
        d
        for d in due_now([inc], promised + timedelta(seconds=10), LONDON, SLA_SETTINGS)
        if d.kind == "update.overdue"
    ]
    nxt = holding.plan.changes["next_update_by"]
    assert nxt == IN_HOURS + timedelta(hours=2, minutes=2)
    [data] = [s.payload["data"] for s in holding.plan.outbox if s.kind is OutboxKind.MAIL_SEND]
    assert "next update by 12:02 on Monday 23 November (UK time)" in mail_text(data)[1]


# --- who wrote it: Auto-Submitted ---------------------------------------------------------


def test_engineer_update_is_not_auto_submitted_but_keeps_loop_guards() -> None:
    """An engineer's !update and !resolve carry no Auto-Submitted (tenant systems may discard
    that), but keep X-Auto-Response-Suppress, our loop header and a signed Message-ID."""
    inc = incident_in(LONDON)
    for body in ("!update Restarting the routers", "!resolve Routers replaced"):
        [data] = emails(command(body, inc, LONDON))
        msg, _ = mail_text(data)
        assert msg["Auto-Submitted"] is None
        assert msg["X-Auto-Response-Suppress"] == "All"
        assert msg[LOOP_HEADER] == "loop"
        assert SIGNER.verify(msg["Message-ID"]) == inc.id


def test_software_written_mail_stays_auto_replied() -> None:
    """The acknowledgement, the holding reply and a title notice say Auto-Submitted."""
    ack, _ = mail_text(plan_for(email_bytes()).outbox[-1].payload["data"])
    assert ack["Auto-Submitted"] == "auto-replied"
    inc = incident_in(LONDON)
    [title] = emails(command("!title Routers down in eu-west-1", inc, LONDON))
    assert mail_text(title)[0]["Auto-Submitted"] == "auto-replied"
    [holding] = [
        d
        for d in due_now(
            [replace(inc, next_update_by=IN_HOURS)],
            IN_HOURS + timedelta(minutes=1),
            LONDON,
            SLA_SETTINGS,
        )
        if d.kind == "update.overdue"
    ]
    [data] = [s.payload["data"] for s in holding.plan.outbox if s.kind is OutboxKind.MAIL_SEND]
    assert mail_text(data)[0]["Auto-Submitted"] == "auto-replied"


def test_an_engineer_update_reflected_back_is_recognised_as_ours() -> None:
    """Loops stay impossible: our own update coming back (a tenant system bouncing it in, a
    forward rule) is automatic mail to the gateway, by its loop header."""
    [data] = emails(command("!update Restarting the routers", incident_in(LONDON), LONDON))
    parsed = parse_mail(data.encode(), "alice@tenant.example", loop_header=LOOP_HEADER)
    assert parsed.automatic == "our own loop header"


# --- the incident report -----------------------------------------------------------------


def test_impact_as_reported_shows_what_the_reporter_wrote() -> None:
    """The report's "Impact as reported" quotes the subject and the reporter's new text, not
    "Reported by email to the emergency mailbox"."""
    raw = email_bytes(
        subject="Checkout down",
        body="All checkout requests return 503 since "
        "09:50.\n\nOn Mon, 23 Nov 2026 at 09:00, Support <s@gw.example> wrote:\n"
        "> old thread",
    )
    plan = plan_for(raw)
    assert plan.new_incident is not None
    inc = replace(incident(), timeline=plan.timeline)
    report = render_report(inc, LONDON, IN_HOURS)
    impact = report.split("## Impact as reported")[1].split("## Timeline")[0]
    assert "Checkout down — All checkout requests return 503 since 09:50." in impact
    assert "Reported by email" not in impact and "old thread" not in impact


def test_escalation_contacts_are_listed_apart_from_reporters() -> None:
    """Escalation mails and pages go under "Escalation contacts notified", reporters' mails
    under "Reporters notified"."""
    t = IN_HOURS
    events = (
        TimelineEvent(t, "replied", "gateway", "Acknowledgement emailed to alice@tenant.example"),
        TimelineEvent(t, "paged", "gateway", "Escalation page sent via pagerduty"),
        TimelineEvent(t, "replied", "gateway", "Escalation emailed to cyber@gw.example"),
        TimelineEvent(t, "replied", "gateway", "Security escalation emailed to sec@gw.example"),
    )
    report = render_report(replace(incident(), timeline=events), LONDON, IN_HOURS)
    reporters = report.split("## Reporters notified")[1].split("## Escalation contacts")[0]
    contacts = report.split("## Escalation contacts notified")[1].split("## SLA")[0]
    assert "alice@tenant.example" in reporters
    assert "cyber@" not in reporters and "sec@" not in reporters and "pagerduty" not in reporters
    assert "cyber@gw.example" in contacts and "sec@gw.example" in contacts
    assert "Escalation page sent via pagerduty" in contacts
    assert "alice@" not in contacts


def test_chat_report_impact_drops_the_prefix() -> None:
    """A chat report's impact line is the message as written."""
    events = (TimelineEvent(IN_HOURS, "reported", "@tenant:hs", "Reported in chat: VPN down"),)
    report = render_report(replace(incident(), timeline=events), LONDON, IN_HOURS)
    assert "@tenant:hs: VPN down" in report
