"""The shipped monitoring: Prometheus alerting rules checked and unit-tested by a real
`promtool`, and a Grafana dashboard whose queries name only metrics the daemon exposes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.domain import QueueStats
from gateway.run import health, metrics

MONITORING = Path(__file__).resolve().parent.parent / "monitoring"
RULES = MONITORING / "prometheus-rules.yml"


def promtool() -> str:
    """The promtool binary (Debian package `prometheus`); under CI its absence fails."""
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "promtool is missing: ./scripts/test installs the Debian package `prometheus`"
            )
        pytest.skip("promtool not installed: run ./scripts/test")
    return found


def test_alerting_rules_are_valid() -> None:
    """`promtool check rules` accepts the shipped alerting rules."""
    done = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 8 rules found" in done.stdout


def test_alerting_rules_fire_as_their_unit_tests_say() -> None:
    """`promtool test rules` passes: each alert fires on its series and not on healthy ones."""
    done = subprocess.run(
        [promtool(), "test", "rules", "prometheus-rules.test.yml"],
        capture_output=True,
        text=True,
        check=False,
        cwd=MONITORING,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _exposed_names() -> set[str]:
    stats = QueueStats(
        inbox_pending=0, outbox_pending=0, outbox_oldest=None, outbox_retrying={}, outbox_dead=0
    )
    report = health.report({"smtp": "listening"}, {}, stats, datetime.now(UTC), 900)
    text = metrics.render(health.gauges(report))
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")} | {
        name + suffix
        for line in text.splitlines()
        if line.startswith("# TYPE")
        for name in [line.split()[2]]
        for suffix in ("_total", "_bucket", "_count", "_sum")
    }


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b((?:chatops|process)_[a-z_]+)\b", expr))


def test_dashboard_and_rules_query_only_exposed_metrics() -> None:
    """Every chatops_*/process_* name in the dashboard and the rules is one /metrics has."""
    exposed = _exposed_names()
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += re.findall(r"expr: (.+(?:\n {10}.+)*)", RULES.read_text())
    used = set().union(*(_metric_names(e) for e in exprs))
    assert used, "no metric names found"
    assert used - exposed == set()
    assert dashboard["uid"] == "chatops-gateway" and len(dashboard["panels"]) >= 10
