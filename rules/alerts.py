"""Triage of monitoring alerts: an alert's facts, the clock and the rulebook in; a decision out.

Pure policy, like `rules.engine` for reports: the most severe matching `[[alert_rule]]` wins
(ties to the first in the file), else the alert's severity through `[alerts].severity`,
else `[alerts].default_priority`. Paging, deadlines and support hours follow the priority's
policy exactly as for a report. This module also says which `[[component]]`s an alert or a
report's text concerns, and checks the alert rules' examples.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

from rules.alert_rules import AlertRule, AlertSource, Component, ResolvePolicy
from rules.book import Rulebook
from rules.engine import label, next_update_due, pages_at, respond_due
from rules.expressions import compile_pattern, compile_word, normalise
from rules.types import Period, Priority, TriageDecision

_PERIOD_WORDS = {
    Period.IN_HOURS: "in hours",
    Period.OOH_WAKING: "out of hours (waking)",
    Period.OOH_OVERNIGHT: "out of hours (overnight)",
}


@dataclass(frozen=True)
class AlertFacts:
    """One firing alert as the rules see it, whichever monitoring sent it."""

    source: AlertSource
    name: str  # alertname, Grafana rule title, Pingdom check name
    severity: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    summary: str = ""


@dataclass(frozen=True)
class AlertVerdict:
    """The priority an alert gets from the rules alone (no clock), and why."""

    priority: Priority
    rule: AlertRule | None
    reasons: tuple[str, ...]
    on_resolved: ResolvePolicy


@dataclass(frozen=True)
class AlertDecision:
    """The triage of an alert: the same decision as for a report, plus the resolve policy
    and the components it concerns."""

    decision: TriageDecision
    on_resolved: ResolvePolicy
    components: tuple[str, ...]


# Compiled once per pattern (the rulebook's patterns were already checked at load time).
_rx = lru_cache(maxsize=1024)(compile_pattern)
_word = lru_cache(maxsize=1024)(compile_word)


def _search(pattern: str, text: str) -> bool:
    return _rx(pattern).search(text) is not None


def _labels_match(wanted: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(name in labels and _search(rx, labels[name]) for name, rx in wanted.items())


def rule_matches(rule: AlertRule, facts: AlertFacts) -> bool:
    """Every condition the rule has holds for the alert (and none of its exceptions)."""
    if rule.sources and facts.source not in rule.sources:
        return False
    if rule.names and not any(_search(rx, facts.name) for rx in rule.names):
        return False
    if rule.severities and facts.severity.lower() not in rule.severities:
        return False
    if rule.labels and not _labels_match(rule.labels, facts.labels):
        return False
    return not any(
        name in facts.labels and _search(rx, facts.labels[name])
        for name, rx in rule.unless_labels.items()
    )


def classify_alert(facts: AlertFacts, book: Rulebook) -> AlertVerdict:
    """The priority from the most severe matching alert rule, else from the severity."""
    policy = book.alerts
    matched = [rule for rule in book.alert_rules if rule_matches(rule, facts)]
    if matched:
        winner = min(matched, key=lambda r: r.priority.rank)
        reasons = [
            f"{winner.priority} by alert rule '{winner.id}': {winner.reason}",
            f"alert '{facts.name}' from {facts.source}",
        ]
        others = [f"'{r.id}' ({r.priority})" for r in matched if r is not winner]
        if others:
            reasons.append("also matched: " + ", ".join(others))
        return AlertVerdict(
            winner.priority, winner, tuple(reasons), winner.on_resolved or policy.on_resolved
        )
    severity = facts.severity.lower()
    if severity in policy.severity:
        priority = policy.severity[severity]
        why = f"{priority} by the alert's severity '{severity}' (no alert rule matched)"
    else:
        priority = policy.default_priority
        why = f"{priority} by default for alerts (no alert rule matched, no known severity)"
    return AlertVerdict(
        priority, None, (why, f"alert '{facts.name}' from {facts.source}"), policy.on_resolved
    )


def most_severe(verdicts: Iterable[AlertVerdict]) -> AlertVerdict:
    """The verdict of the most severe alert of a group (ties to the first)."""
    return min(verdicts, key=lambda v: v.priority.rank)


def triage_verdict(
    verdict: AlertVerdict, now: datetime, book: Rulebook, components: tuple[str, ...] = ()
) -> AlertDecision:
    """Paging and deadlines for an alert's verdict at `now`, as for a report."""
    clock = book.clock
    period = clock.period_at(now)
    priority = verdict.priority
    page = pages_at(priority, now, book)
    respond_by = respond_due(priority, now, book)
    update_by = next_update_due(priority, now, book)
    when = f"{_PERIOD_WORDS[period]}: fired {label(clock, now)} {clock.tz.key} time"
    if page:
        paging = f"pages on-call: {priority} pages {_PERIOD_WORDS[period]}"
    elif period is Period.IN_HOURS:
        paging = f"no page: {priority} does not page; the ticket is worked in hours"
    else:
        start = label(clock, clock.next_in_hours_start(now))
        paging = (
            f"{_PERIOD_WORDS[period]}: {priority} is not covered out of hours; "
            f"it will be picked up from {start}"
        )
    targets = f"respond by {label(clock, respond_by)}, next update by {label(clock, update_by)}"
    decision = TriageDecision(
        priority=priority,
        page=page,
        ticket=True,
        reply=False,
        rule=verdict.rule.id if verdict.rule else None,
        reasons=(*verdict.reasons, when, paging, targets),
        period=period,
        respond_by=respond_by,
        next_update_by=update_by,
    )
    return AlertDecision(decision, verdict.on_resolved, components)


def triage_alerts(alerts: Iterable[AlertFacts], now: datetime, book: Rulebook) -> AlertDecision:
    """The decision for a group of firing alerts: its most severe alert decides."""
    group = list(alerts)
    if not group:
        raise ValueError("a group needs at least one alert")
    verdict = most_severe(classify_alert(a, book) for a in group)
    components = tuple(dict.fromkeys(c for a in group for c in alert_components(a, book)))
    return triage_verdict(verdict, now, book, components)


def _component_of_alert(component: Component, facts: AlertFacts) -> bool:
    if any(_search(rx, facts.name) for rx in component.names):
        return True
    return any(
        name in facts.labels and _search(rx, facts.labels[name])
        for name, rx in component.labels.items()
    )


def alert_components(facts: AlertFacts, book: Rulebook) -> tuple[str, ...]:
    """The `[[component]]`s an alert concerns, by its labels or its name."""
    return tuple(c.name for c in book.components if _component_of_alert(c, facts))


def text_components(text: str, book: Rulebook) -> tuple[str, ...]:
    """The `[[component]]`s a report's subject or text names, by the components' words."""
    plain = normalise(text)
    return tuple(
        c.name for c in book.components if any(_word(w).search(plain) is not None for w in c.words)
    )


def check_alert_examples(book: Rulebook) -> list[str]:
    """One line per alert-rule example whose computed priority differs from its `expect`."""
    failures: list[str] = []
    for rule in book.alert_rules:
        for number, ex in enumerate(rule.examples, start=1):
            facts = AlertFacts(ex.source, ex.name, ex.severity, dict(ex.labels), ex.summary)
            verdict = classify_alert(facts, book)
            if verdict.priority is not ex.expect:
                source = f"alert rule '{verdict.rule.id}'" if verdict.rule else "the default"
                failures.append(
                    f"alert rule '{rule.id}' example {number}: expected "
                    f"{ex.expect}, got {verdict.priority} ({source})"
                )
    return failures
