"""Device trust in the core, as pure plans: under `trust = "verified-only"` commands (and
reports in rooms that ask for it) count only from trusted devices; the Matrix adapter reads
the record of the sending device only from where it writes it."""

from __future__ import annotations

import json
from dataclasses import replace

from adapters.matrix_events import SENDER_DEVICE, chat_message, legacy_inbox_message
from gateway.domain import ChatDevice, PlanContext
from gateway.plan.chat import plan_report_room
from gateway.plan.commands import CommandEnv, parse_command, plan_command
from tests.conftest import IN_HOURS
from tests.test_commands import BOOK, CHAT, SENDER, answers, incident, msg

VERIFIED = replace(CHAT, verified_only=True, verified_report_rooms=frozenset({"!ask:hs"}))
D1, D2 = ChatDevice("D1", trusted=True), ChatDevice("D2", trusted=False)


def command(body: str, device: ChatDevice | None, chat: object = VERIFIED) -> object:
    parsed = parse_command(body)
    assert parsed is not None
    ctx = PlanContext(incident(), 99, lambda i: None, lambda: [incident()])
    env = CommandEnv(chat, BOOK, SENDER, "chatops-gateway", "c9", IN_HOURS)  # type: ignore[arg-type]
    return plan_command(replace(msg(body), device=device), parsed, ctx, env)


def test_command_from_an_untrusted_device_is_refused_with_the_reason() -> None:
    """An engineer's !update from device D2 changes nothing and says why, naming D2."""
    plan = command("!update hello", D2)
    assert plan.outcome == "refused: device not trusted" and plan.incident_id is None
    [answer] = answers(plan)
    assert "D2" in answer and "verified-only" in answer


def test_plaintext_command_is_refused_under_verified_only() -> None:
    """A message sent unencrypted into the room cannot show a device: refused, with why."""
    plan = command("!resolve all fine", None)
    assert plan.outcome == "refused: device not trusted"
    assert "not encrypted" in answers(plan)[0]


def test_trusted_device_and_tofu_mode_are_obeyed() -> None:
    """D1 is obeyed under verified-only; without verified-only the device is not consulted."""
    assert command("!update hello", D1).incident_id == 4
    assert command("!update hello", D2, chat=CHAT).incident_id == 4


def test_report_room_with_verified_devices_only_refuses_an_untrusted_device() -> None:
    """A report from D2 opens nothing and is answered; from D1 it opens an incident."""
    report = replace(
        msg("Our site is down", sender="@tenant:hs", room="!ask:hs", thread=None), device=D2
    )
    refused = plan_report_room(report, None, 5, BOOK, VERIFIED, "gw", IN_HOURS)
    assert refused.outcome == "refused: device not trusted" and refused.new_incident is None
    opened = plan_report_room(replace(report, device=D1), None, 5, BOOK, VERIFIED, "gw", IN_HOURS)
    assert opened.new_incident is not None


def test_the_device_record_is_read_only_from_the_adapter_key() -> None:
    """Stored chat events carry the device under SENDER_DEVICE; anything else is no device."""
    event = {
        "type": "m.room.message",
        "event_id": "$e",
        "sender": "@eng:hs",
        "content": {
            "msgtype": "m.text",
            "body": "!ack",
            SENDER_DEVICE: {"device_id": "D9", "trusted": True},
        },
        SENDER_DEVICE: {"device_id": "D2", "trusted": "yes"},
    }
    stored = json.dumps({"room_id": "!inc:hs", "sender_power": 0, "event": event}).encode()
    parsed = legacy_inbox_message(stored)
    assert parsed is not None and parsed.device == ChatDevice("D2", trusted=False)
    assert chat_message("!inc:hs", event, 0).device == ChatDevice("D2", trusted=False)
    del event[SENDER_DEVICE]
    assert chat_message("!inc:hs", event, 0).device is None
