"""Triage decisions: priorities from the default rulebook, paging, deadlines, reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from rules.book import Rulebook, default_rulebook
from rules.engine import check_examples, classify, triage
from rules.types import Mailbox, Period, Priority, Report

LONDON = ZoneInfo("Europe/London")
BOOK = default_rulebook()

IN_HOURS = datetime(2025, 11, 24, 10, 0, tzinfo=LONDON)  # Monday
WAKING = datetime(2025, 11, 22, 10, 0, tzinfo=LONDON)  # Saturday
OVERNIGHT = datetime(2025, 11, 22, 3, 0, tzinfo=LONDON)  # Saturday night
PERIODS = {"in_hours": IN_HOURS, "waking": WAKING, "overnight": OVERNIGHT}

E, S = Mailbox.EMERGENCY, Mailbox.SUPPORT
P1, P2, P3, P4 = Priority.P1, Priority.P2, Priority.P3, Priority.P4


def report(subject: str, body: str = "", mailbox: Mailbox = E, **extra: Any) -> Report:
    """A tenant's report, from a tenant address unless said otherwise."""
    extra.setdefault("sender", "dev@service.example.gov.uk")
    return Report(mailbox=mailbox, subject=subject, body=body, **extra)


def book_with(*rules: dict[str, Any]) -> Rulebook:
    """The default hours, priorities and mailboxes with only the given rules."""
    return Rulebook.model_validate(
        {
            "hours": BOOK.hours,
            "priority": BOOK.priorities,
            "mailbox": BOOK.mailboxes,
            "rule": list(rules),
        }
    )


def rule(rule_id: str, priority: str, **conditions: Any) -> dict[str, Any]:
    """A custom rule with placeholder examples."""
    examples = [{"subject": "x", "expect": priority}, {"subject": "y", "expect": priority}]
    reason = f"because {rule_id}"
    return {
        "id": rule_id,
        "priority": priority,
        "reason": reason,
        "examples": examples,
        **conditions,
    }


# --- the default rulebook on realistic mail ----------------------------------------------

TENANT_MAIL = [
    (
        E,
        "Service down",
        "Our service is down since 07:50, users get an error page on every request.",
        P1,
    ),
    (
        E,
        "HELP - all apps returning 503",
        "All our apps return 503 Service Unavailable from the router.",
        P1,
    ),
    (
        S,
        "502 Bad Gateway on login page",
        "Every time users hit /login they get 502 Bad Gateway. Started 10 minutes ago.",
        P1,
    ),
    (E, "app not loading", "The app not loading for anyone, in the office or at home.", P1),
    (
        E,
        "cf login failing",
        "Can't log in to the API - cf login returns 'Unable to authenticate' for all of us.",
        P1,
    ),
    (
        E,
        "Security issue",
        "We believe our service has been compromised: there are admin accounts we did not create.",
        P1,
    ),
    (S, "API keys published", "Our API keys were exposed in a public gist this morning.", P1),
    (
        E,
        "Emergency fix blocked",
        "We urgently need to deploy a fix to production but cf push fails with a 500.",
        P1,
    ),
    (
        E,
        "P1: benefits service",
        "Priority 1 - claimants cannot submit claims on our live service.",
        P1,
    ),
    (E, "DDoS", "We're under a DDoS attack, 50k requests a second from abroad.", P1),
    (S, "site down?", "Is the platform down? All our apps give 502 Bad Gateway.", P1),
    (E, "Users can’t log in", "Users can’t log in to our live service since 06:00.", P1),
    (E, "hello", "Please call me back on 0207 000 0000.", P1),
    (
        S,
        "Cannot deploy",
        "We can’t deploy our app: staging failed with 'Downloading buildpack failed'.",
        P2,
    ),
    (
        S,
        "cf push fails",
        "cf push fails with 'Insufficient resources' for every app in our space.",
        P2,
    ),
    (
        S,
        "Elevated error rates",
        "We're seeing elevated error rates on our API since the platform upgrade.",
        P2,
    ),
    (
        S,
        "CVE-2025-1234",
        "Has the platform been patched for CVE-2025-1234 in the Ruby buildpack?",
        P2,
    ),
    (
        S,
        "Postgres unreachable",
        "Our Postgres database is unreachable from the app, connections hang.",
        P2,
    ),
    (
        S,
        "Really slow",
        "The site has become extremely slow since yesterday; pages take 20 seconds.",
        P2,
    ),
    (S, "Log4Shell", "Are any platform components affected by Log4Shell?", P2),
    (
        E,
        "Deploys failing",
        "Deploys are failing across our org, nothing urgent is blocked yet.",
        P2,
    ),
    (S, "intermittent 503s", "We get intermittent 503s, maybe 1% of requests.", P3),
    (S, "Timeouts sometimes", "Requests to our app get timeouts sometimes in the afternoon.", P3),
    (S, "App slow today", "Our app is slow today compared with last week.", P3),
    (E, "Degraded performance", "Performance has degraded a little since the weekend.", P3),
    (S, "cf login", "cf login times out sometimes, the second try works.", P3),
    (
        S,
        "Outage last night?",
        "Was there an outage last night? Our app was down for a few minutes at 3am.",
        P3,
    ),
    (S, "How do I add a custom domain?", "How do I set up a custom domain for our service?", P4),
    (S, "Can you add a user", "Can you add sam@example.gov.uk to our org please?", P4),
    (S, "Question", "Quick question: which regions does the platform run in?", P4),
    (
        S,
        "Question about 502 errors in my own code",
        "My view returns a 502 when the upstream times out.",
        P4,
    ),
    (S, "Invoice 5020", "Can you resend invoice 5020? Our reference is 5031.", P4),
    (
        E,
        "Metrics missing",
        "The metrics dashboard shows nothing for our app, but it's not service impacting.",
        P4,
    ),
    (S, "Feature request", "Could you add support for Postgres 16?", P4),
    (S, "hello", "Please call me back on 0207 000 0000.", P4),
]


def test_default_rulebook_examples_all_pass() -> None:
    """Every example written into the shipped rulebook gets the priority it expects."""
    assert check_examples(default_rulebook()) == []


@pytest.mark.parametrize(("mailbox", "subject", "body", "expected"), TENANT_MAIL)
def test_tenant_mail_priorities(
    mailbox: Mailbox, subject: str, body: str, expected: Priority
) -> None:
    """Realistic tenant wording gets the priority the support process gives it."""
    decision = triage(report(subject, body, mailbox), IN_HOURS, BOOK)
    assert decision.priority is expected, decision.reasons


P1_MAIL = [(m, s, b) for m, s, b, p in TENANT_MAIL if p is P1]


@pytest.mark.parametrize("when", PERIODS)
@pytest.mark.parametrize(("mailbox", "subject", "body"), P1_MAIL)
def test_every_p1_pages_at_any_time(mailbox: Mailbox, subject: str, body: str, when: str) -> None:
    """A P1 pages in hours, in waking hours and overnight."""
    decision = triage(report(subject, body, mailbox), PERIODS[when], BOOK)
    assert decision.priority is P1
    assert decision.page


@pytest.mark.parametrize(
    ("when", "pages"), [("in_hours", True), ("waking", False), ("overnight", False)]
)
def test_p2_pages_in_hours_only(when: str, pages: bool) -> None:
    """A P2 pages in hours only; out of hours it waits as a ticket."""
    decision = triage(report("Cannot deploy", "cf push fails with a 500", S), PERIODS[when], BOOK)
    assert decision.priority is P2
    assert decision.page is pages
    assert decision.ticket and decision.reply


@pytest.mark.parametrize("when", PERIODS)
@pytest.mark.parametrize(
    ("subject", "expected"), [("Intermittent 502s", P3), ("How do I add a user?", P4)]
)
def test_p3_and_p4_never_page(subject: str, expected: Priority, when: str) -> None:
    """P3 and P4 never page, in or out of hours, but always get a ticket and a reply."""
    decision = triage(report(subject, "", S), PERIODS[when], BOOK)
    assert decision.priority is expected
    assert not decision.page
    assert decision.ticket and decision.reply


# --- deadlines ---------------------------------------------------------------------------


def test_p2_saturday_night_is_due_monday_morning() -> None:
    """A P2 at 03:00 Saturday is due at 09:30 Monday, and the reasons say when work starts."""
    decision = triage(report("Cannot deploy", "cf push fails", S), OVERNIGHT, BOOK)
    assert decision.period is Period.OOH_OVERNIGHT
    assert decision.respond_by == datetime(2025, 11, 24, 9, 30, tzinfo=LONDON)
    assert decision.next_update_by == datetime(2025, 11, 24, 11, 0, tzinfo=LONDON)
    assert (
        "out of hours (overnight): P2 is not covered out of hours; "
        "it will be picked up from Mon 24 Nov 09:00"
    ) in decision.reasons


def test_p4_friday_afternoon_is_due_monday_afternoon() -> None:
    """A P4 at 16:00 Friday is due one business day later, at 16:00 Monday."""
    friday = datetime(2025, 11, 21, 16, 0, tzinfo=LONDON)
    decision = triage(report("Question", "How do I rotate my service key?", S), friday, BOOK)
    assert decision.priority is P4
    assert decision.respond_by == datetime(2025, 11, 24, 16, 0, tzinfo=LONDON)
    assert decision.next_update_by == datetime(2025, 11, 25, 16, 0, tzinfo=LONDON)


@pytest.mark.parametrize(("when", "respond"), [("in_hours", 20), ("waking", 40), ("overnight", 40)])
def test_p1_targets_run_on_the_wall_clock(when: str, respond: int) -> None:
    """A P1 is due 20 minutes later in hours, 40 out of hours; its next update is in an hour."""
    now = PERIODS[when]
    decision = triage(report("Our site is down"), now, BOOK)
    assert decision.respond_by == now + timedelta(minutes=respond)
    assert decision.next_update_by == now + timedelta(minutes=60)


def test_deadlines_are_utc() -> None:
    """respond_by and next_update_by are aware datetimes in UTC."""
    decision = triage(report("Our site is down"), IN_HOURS, BOOK)
    assert decision.respond_by is not None and decision.respond_by.tzinfo is UTC
    assert decision.next_update_by is not None and decision.next_update_by.tzinfo is UTC


def test_p2_in_hours_late_afternoon_carries_over() -> None:
    """A P2 at 16:50 uses 10 minutes today and 20 tomorrow: due 09:20 the next morning."""
    now = datetime(2025, 11, 24, 16, 50, tzinfo=LONDON)
    decision = triage(report("Cannot deploy", "cf push fails", S), now, BOOK)
    assert decision.page
    assert decision.respond_by == datetime(2025, 11, 25, 9, 20, tzinfo=LONDON)


def test_naive_now_is_rejected() -> None:
    """triage refuses a naive `now`."""
    with pytest.raises(ValueError, match="timezone-aware"):
        triage(report("Our site is down"), datetime(2025, 11, 24, 10, 0), BOOK)


# --- decision shape and reasons ----------------------------------------------------------


def test_automatic_mail_is_ignored() -> None:
    """Automatic mail gets no priority, page, ticket or reply, but its period and reasons."""
    auto = report("Out of office", "I'm away", automatic="Auto-Submitted: auto-replied")
    decision = triage(auto, OVERNIGHT, BOOK)
    assert decision.priority is None
    assert not (decision.page or decision.ticket or decision.reply)
    assert decision.ignored == "Auto-Submitted: auto-replied"
    assert decision.period is Period.OOH_OVERNIGHT
    assert decision.rule is None and decision.respond_by is None
    assert any("automatic" in line for line in decision.reasons)


def test_reasons_name_the_rule_what_matched_period_and_paging() -> None:
    """Reasons give the rule's reason, what matched and where, the period, and paging."""
    decision = triage(report("Our site is down", "getting 502s everywhere"), OVERNIGHT, BOOK)
    assert decision.rule == "apps-not-served"
    assert decision.reasons[0].startswith("P1 by rule 'apps-not-served': ")
    assert any('matched "site is down" in subject' in line for line in decision.reasons)
    assert "also matched: 'apps-5xx' (P1)" in decision.reasons
    assert any(
        line.startswith("out of hours (overnight): received Sat 22 Nov 03:00")
        for line in decision.reasons
    )
    assert any(
        line.startswith("pages on-call: P1 is covered out of hours (apps no longer")
        for line in decision.reasons
    )


def test_mailbox_defaults() -> None:
    """Unmatched mail to emergency is P1 and pages; to support it is P4 and does not."""
    emergency = triage(report("Hello", "Please ring me", E), OVERNIGHT, BOOK)
    support = triage(report("Hello", "Please ring me", S), OVERNIGHT, BOOK)
    assert (emergency.priority, emergency.page, emergency.rule) == (P1, True, None)
    assert (support.priority, support.page, support.rule) == (P4, False, None)
    assert "by default for the emergency mailbox" in emergency.reasons[0]


def test_most_severe_match_wins() -> None:
    """When rules of different priorities match, the most severe wins, wherever it is in the file.

    "Quick question" matches a P4 rule late in the file, "site is down" a P1 rule early on.
    """
    decision = triage(
        report("Quick question", "Our site is down, how do I check the logs?"), IN_HOURS, BOOK
    )
    assert decision.priority is P1


def test_tie_goes_to_first_rule_in_file() -> None:
    """Among equally severe matches the first in the file wins."""
    book = book_with(rule("first", "P2", words=["deploy"]), rule("second", "P2", words=["deploy"]))
    assert classify(report("deploy broken"), book).rule is not None
    assert triage(report("deploy broken"), IN_HOURS, book).rule == "first"


# --- matching semantics -------------------------------------------------------------------


def test_word_boundaries() -> None:
    """A word matches whole words only: "5020" and "x502" are not "502"."""
    book = book_with(rule("gateway", "P1", words=["502"]))
    assert triage(report("ref 5020", "", S), IN_HOURS, book).rule is None
    assert triage(report("id x502", "", S), IN_HOURS, book).rule is None
    assert triage(report("got a 502.", "", S), IN_HOURS, book).rule == "gateway"


def test_flexible_whitespace_and_apostrophes() -> None:
    """Phrases match across line breaks and hyphens, and with curly or missing apostrophes."""
    book = book_with(rule("down", "P1", words=["site is down", "can't deploy", "log in"]))
    for text in ["our site\n  is down", "we can’t deploy", "we cant deploy", "cannot log-in"]:
        assert triage(report("x", text, S), IN_HOURS, book).rule == "down", text


def test_unless_words_set_a_rule_aside() -> None:
    """An unless_words match stops the rule, and the reasons say which exception applied."""
    book = book_with(rule("gateway", "P1", words=["502"], unless_words=["in my own code"]))
    decision = triage(report("502 in my own code", "", S), IN_HOURS, book)
    assert decision.priority is P4
    assert any("set aside rule 'gateway' (P1)" in line for line in decision.reasons)


def test_also_words_are_required() -> None:
    """A rule with also_words needs one of them as well as one of its words."""
    book = book_with(rule("fix", "P1", words=["cf push fails"], also_words=["hotfix"]))
    assert triage(report("cf push fails", "", S), IN_HOURS, book).rule is None
    assert triage(report("cf push fails", "for our hotfix", S), IN_HOURS, book).rule == "fix"


def test_headers_match() -> None:
    """Header conditions need the header present (any case) and matching its regex."""
    book = book_with(rule("prio", "P2", headers={"X-Priority": r"^1\b"}))
    assert (
        triage(report("hi", "", S, headers={"x-priority": "1 (Highest)"}), IN_HOURS, book).rule
        == "prio"
    )
    assert triage(report("hi", "", S, headers={"X-Priority": "3"}), IN_HOURS, book).rule is None
    assert triage(report("hi", "", S), IN_HOURS, book).rule is None


def test_sender_and_domain_restriction() -> None:
    """senders/sender_domains restrict a rule to listed addresses or domains (and subdomains)."""
    book = book_with(
        rule(
            "monitor",
            "P1",
            words=["down"],
            senders=["alerts@monitor.example.com"],
            sender_domains=["justice.gov.uk"],
        ),
    )

    def who(sender: str) -> str | None:
        return triage(report("app down", "", S, sender=sender), IN_HOURS, book).rule

    assert who("Alerts <ALERTS@monitor.example.com>") == "monitor"
    assert who("dev@digital.justice.gov.uk") == "monitor"
    assert who("dev@justice.gov.uk") == "monitor"
    assert who("dev@notjustice.gov.uk") is None
    assert who("someone@monitor.example.com") is None


def test_mailbox_restriction() -> None:
    """A rule limited to some mailboxes ignores reports to the others."""
    book = book_with(rule("only-support", "P3", words=["slow"], mailboxes=["support"]))
    assert triage(report("slow", "", S), IN_HOURS, book).rule == "only-support"
    assert triage(report("slow", "", E), IN_HOURS, book).rule is None


def test_check_examples_reports_failures() -> None:
    """check_examples names the rule, the example number, expected and actual, and the source."""
    bad = rule("apps-down", "P1", words=["down"])
    bad["examples"] = [
        {"subject": "site down", "expect": "P1"},
        {"subject": "slow", "mailbox": "support", "expect": "P1"},
    ]
    failures = check_examples(book_with(bad))
    assert failures == ["rule 'apps-down' example 2: expected P1, got P4 (support mailbox default)"]
