"""The [alerts] and [pagerduty.webhook] configuration: validated before anything starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config.model import ConfigError, parse_config

SOURCE = {"name": "am", "kind": "alertmanager", "secret": {"value": "s" * 32}}


def errors(data: dict[str, Any], tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config({"state": {"dir": str(tmp_path)}, **data}, base_dir=tmp_path)
    return err.value.errors


def test_a_valid_alerts_section_with_pagerduty_webhook_loads(tmp_path: Path) -> None:
    """Sources, limits and PagerDuty webhook secrets (inline or from files) load."""
    (tmp_path / "pd-secret").write_text("p" * 40 + "\n")
    config = parse_config(
        {
            "alerts": {"port": 9800, "source": [SOURCE]},
            "pagerduty": {
                "routing_key": {"value": "R" * 32},
                "webhook": {"secrets": [{"file": "pd-secret"}]},
            },
        },
        base_dir=tmp_path,
    )
    assert config.alerts is not None and config.alerts.sources[0].name == "am"
    assert config.pagerduty is not None and config.pagerduty.webhook is not None
    assert config.read_secret(config.pagerduty.webhook.secrets[0]) == "p" * 40


def test_alerts_configuration_mistakes_are_reported_with_their_paths(tmp_path: Path) -> None:
    """The status port, duplicate names, unknown kinds, short or missing secrets, alarm rooms
    without Matrix and PagerDuty webhooks without the listener are all refused."""
    assert any(
        "alerts.port" in e for e in errors({"alerts": {"port": 9725, "source": [SOURCE]}}, tmp_path)
    )
    assert any(
        "alerts.port" in e
        for e in errors({"alerts": {"host": "0.0.0.0", "port": 9725, "source": [SOURCE]}}, tmp_path)
    )
    assert any("own name" in e for e in errors({"alerts": {"source": [SOURCE, SOURCE]}}, tmp_path))
    assert any(
        e.startswith("alerts.source[0].kind")
        for e in errors({"alerts": {"source": [{**SOURCE, "kind": "nagios"}]}}, tmp_path)
    )
    assert any(
        "alerts.source[0].secret: too short" in e
        for e in errors(
            {"alerts": {"source": [{**SOURCE, "secret": {"value": "short"}}]}}, tmp_path
        )
    )
    assert any(
        "cannot read secret file" in e
        for e in errors(
            {"alerts": {"source": [{**SOURCE, "secret": {"file": "missing"}}]}}, tmp_path
        )
    )
    assert any(
        "alarm rooms need a [matrix]" in e
        for e in errors({"alerts": {"high_priority_room": "!high:example.org"}}, tmp_path)
    )
    assert any(
        "pagerduty.webhook: needs the [alerts] listener" in e
        for e in errors(
            {
                "pagerduty": {
                    "routing_key": {"value": "R" * 32},
                    "webhook": {"secrets": [{"value": "p" * 32}]},
                }
            },
            tmp_path,
        )
    )
