"""Unreadable emergency mail, seen from the incidents room of a real Synapse: a stranger's
message whose triage runs out of time is announced as a P1 and the room is asked to
`!page` it; an engineer's `!page` then pages once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import email_bytes, eventually
from tests.fakes.smtp_capture import SmtpCapture
from tests.test_held_e2e import OutOfTime
from tests.test_matrix_e2e import World, bot_notices, config_for, connected, incident, world
from tests.test_trust_e2e import send, settled

pytestmark = pytest.mark.peer
__all__ = ["world"]  # the fixture, shared with the Matrix tests


async def test_unreadable_emergency_mail_is_announced_and_awaits_page(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No time to parse: the stranger's emergency mail is announced as a P1 with a request
    to !page it (not paged); the engineer's !page pages exactly once."""
    monkeypatch.setattr("gateway.app.ParseSandbox", OutOfTime)
    w = world
    async with SmtpCapture() as relay, connected(config_for(w, tmp_path, relay.port)) as app:
        await send(
            app.smtp_port or 0,
            email_bytes(sender="someone@elsewhere.example"),
            "someone@elsewhere.example",
        )
        [root] = await eventually(lambda: bot_notices(w, w.incidents, "INC-1 · P1"), timeout=30)
        assert (
            "Unreadable emergency message from someone@elsewhere.example" in root["content"]["body"]
        )
        [ask] = await eventually(lambda: bot_notices(w, w.incidents, "!page INC-1"))
        assert "could not read it" in ask["content"]["body"]
        await eventually(lambda: settled(tmp_path))
        assert incident(tmp_path).pages_sent == 0
        w.synapse.send_text(w.eng_token, w.incidents, "!page INC-1")
        await eventually(lambda: incident(tmp_path).pages_sent == 1, timeout=20)
        assert relay.messages == []  # nobody was answered: we could not read what was asked
