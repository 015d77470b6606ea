"""Alert triage in the rulebook: alert rules, severities, components, examples, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rules.alert_rules import AlertSource, ResolvePolicy
from rules.alerts import (
    AlertFacts,
    alert_components,
    check_alert_examples,
    classify_alert,
    text_components,
    triage_alerts,
)
from rules.book import RulebookError, default_rulebook, default_rulebook_text, load_rulebook
from tests.conftest import IN_HOURS, OVERNIGHT
from tests.fakes.monitoring import alertmanager_body, pingdom_body
from tests.test_cli import run

BOOK = default_rulebook()


def test_pingdom_down_on_a_live_check_is_p1_and_pages_out_of_hours() -> None:
    """A Pingdom check going down on a live service is the manual's P1 and pages overnight."""
    facts = AlertFacts(AlertSource.PINGDOM, "Apps: healthcheck", "high", {"tags": "live"})
    result = triage_alerts([facts], OVERNIGHT, BOOK)
    assert result.decision.priority == "P1" and result.decision.page
    assert result.decision.rule == "pingdom-live-down"
    assert "router" in result.components


def test_billing_smoke_test_is_not_an_incident_and_resolves_itself() -> None:
    """A failing billing smoke test is P4, never pages, and its incident resolves with it."""
    facts = AlertFacts(AlertSource.ALERTMANAGER, "SmokeTestFailed", "critical", {"test": "billing"})
    result = triage_alerts([facts], IN_HOURS, BOOK)
    assert result.decision.priority == "P4" and not result.decision.page
    assert result.on_resolved is ResolvePolicy.RESOLVE


def test_unmatched_alert_takes_its_severity_then_the_default() -> None:
    """Without a matching rule the severity label decides (critical: P2), else P3."""
    critical = classify_alert(AlertFacts(AlertSource.GENERIC, "DiskFull", "CRITICAL"), BOOK)
    unknown = classify_alert(AlertFacts(AlertSource.GENERIC, "DiskFull", "weird"), BOOK)
    assert (critical.priority, critical.rule) == ("P2", None)
    assert unknown.priority == "P3" and "by default" in unknown.reasons[0]


def test_a_group_is_triaged_by_its_most_severe_alert() -> None:
    """One P1 alert among warnings makes the whole group P1."""
    group = [
        AlertFacts(AlertSource.ALERTMANAGER, "HighLatency", "warning"),
        AlertFacts(AlertSource.ALERTMANAGER, "SmokeTestFailed", "critical", {"test": "apps"}),
    ]
    assert triage_alerts(group, IN_HOURS, BOOK).decision.priority == "P1"


def test_components_match_words_of_reports_and_labels_of_alerts_only() -> None:
    """Reports name components by whole words, alerts by labels; unrelated text matches none."""
    assert text_components("We cannot push: cf push hangs on the API", BOOK) == ("api",)
    assert text_components("Our invoice is wrong", BOOK) == ("billing",)
    for unrelated in (
        "Our rapid deploy is slow",
        "Happy new year",
        "capital letters",
        "the apiary app",
        "logistics",
    ):
        assert text_components(unrelated, BOOK) == (), unrelated
    facts = AlertFacts(
        AlertSource.ALERTMANAGER, "HighErrorRate", "critical", {"service": "cloud-controller"}
    )
    assert alert_components(facts, BOOK) == ("api",)
    assert alert_components(AlertFacts(AlertSource.GENERIC, "X", "", {"service": "db"}), BOOK) == ()


def test_default_alert_examples_all_pass() -> None:
    """Every alert rule example in the shipped rulebook gives its expected priority."""
    assert check_alert_examples(BOOK) == []


def test_bad_alert_rules_are_reported_with_their_paths() -> None:
    """A bad regex and a rule without conditions are reported at once, with their paths; a
    duplicate id is refused too."""
    text = (
        default_rulebook_text()
        + """
[[alert_rule]]
id = "broken"
priority = "P2"
reason = "x"
names = ['(']
examples = [{ name = "a", expect = "P2" }, { name = "b", expect = "P2" }]

[[alert_rule]]
id = "broken"
priority = "P2"
reason = "x"
examples = [{ name = "a", expect = "P2" }, { name = "b", expect = "P2" }]
"""
    )
    with pytest.raises(RulebookError) as err:
        load_rulebook(text)
    joined = "\n".join(err.value.errors)
    assert "alert_rule[4].names[0]" in joined and "alert_rule[5]" in joined
    twice = (
        default_rulebook_text()
        + """
[[alert_rule]]
id = "pingdom-live-down"
priority = "P2"
reason = "again"
sources = ["pingdom"]
examples = [{ name = "a", expect = "P1" }, { name = "b", expect = "P1" }]
"""
    )
    with pytest.raises(RulebookError) as err:
        load_rulebook(twice)
    assert "duplicate alert rule id pingdom-live-down" in "\n".join(err.value.errors)


def test_rules_test_covers_alert_examples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rules test` fails on an alert example that gets another priority."""
    bad = default_rulebook_text().replace(
        'labels = { test = "billing-usage" }, expect = "P4"',
        'labels = { test = "billing-usage" }, expect = "P1"',
    )
    path = tmp_path / "rules.toml"
    path.write_text(bad)
    code, out, _ = run(capsys, "rules", "test", str(path))
    assert code == 1
    assert "FAIL alert rule 'billing-smoke-test' example 2: expected P1, got P4" in out


def test_triage_json_explains_an_alert_payload(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """triage --json --alert detects the payload's kind and explains its decision."""
    path = tmp_path / "pingdom.json"
    path.write_text(json.dumps(pingdom_body(7, "Apps healthcheck")))
    code, out, _ = run(
        capsys, "triage", "--json", "--alert", "--at", "2026-11-22T03:00:00+00:00", str(path)
    )
    result = json.loads(out)
    assert code == 0 and result["priority"] == "P1" and result["page"] is True
    assert result["alert"]["kind"] == "pingdom" and result["alert"]["components"] == ["router"]
    am = tmp_path / "am.json"
    am.write_text(json.dumps(alertmanager_body("g", [("f", {"alertname": "X"}, "resolved")])))
    code, out, _ = run(capsys, "triage", "--json", "--alert", str(am))
    assert code == 0 and json.loads(out)["ignored"] == "resolved"
    path.write_text("{oops")
    code, _, err = run(capsys, "triage", "--json", "--alert", "--kind", "pingdom", str(path))
    assert code == 2 and "not an alert payload" in err
