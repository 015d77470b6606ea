"""End to end with the real App, a real Synapse and a Zendesk fake: an email report opens a
ticket, `!update` is mirrored as a comment, `!resolve` solves it with the resolution text;
the security rule escalates at once; `!statuspage open` publishes and `!resolve` resolves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import email_bytes, eventually, make_config
from tests.fakes.smtp_capture import SmtpCapture
from tests.fakes.statuspage import FakeStatuspage
from tests.fakes.zendesk import FakeZendesk
from tests.test_matrix_e2e import (  # noqa: F401  (fixtures)
    World,
    bot_notices,
    connected,
    incident,
    relay,
    report_by_mail,
    world,
)

pytestmark = pytest.mark.peer


def config_with(w: World, state: Path, relay_port: int, **sections: Any) -> Any:
    return make_config(
        state,
        mail_out={
            "mode": "smtp",
            "smtp": {"host": "127.0.0.1", "port": relay_port, "starttls": False},
        },
        matrix={
            "homeserver": w.synapse.url,
            "user_id": w.bot,
            "password": {"value": w.bot_password},
            "incidents_room": w.incidents,
            "engineers": [w.eng],
            "sync_timeout_s": 1,
            "backoff_max_s": 1,
        },
        **sections,
    )


def zendesk_section(fake: FakeZendesk) -> dict[str, Any]:
    return {
        "backend": "zendesk",
        "zendesk": {"url": fake.url, "email": "agent@example.org", "token": {"value": "zd-token"}},
    }


async def test_email_to_ticket_update_comment_resolve_solved(
    world: World, relay: SmtpCapture, tmp_path: Path
) -> None:
    """Report → Zendesk ticket (id and link recorded) → !update mirrored once as a private
    comment → !title renames it → !resolve solves it with the resolution text."""
    w = world
    async with FakeZendesk() as zd:
        config = config_with(w, tmp_path, relay.port, tickets=zendesk_section(zd))
        async with connected(config) as app:
            root = await report_by_mail(w, app, email_bytes(message_id="<t-1@tenant.example>"))
            [ticket] = await eventually(lambda: list(zd.tickets.values()))
            tid = ticket["id"]
            assert ticket["subject"] == "[INC-1] Our site is down"
            assert "Triage: P1" in ticket["description"]
            for text in (
                "!update The load balancer is back.",
                "!title Load balancer failure",
                "!resolve Replaced the faulty node.",
            ):
                w.synapse.send_text(w.eng_token, w.incidents, text, thread_root=root["event_id"])
            await eventually(lambda: zd.tickets[tid]["status"] == "solved", timeout=20)
            await eventually(lambda: zd.tickets[tid]["subject"] == "[INC-1] Load balancer failure")
        bodies = [c["body"] for c in zd.comments[tid]]
        assert sum("The load balancer is back." in b for b in bodies) == 1
        assert any("Replaced the faulty node." in b and "Resolved by" in b for b in bodies)
        assert zd.public_comments(tid) == []
    final = incident(tmp_path)
    assert final.status == "resolved"
    assert any(e.kind == "ticketed" and f"{tid}" in e.text for e in final.timeline)


async def test_security_report_escalates_and_is_never_published(
    world: World, relay: SmtpCapture, tmp_path: Path
) -> None:
    """A security breach report emails the security address at once; !statuspage open is
    refused for it."""
    w = world
    async with FakeStatuspage() as sp:
        config = config_with(
            w,
            tmp_path,
            relay.port,
            security={"email": "security@example.org"},
            statuspage={
                "page_id": "pg1",
                "api_key": {"value": "sp-key"},
                "url": sp.url,
                "components": {"api": "cmpapi"},
            },
        )
        async with connected(config) as app:
            raw = email_bytes(
                subject="URGENT: security breach",
                body="Someone has access to our production space who shouldn't.",
            )
            root = await report_by_mail(w, app, raw)
            await eventually(
                lambda: any(m.rcpt_tos == ("security@example.org",) for m in relay.messages)
            )
            w.synapse.send_text(
                w.eng_token,
                w.incidents,
                "!statuspage open api Looking",
                thread_root=root["event_id"],
            )
            await eventually(lambda: bot_notices(w, w.incidents, "security incident"))
        assert sp.incidents == {}
    [alert] = [m for m in relay.messages if m.rcpt_tos == ("security@example.org",)]
    assert b"INC-1" in alert.content and b"alice@tenant.example" in alert.content
    kinds = [e.kind for e in incident(tmp_path).timeline]
    assert "security.escalated" in kinds


async def test_statuspage_open_and_resolve_from_chat(
    world: World, relay: SmtpCapture, tmp_path: Path
) -> None:
    """!statuspage open ticks the component and notifies; !update --public posts there (not
    the flag to reporters); !resolve resolves it."""
    w = world
    async with FakeStatuspage() as sp:
        config = config_with(
            w,
            tmp_path,
            relay.port,
            statuspage={
                "page_id": "pg1",
                "api_key": {"value": "sp-key"},
                "url": sp.url,
                "components": {"api": "cmpapi", "apps": "cmpapps"},
            },
        )
        async with connected(config) as app:
            root = await report_by_mail(w, app, email_bytes())
            thread = root["event_id"]
            w.synapse.send_text(
                w.eng_token,
                w.incidents,
                "!statuspage open api Apps may return errors.",
                thread_root=thread,
            )
            [sid] = await eventually(lambda: list(sp.incidents))
            w.synapse.send_text(
                w.eng_token, w.incidents, "!update --public Fix deployed.", thread_root=thread
            )
            await eventually(
                lambda: any(
                    u["body"] == "Fix deployed." for u in sp.incidents[sid]["incident_updates"]
                )
            )
            w.synapse.send_text(
                w.eng_token, w.incidents, "!resolve All good now.", thread_root=thread
            )
            await eventually(lambda: sp.incidents[sid]["status"] == "resolved")
        assert sp.components == {"cmpapi": "operational"}
        assert sp.incidents[sid]["name"] == "Possible issue being investigated: api"
    assert not any(b"--public" in m.content for m in relay.messages)
    kinds = [e.kind for e in incident(tmp_path).timeline]
    assert {"statuspage.opened", "statuspage.updated", "statuspage.resolved"} <= set(kinds)
