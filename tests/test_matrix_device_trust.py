"""`trust = "verified-only"` decides who gives commands, against a real Synapse: the same
engineer on a device that is not pinned is told why and nothing happens; the pinned device
is obeyed. Report rooms can require verified devices too."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import email_bytes, eventually
from tests.fakes.smtp_capture import SmtpCapture
from tests.peers.nio_engineer import Engineer
from tests.peers.synapse import Synapse
from tests.test_matrix_e2e import connected, incident, send_mail
from tests.test_matrix_e2ee import World, config_for

pytestmark = pytest.mark.peer
REFUSED = "is not one of them"


@pytest.fixture
async def world(synapse: Synapse, tmp_path: Path) -> AsyncIterator[World]:
    """An encrypted incidents room with the bot and an engineer on device D1."""
    bot, _, _ = synapse.register("gateway", password="bot-password-1")
    eng, eng_token, _ = synapse.register("engineer")
    incidents = synapse.create_room(eng_token, invite=[bot], name="incidents", encrypted=True)
    engineer = Engineer(synapse.url, eng, tmp_path / "engineer-d1")
    await engineer.login(synapse.passwords[eng])
    try:
        yield World(synapse, bot, eng, eng_token, incidents, engineer)
    finally:
        await engineer.close()


@pytest.fixture
async def second_device(world: World, tmp_path: Path) -> AsyncIterator[Engineer]:
    """The same engineer logged in on a new device D2 (never pinned)."""
    d2 = Engineer(world.synapse.url, world.eng, tmp_path / "engineer-d2")
    await d2.login(world.synapse.passwords[world.eng])
    try:
        yield d2
    finally:
        await d2.close()


@pytest.fixture
async def relay() -> AsyncIterator[SmtpCapture]:
    """The outgoing relay that receives the reporter's copies of updates."""
    async with SmtpCapture() as capture:
        yield capture


def pinned_config(w: World, state: Path, relay_port: int, **extra: Any) -> Any:
    config = config_for(w, state, relay_port)
    assert config.matrix is not None and w.engineer.client.olm is not None
    pin = {
        "user": w.eng,
        "device": w.engineer.client.device_id,
        "ed25519": w.engineer.client.olm.account.identity_keys["ed25519"],
    }
    matrix = (
        config.matrix.model_dump(mode="json")
        | {
            "trust": "verified-only",
            "trusted_devices": [pin],
            "password": {"value": "bot-password-1"},
            "pickle_key": {"value": "p" * 32},
        }
        | extra
    )
    return config.model_copy(update={"matrix": type(config.matrix).model_validate(matrix)})


async def test_unpinned_device_of_an_engineer_is_refused_and_the_pinned_one_obeyed(
    world: World, second_device: Engineer, relay: SmtpCapture, tmp_path: Path
) -> None:
    """D2 sends !update: the engineer is told why and the reporter hears nothing; D1's
    !update reaches the reporter; only D1's command is on the timeline."""
    w, d1, d2 = world, world.engineer, second_device
    async with connected(pinned_config(w, tmp_path, relay.port)) as app:
        await send_mail(app.smtp_port or 0, email_bytes(message_id="<rep-1@tenant.example>"))
        [root] = await eventually(lambda: d1.notices_with("INC-1 · P1"), timeout=30)
        await eventually(lambda: len(relay.messages) >= 1, timeout=30)  # the acknowledgement
        await d2.pull()
        await d2.say(w.incidents, "!update hello from the new device", thread_root=root.event_id)
        [refusal] = await eventually(lambda: d1.notices_with(REFUSED), timeout=30)
        assert d2.client.device_id in refusal.body and "verified-only" in refusal.body
        await d1.say(w.incidents, "!update The load balancer is back.", thread_root=root.event_id)
        await eventually(lambda: len(relay.messages) >= 2, timeout=30)
    assert not any(b"hello from the new device" in m.content for m in relay.messages)
    assert b"The load balancer is back." in relay.messages[1].content
    updates = [e for e in incident(tmp_path).timeline if e.kind == "command.update"]
    assert [e.text for e in updates] == ["!update The load balancer is back."]


async def test_report_room_requiring_verified_devices_refuses_an_unpinned_device(
    world: World, second_device: Engineer, relay: SmtpCapture, tmp_path: Path
) -> None:
    """In a report room with verified_devices_only, D2's report opens nothing and is
    answered with the reason; D1's report opens an incident."""
    w, d1, d2 = world, world.engineer, second_device
    room = w.synapse.create_room(w.eng_token, invite=[w.bot], name="reports", encrypted=True)
    rooms = [{"room": room, "mailbox": "support", "verified_devices_only": True}]
    async with connected(pinned_config(w, tmp_path, relay.port, report_rooms=rooms)):
        await d1.pull()
        await d2.pull()
        await d2.say(room, "Our site is down since 10:00, please help")
        await eventually(lambda: d1.notices_with(REFUSED), timeout=30)
        assert incident(tmp_path) is None
        await d1.say(room, "Our site is down since 10:05, please help")
        await eventually(lambda: d1.notices_with("we have logged this as INC-1"), timeout=30)
    assert incident(tmp_path) is not None
