"""The pure alert and PagerDuty planners: values in, Plans out (no store, no event loop)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from gateway.alerts import Alert, AlertNotification
from gateway.domain import Channel, Incident, OutboxKind, PlanContext, Reporter, Status
from gateway.parse.pagerduty_events import PagerDutyEvent
from gateway.plan.alert_plan import AlertSettings, plan_alert
from gateway.plan.pagerduty_plan import plan_pagerduty
from gateway.plan.relay import ChatSettings
from gateway.plan.replies import Sender
from rules.alert_rules import AlertSource
from rules.book import default_rulebook
from rules.types import Mailbox, Priority
from tests.conftest import IN_HOURS, OVERNIGHT

BOOK = default_rulebook()
CHAT = ChatSettings("@gw:example.org", "!incidents:example.org", {}, frozenset(), None)
SETTINGS = AlertSettings(
    Sender("emergency@example.org", "Support", "example.org", "loop"), "chatops-gateway", CHAT
)


def notification(
    *statuses: str, name: str = "SmokeTestFailed", labels: dict[str, str] | None = None
) -> AlertNotification:
    labels = {"test": "apps", **(labels or {})}
    alerts = tuple(
        Alert(st, name, f"fp{i}", "critical", labels, "push fails") for i, st in enumerate(statuses)
    )
    status = "firing" if "firing" in statuses else "resolved"
    return AlertNotification(
        "am", AlertSource.ALERTMANAGER, "{}:{group=smoke}", status, alerts, "SmokeTestFailed"
    )


def incident(
    status: Status = Status.OPEN,
    pages: int = 1,
    flags: tuple[str, ...] = ("alert", "on-resolved:ask", "component:api"),
    reporters: tuple[Reporter, ...] = (),
) -> Incident:
    return Incident(
        id=7,
        ref="INC-7",
        title="SmokeTestFailed",
        priority=Priority.P1,
        status=status,
        mailbox=Mailbox.EMERGENCY,
        created_at=OVERNIGHT,
        rule=None,
        reasons=(),
        period=None,
        respond_by=None,
        next_update_by=None,
        reporters=reporters,
        pages_sent=pages,
        flags=flags,
    )


def ctx(thread: Incident | None, open_: list[Incident] | None = None) -> PlanContext:
    return PlanContext(
        thread=thread, next_id=8, find=lambda _i: None, open_incidents=lambda: open_ or []
    )


def kinds(plan) -> list[OutboxKind]:
    return [spec.kind for spec in plan.outbox]


def test_first_firing_group_opens_a_paging_incident_with_its_keys() -> None:
    """A new firing group opens an incident keyed by group and fingerprints, and pages."""
    n = notification("firing", "firing")
    plan = plan_alert(n, ctx(None), BOOK, SETTINGS, OVERNIGHT, "w1")
    assert plan.new_incident is not None and plan.new_incident.priority == "P1"
    assert OutboxKind.PAGE_TRIGGER in kinds(plan) and OutboxKind.CHAT_ANNOUNCE in kinds(plan)
    assert set(plan.message_ids) == set(n.thread_keys()) and len(plan.message_ids) == 3


def test_refiring_group_adds_to_its_incident_and_never_pages_again() -> None:
    """The same group firing again notes it in the thread and timeline; no page."""
    plan = plan_alert(notification("firing"), ctx(incident()), BOOK, SETTINGS, OVERNIGHT, "w2")
    assert plan.incident_id == 7 and OutboxKind.PAGE_TRIGGER not in kinds(plan)
    assert [e.kind for e in plan.timeline] == ["alert.fired"]
    assert "not paged again" in plan.outbox[0].payload["body"]


def test_firing_after_resolution_reopens_and_pages_again() -> None:
    """A group that fires after its incident was resolved reopens it and pages again."""
    plan = plan_alert(
        notification("firing"), ctx(incident(Status.RESOLVED)), BOOK, SETTINGS, OVERNIGHT, "w3"
    )
    assert plan.reopen and OutboxKind.PAGE_TRIGGER in kinds(plan)


def test_resolved_group_asks_engineers_or_resolves_by_policy() -> None:
    """Policy "ask" keeps the incident open and asks in the thread; "resolve" resolves it,
    tells the reporters and resolves the page."""
    n = notification("resolved")
    ask = plan_alert(n, ctx(incident()), BOOK, SETTINGS, OVERNIGHT, "w4")
    assert "status" not in ask.changes and "!resolve" in ask.outbox[0].payload["body"]
    alice = Reporter(Channel.EMAIL, "alice@tenant.example", ("<a@t>",))
    resolving = incident(flags=("alert", "on-resolved:resolve"), reporters=(alice,))
    done = plan_alert(n, ctx(resolving), BOOK, SETTINGS, OVERNIGHT, "w5")
    assert done.changes["status"] == "resolved"
    assert OutboxKind.PAGE_RESOLVE in kinds(done) and OutboxKind.MAIL_SEND in kinds(done)


def test_resolved_alerts_without_an_incident_are_ignored() -> None:
    """A resolve notification for a group we never saw firing changes nothing."""
    plan = plan_alert(notification("resolved"), ctx(None), BOOK, SETTINGS, OVERNIGHT, "w6")
    assert plan.new_incident is None and plan.incident_id is None


def test_alert_joins_a_trusted_open_report_about_its_component_only() -> None:
    """An API alert joins an open tenant report titled about the API (and pages: P2 in
    hours), not an unrelated one, nor one held as unverified."""
    n = notification("firing", name="CloudControllerDown", labels={"service": "api"})
    report = replace(incident(flags=(), pages=0), title="cf push fails with 500", id=3, ref="INC-3")
    unrelated = replace(report, title="Question about invoices", id=4, ref="INC-4")
    held = replace(report, flags=("unverified sender",), id=5, ref="INC-5")
    plan = plan_alert(n, ctx(None, [unrelated, held, report]), BOOK, SETTINGS, IN_HOURS, "w7")
    assert plan.incident_id == 3 and OutboxKind.PAGE_TRIGGER in kinds(plan)
    alone = plan_alert(n, ctx(None, [unrelated, held]), BOOK, SETTINGS, OVERNIGHT, "w8")
    assert alone.new_incident is not None


def event(kind: str, key: str | None = "INC-7") -> PagerDutyEvent:
    return PagerDutyEvent(
        "E1",
        f"incident.{kind}",
        OVERNIGHT,
        key,
        3,
        "Ana Engineer",
        ("Ben Oncall",),
        "Platform on-call",
        "https://pd.example/i/Q1",
    )


def test_pagerduty_acknowledgement_stops_the_clock_and_tells_the_thread_and_reporters() -> None:
    """An acknowledgement acknowledges ours, notes it in the thread, tells each reporter, and
    sends nothing back to PagerDuty; an already acknowledged incident only gets a timeline."""
    alice = Reporter(Channel.EMAIL, "alice@tenant.example", ("<a@t>",))
    plan = plan_pagerduty(
        event("acknowledged"), incident(reporters=(alice,)), SETTINGS, IN_HOURS, "w9"
    )
    assert plan.changes["status"] == "acknowledged"
    assert kinds(plan) == [OutboxKind.MAIL_SEND, OutboxKind.CHAT_SEND]
    assert "Ana Engineer" in plan.outbox[1].payload["body"]
    again = plan_pagerduty(
        event("acknowledged"),
        incident(Status.ACKNOWLEDGED),
        SETTINGS,
        IN_HOURS + timedelta(minutes=1),
        "w10",
    )
    assert not again.changes and not again.outbox and again.timeline


def test_pagerduty_unacknowledged_reopens_and_escalation_is_noted() -> None:
    """A timed-out acknowledgement makes ours open again; an escalation goes on the timeline."""
    plan = plan_pagerduty(
        event("unacknowledged"), incident(Status.ACKNOWLEDGED), SETTINGS, IN_HOURS, "w11"
    )
    assert plan.changes == {"status": "open"}
    esc = plan_pagerduty(event("escalated"), incident(), SETTINGS, IN_HOURS, "w12")
    assert esc.timeline[0].text == "Escalated on PagerDuty to Ben Oncall (Platform on-call)"


def test_pagerduty_resolve_follows_the_policy_and_strangers_are_ignored() -> None:
    """Policy "note" only asks the engineers; an event for another incident is ignored."""
    noted = plan_pagerduty(event("resolved"), incident(), SETTINGS, IN_HOURS, "w13", "note")
    assert not noted.changes and "!resolve" in noted.outbox[0].payload["body"]
    other = plan_pagerduty(event("resolved", "INC-8"), incident(), SETTINGS, IN_HOURS, "w14")
    assert other.outcome.startswith("ignored")


def test_next_notification_before_the_page_is_delivered_does_not_page_again() -> None:
    """A group's second notification, planned before its first page was delivered (so not
    yet counted), does not page a second time."""
    opened = plan_alert(notification("firing"), ctx(None), BOOK, SETTINGS, OVERNIGHT, "w1")
    assert opened.new_incident is not None
    stored = incident(pages=0, flags=opened.new_incident.flags)
    plan = plan_alert(
        notification("firing", "firing"), ctx(stored), BOOK, SETTINGS, OVERNIGHT, "w2"
    )
    assert OutboxKind.PAGE_TRIGGER not in kinds(plan)


def test_pagerduty_ack_of_an_escalation_page_acknowledges_its_incident() -> None:
    """The escalation step's page (dedup_key INC-7-escalation-1) is ours too; a look-alike
    key is not."""
    plan = plan_pagerduty(
        event("acknowledged", "INC-7-escalation-1"), incident(), SETTINGS, IN_HOURS, "w15"
    )
    assert plan.changes["status"] == "acknowledged"
    other = plan_pagerduty(
        event("acknowledged", "INC-7-evil"), incident(), SETTINGS, IN_HOURS, "w16"
    )
    assert other.outcome.startswith("ignored")


def test_alerts_left_out_by_alertmanager_are_said_on_the_timeline() -> None:
    """A notification Alertmanager truncated (max_alerts) says how many were left out."""
    n = replace(notification("firing"), truncated=40)
    plan = plan_alert(n, ctx(incident()), BOOK, SETTINGS, OVERNIGHT, "w17")
    assert plan.timeline[0].text.endswith("; 40 more left out by the sender")
