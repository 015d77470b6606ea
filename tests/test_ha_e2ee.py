"""Two nodes in an encrypted Matrix room: the bot device's crypto store moves with the
`matrix` lease through PostgreSQL. The node that takes over after a SIGKILL continues as the
same device: it reads an engineer's next command, encrypted with the room key the engineer
shared with the dead node only, and its answers are readable by the engineer. Real Synapse,
real PostgreSQL, two real daemons, an engineer whose client encrypts (matrix-nio)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import eventually
from tests.fakes.pagerduty import FakePagerDuty
from tests.peers.nio_engineer import Engineer
from tests.peers.postgres import PostgresServer
from tests.peers.synapse import Synapse
from tests.pg_nodes import health, pg_node, query, send, wait_for
from tests.test_ha import _pd
from tests.test_ha_matrix import _in, _timeline

pytestmark = pytest.mark.peer

PICKLE_KEY = "pickle-key-shared-by-both-nodes-0123"


def _matrix(synapse: Synapse, bot: str, room: str, engineer: str) -> str:
    return (
        f'[matrix]\nhomeserver = "{synapse.url}"\nuser_id = "{bot}"\n'
        f'password = {{ value = "bot-password-1" }}\nincidents_room = "{room}"\n'
        f'engineers = ["{engineer}"]\nsync_timeout_s = 1\nbackoff_max_s = 1\n'
        f'encryption = "on"\npickle_key = {{ value = "{PICKLE_KEY}" }}\n'
        "undecryptable_wait_s = 5\n"
    )


def _holder(dsn: str, lease: str) -> str | None:
    rows = query(
        dsn,
        "SELECT holder FROM leases WHERE name = %s AND expires_at > clock_timestamp()",
        lease,
    )
    return str(rows[0][0]).split(":")[0] if rows else None


async def test_the_node_taking_over_is_the_same_device_in_an_encrypted_room(
    postgres: PostgresServer, synapse: Synapse, tmp_path: Path
) -> None:
    """a announces a report and applies `!ack` in the encrypted room, then is SIGKILLed;
    b takes the lease over with the shared store and applies `!update`, which the engineer
    encrypted with the session shared with a alone; the engineer reads b's answer; the bot
    has one device throughout, and no message is left undecryptable."""
    bot, _, _ = synapse.register("gateway", password="bot-password-1")
    eng_id, eng_token, _ = synapse.register("engineer")
    room = synapse.create_room(eng_token, invite=[bot], name="incidents", encrypted=True)
    eng = Engineer(synapse.url, eng_id, tmp_path / "engineer-keys")
    await eng.login(synapse.passwords[eng_id])
    dsn = postgres.new_database()
    async with FakePagerDuty() as pd:
        extra = _pd(pd.url) + _matrix(synapse, bot, room, eng_id)
        a = pg_node(tmp_path / "a", dsn, "a", lease_s=3.0, extra=extra)
        b = pg_node(tmp_path / "b", dsn, "b", lease_s=3.0, extra=extra)
        try:
            await _in(a.start)
            assert await _in(wait_for, lambda: _holder(dsn, "matrix") == "a")
            assert await _in(wait_for, lambda: (h := health(a)) and h["healthy"], 30)
            await _in(b.start)
            assert (await _in(send, b, 1, "Checkout is down"))[0] == 250
            [root] = await eventually(lambda: eng.notices_with("INC-1 · P1"), timeout=30)
            await eng.say(room, "!ack", thread_root=root.event_id)
            await eventually(lambda: eng.notices_with("acknowledged by"), timeout=30)
            assert query(dsn, "SELECT count(*) FROM matrix_crypto")[0][0] >= 1
            a.kill()
            assert await _in(wait_for, lambda: _holder(dsn, "matrix") == "b", 30)
            await eng.say(room, "!update Rolling back.", thread_root=root.event_id)
            await eventually(lambda: eng.notices_with("Update sent to 1 reporter"), timeout=40)
            assert _timeline(dsn)["command.update"] == 1
            assert await _in(b.stop) == 0
            assert not await eng.notices_with("could not decrypt")
            devices = list(eng.client.device_store.active_user_devices(bot))
            assert len(devices) == 1, [d.device_id for d in devices]
        finally:
            a.kill()
            b.kill()
            await eng.close()
    assert _timeline(dsn)["command.ack"] == 1
    b_log = b.log.read_text()
    assert "matrix.e2ee.store_restored" in b_log and "matrix.e2ee.store_missing" not in b_log
