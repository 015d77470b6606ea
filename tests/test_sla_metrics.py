"""SLA counters on /metrics: each reminder and breach is counted once, when the store
records it as fired, however many scheduler passes follow. The real App (no Matrix: the
reminders go to the timeline) with a clock the test moves."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import IN_HOURS, email_bytes, eventually, make_config, running
from tests.test_app_e2e import send
from tests.test_http_status import get, sample
from tests.test_imap_intake import incident_count
from tests.test_sla_e2e import JumpingClock

REMINDER = 'chatops_sla_reminders_total{{kind="{}"}}'
BREACH = 'chatops_sla_breaches_total{{kind="{}"}}'


def count(text: str, series: str) -> float:
    """A series' value, 0 while it has never been counted."""
    return sample(text, series) if series + " " in text else 0.0


async def test_reminders_and_breaches_are_counted_once(tmp_path: Path) -> None:
    """A P1 nobody answers: the respond-by warning, then the respond-by and update-by
    breaches, each counted once on /metrics; further scheduler passes count nothing."""
    clock = JumpingClock(IN_HOURS)
    config = make_config(tmp_path, sla={"digest": False})
    async with running(config, clock=clock) as app:
        assert app.scheduler is not None and app.smtp_port
        _, _, before = await get(app.http_port, "/metrics")
        await send(app.smtp_port, email_bytes())
        await eventually(lambda: incident_count(tmp_path) == 1)

        async def metrics_after(**jump: float) -> str:
            assert app.scheduler is not None
            clock.jump(app, **jump)
            await app.scheduler.fire()
            _, _, text = await get(app.http_port, "/metrics")
            return text

        def delta(text: str, series: str) -> float:
            return count(text, series) - count(before, series)

        soon = await metrics_after(minutes=16)  # respond-by (20 min) is 4 minutes away
        assert delta(soon, REMINDER.format("respond.soon")) == 1
        assert delta(soon, BREACH.format("respond")) == 0
        late = await metrics_after(minutes=5)
        assert delta(late, REMINDER.format("respond.overdue")) == 1
        assert delta(late, BREACH.format("respond")) == 1
        assert delta(late, BREACH.format("update")) == 0
        overdue = await metrics_after(minutes=40)  # the first update (1 hour) is overdue
        assert delta(overdue, REMINDER.format("update.overdue")) == 1
        assert delta(overdue, BREACH.format("update")) == 1
        for _ in range(3):
            again = await metrics_after(seconds=1)
        for series in (
            REMINDER.format("respond.soon"),
            REMINDER.format("respond.overdue"),
            REMINDER.format("update.overdue"),
            BREACH.format("respond"),
            BREACH.format("update"),
        ):
            assert delta(again, series) == 1, series
