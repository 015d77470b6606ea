"""Triage: a report, the current instant and the rulebook in; a TriageDecision out.

This module owns the decision semantics: which rule wins (the most severe match, ties to
the first in the file), the mailbox default when none matches, paging by priority and
support period, the response and update deadlines, and the reasons given for all of it.
It also checks a rulebook's examples against its own rules.

It reads only the rulebook's compiled form (`rules.compiled`) and imports no pydantic:
the parse child runs it on a `CompiledRulebook`; the daemon passes its validated
`Rulebook`, whose `compiled` form is the same thing (`TriageBook` takes either).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from rules.compiled import (
    ClockKind,
    CompiledRule,
    PagePolicy,
    PriorityTerms,
    TargetTerms,
    TriageBook,
)
from rules.hours import SupportClock
from rules.matching import Outcome, PreparedReport
from rules.types import Mailbox, Period, Priority, Report, TriageDecision

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_PERIOD_WORDS = {
    Period.IN_HOURS: "in hours",
    Period.OOH_WAKING: "out of hours (waking)",
    Period.OOH_OVERNIGHT: "out of hours (overnight)",
}


@dataclass(frozen=True)
class Verdict:
    """The priority a report gets from the rules alone (no clock), and why."""

    priority: Priority
    rule: CompiledRule | None
    reasons: tuple[str, ...]


def classify(report: Report, book: TriageBook) -> Verdict:
    """The priority from the most severe matching rule, or else the mailbox default."""
    rules = book.compiled
    matched: list[tuple[CompiledRule, Outcome]] = []
    set_aside: list[tuple[CompiledRule, str]] = []
    text = PreparedReport(report)
    for rule in rules.rules:
        outcome = rule.matcher.test(text)
        if outcome.matched:
            matched.append((rule, outcome))
        elif outcome.excluded_by is not None:
            set_aside.append((rule, outcome.excluded_by))
    if matched:
        winner, outcome = min(matched, key=lambda pair: pair[0].priority.rank)
        priority = winner.priority
        reasons = [
            f"{priority} by rule '{winner.id}': {winner.reason}",
            f"rule '{winner.id}' " + "; ".join(outcome.evidence),
        ]
        others = [f"'{rule.id}' ({rule.priority})" for rule, _ in matched if rule is not winner]
        if others:
            reasons.append("also matched: " + ", ".join(others))
    else:
        winner = None
        default = rules.mailboxes[report.mailbox]
        priority = default.priority
        reasons = [f"{priority} by default for the {report.mailbox} mailbox: {default.reason}"]
    reasons.extend(
        f"set aside rule '{rule.id}' ({rule.priority}): {hit} is one of its exceptions"
        for rule, hit in set_aside
        if rule.priority.rank < priority.rank
    )
    return Verdict(priority=priority, rule=winner, reasons=tuple(reasons))


def triage(report: Report, now: datetime, book: TriageBook) -> TriageDecision:
    """Decide priority, paging, ticket, reply and deadlines for `report` received at `now`.

    `now` must be timezone-aware (ValueError otherwise); deadlines come back in UTC.
    """
    rules = book.compiled
    clock = rules.clock
    period = clock.period_at(now)
    period_line = f"{_PERIOD_WORDS[period]}: received {label(clock, now)} {clock.tz.key} time"
    if report.automatic is not None:
        return _ignored(report.automatic, period, period_line)
    verdict = classify(report, rules)
    policy = rules.priorities[verdict.priority]
    page = policy.page is PagePolicy.ALWAYS or (
        policy.page is PagePolicy.IN_HOURS and period is Period.IN_HOURS
    )
    respond_by = _due(policy.respond, policy, period, now, clock)
    update_by = _due(policy.update, policy, period, now, clock)
    paging_line = _paging_line(verdict, period, page, now, clock)
    targets_line = (
        f"respond by {label(clock, respond_by)}, next update by {label(clock, update_by)} "
        f"({_clock_words(policy, period)})"
    )
    return TriageDecision(
        priority=verdict.priority,
        page=page,
        ticket=True,
        reply=True,
        rule=verdict.rule.id if verdict.rule else None,
        reasons=(*verdict.reasons, period_line, paging_line, targets_line),
        period=period,
        respond_by=respond_by,
        next_update_by=update_by,
    )


def _ignored(why: str, period: Period, period_line: str) -> TriageDecision:
    """The decision for automatic mail: recorded with its period, never answered nor paged."""
    return TriageDecision(
        priority=None,
        page=False,
        ticket=False,
        reply=False,
        rule=None,
        reasons=(
            f"ignored: automatic mail ({why}) is never answered",
            period_line,
            "no page: automatic mail never pages",
        ),
        period=period,
        respond_by=None,
        next_update_by=None,
        ignored=why,
    )


# Examples live only in the validated rulebook; they are read through these Protocols so
# that this module, which the parse child imports, imports no pydantic.
class _Example(Protocol):
    """A rule's example as check_examples reads it (`rules.book.Example`)."""

    @property
    def subject(self) -> str: ...
    @property
    def body(self) -> str: ...
    @property
    def mailbox(self) -> Mailbox: ...
    @property
    def sender(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def expect(self) -> Priority: ...


class _ExampleRule(Protocol):
    """A rule with its examples (`rules.book.Rule`)."""

    @property
    def id(self) -> str: ...
    @property
    def examples(self) -> Sequence[_Example]: ...


class ExampleBook(TriageBook, Protocol):
    """A validated rulebook, whose rules carry examples (`rules.book.Rulebook`)."""

    @property
    def rules(self) -> Sequence[_ExampleRule]: ...


def check_examples(book: ExampleBook) -> list[str]:
    """One line per rule example whose computed priority differs from its `expect`.

    Examples are numbered from 1 within their rule. An empty list means all pass.
    """
    failures: list[str] = []
    for rule in book.rules:
        for number, example in enumerate(rule.examples, start=1):
            report = Report(
                mailbox=example.mailbox,
                sender=example.sender,
                subject=example.subject,
                body=example.body,
                headers=example.headers,
            )
            verdict = classify(report, book)
            if verdict.priority is not example.expect:
                source = (
                    f"rule '{verdict.rule.id}'"
                    if verdict.rule
                    else f"{example.mailbox} mailbox default"
                )
                failures.append(
                    f"rule '{rule.id}' example {number}: expected {example.expect}, "
                    f"got {verdict.priority} ({source})"
                )
    return failures


def label(clock: SupportClock, instant: datetime) -> str:
    """An instant in the team's local time for people, e.g. "Mon 24 Nov 09:00".

    Spelled out here rather than with strftime so the text never depends on the locale.
    """
    local = clock.local(instant)
    return f"{_DAYS[local.weekday()]} {local.day} {_MONTHS[local.month - 1]} {local:%H:%M}"


def _due(
    target: TargetTerms,
    policy: PriorityTerms,
    period: Period,
    now: datetime,
    clock: SupportClock,
) -> datetime:
    """When a target falls due (UTC), rounded up to the whole minute: a promise is printed
    as "by 14:04", so the deadline behind it is 14:04:00, never 14:03:36 (nor earlier)."""
    return promise_minute(_exact_due(target, policy, period, now, clock))


def promise_minute(instant: datetime) -> datetime:
    """`instant` rounded up to the next whole minute (unchanged when already whole)."""
    whole = instant.replace(second=0, microsecond=0)
    return whole if whole == instant else whole + timedelta(minutes=1)


def _exact_due(
    target: TargetTerms,
    policy: PriorityTerms,
    period: Period,
    now: datetime,
    clock: SupportClock,
) -> datetime:
    if target.business_days is not None:
        return clock.add_business_days(now, target.business_days)
    if target.minutes is None:  # excluded by rules.book.Target's validation
        raise ValueError("a target needs minutes or business_days")
    if policy.clock is ClockKind.BUSINESS:
        return clock.add_business_minutes(now, target.minutes)
    minutes = target.minutes
    if period is not Period.IN_HOURS and target.out_of_hours_minutes is not None:
        minutes = target.out_of_hours_minutes
    return now.astimezone(UTC) + timedelta(minutes=minutes)


def _paging_line(
    verdict: Verdict, period: Period, page: bool, now: datetime, clock: SupportClock
) -> str:
    """One sentence on whether this pages, and if not, when the work starts."""
    priority = verdict.priority
    if page and period is Period.IN_HOURS:
        return f"pages on-call: {priority} pages in hours"
    if page:
        ooh = verdict.rule.ooh_class if verdict.rule else None
        cover = f" ({ooh.description})" if ooh else ""
        return f"pages on-call: {priority} is covered out of hours{cover}"
    if period is Period.IN_HOURS:
        return f"no page: {priority} does not page; the ticket is worked in hours"
    start = label(clock, clock.next_in_hours_start(now))
    return (
        f"{_PERIOD_WORDS[period]}: {priority} is not covered out of hours; "
        f"it will be picked up from {start}"
    )


def _clock_words(policy: PriorityTerms, period: Period) -> str:
    """How the deadlines were counted, in words."""
    if policy.clock is ClockKind.BUSINESS:
        return "counted in in-hours time only"
    if period is Period.IN_HOURS:
        return "wall-clock time, in-hours targets"
    return "wall-clock time, out-of-hours targets"


def next_update_due(priority: Priority, now: datetime, book: TriageBook) -> datetime:
    """When reporters are next owed an update, counting from an update sent at `now`."""
    rules = book.compiled
    policy = rules.priorities[priority]
    return _due(policy.update, policy, rules.clock.period_at(now), now, rules.clock)


def respond_due(priority: Priority, reported_at: datetime, book: TriageBook) -> datetime:
    """When a report of this priority received at `reported_at` must be responded to."""
    rules = book.compiled
    policy = rules.priorities[priority]
    period = rules.clock.period_at(reported_at)
    return _due(policy.respond, policy, period, reported_at, rules.clock)


def pages_at(priority: Priority, now: datetime, book: TriageBook) -> bool:
    """Whether a report of this priority pages at `now` (the priority's page policy)."""
    rules = book.compiled
    policy = rules.priorities[priority]
    return policy.page is PagePolicy.ALWAYS or (
        policy.page is PagePolicy.IN_HOURS and rules.clock.period_at(now) is Period.IN_HOURS
    )
