"""/metrics as Prometheus reads it: parsed with prometheus_client's own parser, the latency
histograms filled by real traffic, the process and build metrics present, and a wrong label
name refused instead of silently becoming an empty label."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.run import metrics
from tests.conftest import IN_HOURS, email_bytes, eventually, make_config, running, ticking
from tests.fakes.pagerduty import FakePagerDuty
from tests.test_app_e2e import send
from tests.test_http_status import ROUTING_KEY, get


def families(text: str) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """Every family's samples by (sample name, sorted labels)."""
    out: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for family in text_string_to_metric_families(text):
        out[family.name] = {
            (s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples
        }
    return out


async def test_a_page_fills_the_latency_histograms(tmp_path: Path) -> None:
    """A P1 over SMTP that pages: intake→page, attempt duration and batch histograms each
    gain an observation; process_* and chatops_build_info are exposed."""
    async with FakePagerDuty() as pd:
        config = make_config(
            tmp_path, pagerduty={"routing_key": {"value": ROUTING_KEY}, "url": pd.url}
        )
        async with running(config, clock=ticking(IN_HOURS)) as app:
            _, _, before_text = await get(app.http_port, "/metrics")
            assert app.smtp_port
            await send(app.smtp_port, email_bytes())
            await eventually(lambda: pd.events)
            await eventually(lambda: metrics.PAGES.value(action="trigger") > 0)
            _, _, after_text = await get(app.http_port, "/metrics")
    before, after = families(before_text), families(after_text)

    def gained(family: str, sample: str, labels: tuple[tuple[str, str], ...] = ()) -> float:
        key = (sample, labels)
        return after[family][key] - before.get(family, {}).get(key, 0.0)

    assert gained("chatops_intake_to_page_seconds", "chatops_intake_to_page_seconds_count") == 1
    assert (
        gained(
            "chatops_outbox_attempt_duration_seconds",
            "chatops_outbox_attempt_duration_seconds_count",
            (("kind", "page.trigger"),),
        )
        == 1
    )
    assert (
        gained(
            "chatops_triage_batch_duration_seconds", "chatops_triage_batch_duration_seconds_count"
        )
        >= 1
    )
    assert "process_resident_memory_bytes" in after or "process_cpu_seconds" in after
    [(_, labels)] = list(after["chatops_build_info"])
    assert dict(labels)["version"]
    assert after["chatops_up"][("chatops_up", ())] == 1


def test_a_wrong_label_name_is_an_error() -> None:
    """Counting under a label the counter does not have raises; nothing is counted."""
    before = metrics.ACCEPTED.value(channel="smtp")
    with pytest.raises(ValueError, match="label"):
        metrics.ACCEPTED.inc(chanel="smtp")
    with pytest.raises(ValueError, match="labels"):
        metrics.TICKETS.inc(kind="zendesk")
    assert metrics.ACCEPTED.value(channel="smtp") == before
