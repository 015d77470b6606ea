"""SLA end to end: the real App with a real Synapse, the PagerDuty fake and an SMTP relay.
A P1 nobody acknowledges escalates once at respond-by; !update restarts the update clock;
a holding reply goes out once when an update is overdue; a restart across a due reminder
sends it once. Time is moved with a controllable clock, never slept through."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.app import App
from tests.conftest import IN_HOURS, email_bytes, eventually, make_config, running, ticking
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.smtp_capture import SmtpCapture
from tests.test_matrix_e2e import World, bot_notices, incident, send_mail, thread_of, world

pytestmark = pytest.mark.peer
__all__ = ["world"]  # the fixture, shared with the Matrix tests

KEY = "a" * 32
ESCALATION_KEY = "e" * 32


class JumpingClock:
    """Real time passing (so retries come due), plus jumps a test makes."""

    def __init__(self, start: datetime) -> None:
        self._tick = ticking(start)
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return self._tick() + self.offset

    def jump(self, app: App, **delta: float) -> None:
        """Move time forward and tell the scheduler to look again."""
        self.offset += timedelta(**delta)
        assert app.scheduler is not None
        app.scheduler.wake()


def config_for(w: World, state: Path, relay: int, pd: str) -> Any:
    return make_config(
        state,
        mail_out={"mode": "smtp", "smtp": {"host": "127.0.0.1", "port": relay, "starttls": False}},
        matrix={
            "homeserver": w.synapse.url,
            "user_id": w.bot,
            "password": {"value": w.bot_password},
            "incidents_room": w.incidents,
            "engineers": [w.eng],
            "sync_timeout_s": 1,
            "backoff_max_s": 1,
        },
        pagerduty={"routing_key": {"value": KEY}, "url": pd},
        sla={"digest": False},
        escalation=[{"kind": "page", "routing_key": {"value": ESCALATION_KEY}}],
    )


@asynccontextmanager
async def connected(config: Any, clock: JumpingClock) -> AsyncIterator[App]:
    async with running(config, clock=clock) as app:
        assert app.matrix is not None
        await eventually(app.matrix.connected.is_set, timeout=20)
        yield app


def escalations(pd: FakePagerDuty) -> list[dict[str, Any]]:
    return [e for e in pd.events if e.get("routing_key") == ESCALATION_KEY]


async def test_escalation_update_reset_and_holding_reply(world: World, tmp_path: Path) -> None:
    """No !ack by respond-by: one escalation page and one overdue notice in the thread;
    !update moves the next-update clock; when that update is overdue one holding reply."""
    w = world
    clock = JumpingClock(IN_HOURS)
    async with FakePagerDuty() as pd, SmtpCapture() as relay:
        config = config_for(w, tmp_path, relay.port, pd.url)
        async with connected(config, clock) as app:
            await send_mail(app.smtp_port or 0, email_bytes())
            [root] = await eventually(lambda: bot_notices(w, w.incidents, "INC-1 · P1"))
            first_due = incident(tmp_path).next_update_by

            clock.jump(app, minutes=21)
            [overdue] = await eventually(
                lambda: bot_notices(w, w.incidents, "nobody has acknowledged it.")
            )
            assert thread_of(overdue) == root["event_id"]
            await eventually(lambda: escalations(pd))
            clock.jump(app, seconds=30)  # another round: nothing fires twice
            await eventually(
                lambda: "sla.escalate.1" in [e.kind for e in incident(tmp_path).timeline]
            )

            w.synapse.send_text(w.eng_token, w.incidents, "!ack", thread_root=root["event_id"])
            w.synapse.send_text(
                w.eng_token,
                w.incidents,
                "!update Rolling back the router.",
                thread_root=root["event_id"],
            )
            await eventually(lambda: bot_notices(w, w.incidents, "Update sent to"))
            moved = incident(tmp_path).next_update_by
            assert moved > first_due + timedelta(minutes=20)

            clock.jump(app, minutes=51)
            [warning] = await eventually(
                lambda: bot_notices(w, w.incidents, "the next update to reporters is due")
            )
            assert thread_of(warning) == root["event_id"]
            clock.jump(app, minutes=10)
            await eventually(
                lambda: [m for m in relay.messages if b"still working on it" in m.content]
            )
            await eventually(lambda: bot_notices(w, w.incidents, "A holding reply went to 1"))
            clock.jump(app, minutes=5)  # overdue again? no: the holding reply made a promise
            await eventually(lambda: incident(tmp_path).next_update_by > moved)
        assert len(escalations(pd)) == 1
        assert len([m for m in relay.messages if b"still working on it" in m.content]) == 1
    assert len(bot_notices(w, w.incidents, "nobody has acknowledged it.")) == 1
    assert len(bot_notices(w, w.incidents, "A holding reply went to")) == 1
    assert len(bot_notices(w, w.incidents, "the next update to reporters is due")) == 1


async def test_restart_across_a_due_reminder_sends_it_once(world: World, tmp_path: Path) -> None:
    """The daemon stops before respond-by and starts after it: the overdue reminder and the
    escalation go out once on start, and not again after another restart."""
    w = world
    clock = JumpingClock(IN_HOURS)
    async with FakePagerDuty() as pd, SmtpCapture() as relay:
        config = config_for(w, tmp_path, relay.port, pd.url)
        async with connected(config, clock) as app:
            await send_mail(app.smtp_port or 0, email_bytes())
            await eventually(lambda: bot_notices(w, w.incidents, "INC-1 · P1"))
        clock.offset += timedelta(minutes=25)
        for _ in range(2):
            async with connected(config, clock):
                await eventually(lambda: bot_notices(w, w.incidents, "nobody has acknowledged it."))
                await eventually(lambda: escalations(pd))
        assert len(escalations(pd)) == 1
    assert len(bot_notices(w, w.incidents, "nobody has acknowledged it.")) == 1
    assert len(bot_notices(w, w.incidents, "a response is due by")) == 0
    kinds = [e.kind for e in incident(tmp_path).timeline]
    assert kinds.count("sla.respond.overdue") == 1 and kinds.count("sla.escalate.1") == 1
