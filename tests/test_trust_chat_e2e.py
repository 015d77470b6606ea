"""Holding, seen from the incidents room of a real Synapse: mail held by the limits is
announced there once, and a chat report from someone not on the allow-list is held for an
engineer's `!page` instead of paging."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import email_bytes, eventually
from tests.fakes.smtp_capture import SmtpCapture
from tests.test_matrix_e2e import World, bot_notices, config_for, connected, incident, world
from tests.test_trust_e2e import read, send, settled

pytestmark = pytest.mark.peer
__all__ = ["world"]  # the fixture, shared with the Matrix tests


async def test_held_mail_is_announced_in_the_incidents_room_once(
    world: World, tmp_path: Path
) -> None:
    """Past the per-sender limit every further mail is held, and the incidents room is
    told once (when holding starts), not once per held mail."""
    w = world
    problems = [
        "Login page returns 500",
        "Database connection refused",
        "Certificate expired on the API",
        "Logs missing since this morning",
        "Queue workers stopped",
        "Object storage refuses uploads",
    ]
    async with SmtpCapture() as relay:
        base = config_for(w, tmp_path, relay.port)
        config = base.model_copy(
            update={"limits": base.limits.model_copy(update={"per_sender": 2})}
        )
        async with connected(config) as app:
            for n, subject in enumerate(problems):
                await send(
                    app.smtp_port or 0,
                    email_bytes(subject=subject, body=f"Report {n}", sender="carol@tenant.example"),
                    "carol@tenant.example",
                )
            await eventually(
                lambda: settled(tmp_path) and bot_notices(w, w.incidents, "Holding mail from"),
                timeout=20,
            )
    held = read(tmp_path, "SELECT COUNT(*) FROM inbox WHERE outcome LIKE 'held: rate limit%'")
    assert held == [(4,)]
    [notice] = bot_notices(w, w.incidents, "Holding mail from")
    assert "carol@tenant.example" in notice["content"]["body"]
    assert "not answered and pages nobody" in notice["content"]["body"]
    assert len(relay.messages) == 2  # the two mails within the limit were acknowledged


async def test_chat_report_from_a_stranger_is_held_until_an_engineer_pages(
    world: World, tmp_path: Path
) -> None:
    """A P1 reported in a report room by someone not on the allow-list: acknowledged, a
    ticket flagged "unverified sender", no page, and the incidents room is asked to check;
    the engineer's !page then pages once."""
    w = world
    async with SmtpCapture() as relay:
        base = config_for(w, tmp_path, relay.port)
        config = base.model_copy(
            update={"trust": base.trust.model_copy(update={"allow_addresses": []})}
        )
        async with connected(config):
            w.synapse.send_text(w.tenant_token, w.reports, "Our site is down, every page gives 502")
            await eventually(lambda: bot_notices(w, w.reports, "logged this as INC-1"))
            [asked] = await eventually(lambda: bot_notices(w, w.incidents, "!page INC-1"))
            assert w.tenant in asked["content"]["body"]
            await eventually(lambda: settled(tmp_path))
            held = incident(tmp_path)
            assert held.priority == "P1" and held.pages_sent == 0
            assert "unverified sender" in held.flags
            assert read(tmp_path, "SELECT COUNT(*) FROM tickets") == [(1,)]
            w.synapse.send_text(w.eng_token, w.incidents, "!page INC-1")
            await eventually(lambda: incident(tmp_path).pages_sent == 1)
    assert "unverified sender" not in incident(tmp_path).flags
