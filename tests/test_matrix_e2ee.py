"""Encrypted Matrix rooms against a real Synapse, with an engineer whose client encrypts too
(matrix-nio on vodozemac): the incident flow, a restart on the same device, and a message the
bot cannot decrypt producing one notice and no action."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import email_bytes, eventually, make_config
from tests.fakes.smtp_capture import SmtpCapture
from tests.peers.nio_engineer import Engineer
from tests.peers.synapse import Synapse
from tests.test_matrix_e2e import connected, incident, send_mail

pytestmark = pytest.mark.peer
PICKLE_KEY = "pickle-key-for-the-tests-0123456789"


@dataclass
class World:
    synapse: Synapse
    bot: str
    eng: str
    eng_token: str
    incidents: str
    engineer: Engineer


@pytest.fixture
async def world(synapse: Synapse, tmp_path: Path) -> AsyncIterator[World]:
    bot, _, _ = synapse.register("gateway", password="bot-password-1")
    eng, eng_token, _ = synapse.register("engineer")
    incidents = synapse.create_room(eng_token, invite=[bot], name="incidents", encrypted=True)
    engineer = Engineer(synapse.url, eng, tmp_path / "engineer-keys")
    await engineer.login(synapse.passwords[eng])
    try:
        yield World(synapse, bot, eng, eng_token, incidents, engineer)
    finally:
        await engineer.close()


def config_for(w: World, state: Path, relay_port: int) -> Any:
    return make_config(
        state,
        mail_out={
            "mode": "smtp",
            "smtp": {"host": "127.0.0.1", "port": relay_port, "starttls": False},
        },
        matrix={
            "homeserver": w.synapse.url,
            "user_id": w.bot,
            "password": {"value": "bot-password-1"},
            "incidents_room": w.incidents,
            "engineers": [w.eng],
            "sync_timeout_s": 1,
            "backoff_max_s": 1,
            "encryption": "on",
            "pickle_key": {"value": PICKLE_KEY},
            "undecryptable_wait_s": 1,
        },
    )


def bot_events(w: World) -> list[dict[str, Any]]:
    return [
        e
        for e in w.synapse.messages(w.eng_token, w.incidents, limit=200)
        if e["sender"] == w.bot and e["type"] in ("m.room.message", "m.room.encrypted")
    ]


def crypto_stores(state: Path) -> list[Path]:
    return sorted((state / "matrix-crypto").glob("*.db"))


@pytest.fixture
async def relay() -> AsyncIterator[SmtpCapture]:
    async with SmtpCapture() as capture:
        yield capture


async def test_encrypted_room_full_flow_and_restart_on_the_same_device(
    world: World, relay: SmtpCapture, tmp_path: Path
) -> None:
    """In an encrypted room: announcement → !ack → !update relayed by mail; everything the bot
    posts is encrypted; the crypto store is private; after a restart the bot keeps its device
    and still reads and answers."""
    w, eng = world, world.engineer
    config = config_for(w, tmp_path, relay.port)
    async with connected(config) as app:
        assert app.matrix is not None and app.matrix.encrypted_rooms == [w.incidents]
        await send_mail(app.smtp_port or 0, email_bytes(message_id="<rep-1@tenant.example>"))
        [root] = await eventually(lambda: eng.notices_with("INC-1 · P1"), timeout=30)
        await eng.say(w.incidents, "!ack", thread_root=root.event_id)
        await eventually(lambda: eng.notices_with("acknowledged by"), timeout=30)
        await eng.say(w.incidents, "!update The load balancer is back.", thread_root=root.event_id)
        await eventually(lambda: len(relay.messages) >= 2, timeout=30)
        assert b"The load balancer is back." in relay.messages[1].content
    sent = bot_events(w)
    assert sent and all(e["type"] == "m.room.encrypted" for e in sent)
    [store] = crypto_stores(tmp_path)
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.parent.stat().st_mode) == 0o700
    assert PICKLE_KEY.encode() not in store.read_bytes()

    async with connected(config):
        await eng.say(w.incidents, "!note after restart", thread_root=root.event_id)
        await eventually(lambda: eng.notices_with("Noted on the timeline"), timeout=30)
    assert crypto_stores(tmp_path) == [store]  # the same device: no second key store
    kinds = [e.kind for e in incident(tmp_path).timeline]
    assert {"command.ack", "command.update", "command.note"} <= set(kinds)


async def test_undecryptable_command_gets_one_notice_and_is_not_acted_on(
    world: World, relay: SmtpCapture, tmp_path: Path
) -> None:
    """A command encrypted with a session the bot never received: the bot asks for the key,
    then posts one notice naming the sender; the incident is untouched; a restart does not
    repeat the notice."""
    w, eng = world, world.engineer
    config = config_for(w, tmp_path, relay.port)
    wanted = f"could not decrypt a message from {w.eng}"
    async with connected(config) as app:
        await send_mail(app.smtp_port or 0, email_bytes())
        await eventually(lambda: eng.notices_with("INC-1 · P1"), timeout=30)
        await eng.say_with_unshared_session(w.incidents, "!resolve INC-1 all fine")
        await eventually(lambda: eng.notices_with(wanted), timeout=30)
    async with connected(config):
        await eng.say(w.incidents, "!help")
        await eventually(lambda: eng.notices_with("!status"), timeout=30)
    assert len(await eng.notices_with(wanted)) == 1
    assert incident(tmp_path).status == "open"


async def test_encrypted_room_without_encryption_is_flagged_and_noticed(
    world: World, relay: SmtpCapture, tmp_path: Path
) -> None:
    """With encryption off, an encrypted incidents room makes the link report needs_e2ee, and
    an encrypted message there gets the notice instead of vanishing."""
    w, eng = world, world.engineer
    config = config_for(w, tmp_path, relay.port)
    assert config.matrix is not None
    plain = config.model_copy(
        update={
            "matrix": config.matrix.model_copy(update={"encryption": "off", "pickle_key": None})
        }
    )
    wanted = f"could not decrypt a message from {w.eng}"
    async with connected(plain) as app:
        assert app.matrix is not None and app.matrix.state == "needs_e2ee"
        await eng.say(w.incidents, "!help")
        await eventually(
            lambda: [e for e in bot_events(w) if wanted in e["content"].get("body", "")], timeout=30
        )
