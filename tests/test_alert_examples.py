"""The documented Prometheus rules and Alertmanager configuration are valid for the real tools,
and the alerts they raise get the priorities docs/alerts.md promises."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from rules.alert_rules import AlertSource
from rules.alerts import AlertFacts, classify_alert
from rules.book import default_rulebook

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not installed (./scripts/test installs it)", pytrace=False)
        pytest.skip(f"{name} not installed")
    return path


def test_promtool_accepts_the_example_alerting_rules() -> None:
    """`promtool check rules` accepts docs/examples/prometheus-alerts.yml."""
    done = subprocess.run(
        [tool("promtool"), "check", "rules", str(EXAMPLES / "prometheus-alerts.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_amtool_accepts_the_example_alertmanager_configuration(tmp_path: Path) -> None:
    """`amtool check-config` accepts docs/examples/alertmanager.yml."""
    done = subprocess.run(
        [tool("amtool"), "check-config", str(EXAMPLES / "alertmanager.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_example_alerts_get_the_documented_priorities() -> None:
    """The example rules' alerts (their alertname and labels, as Prometheus sends them with
    the series' labels): apps smoke test P1, billing smoke test P4, API down P2."""
    text = (EXAMPLES / "prometheus-alerts.yml").read_text()
    examples = [
        ("SmokeTestFailed", {"severity": "critical", "group": "smoke", "test": "apps"}),
        ("SmokeTestFailed", {"severity": "critical", "group": "billing", "test": "billing"}),
        (
            "CloudControllerDown",
            {"severity": "critical", "service": "cloud-controller", "group": "api"},
        ),
    ]
    book = default_rulebook()
    got = []
    for name, labels in examples:
        assert f"alert: {name}" in text and f"group: {labels['group']}" in text
        facts = AlertFacts(AlertSource.ALERTMANAGER, name, labels["severity"], labels)
        got.append(classify_alert(facts, book).priority)
    assert got == ["P1", "P4", "P2"]
