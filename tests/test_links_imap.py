"""IMAP intake across repeated restarts of a real Dovecot: it always comes back, and while
the server is down /healthz says so."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import pytest

from tests.conftest import IN_HOURS, email_bytes, eventually, running, ticking
from tests.peers.dovecot import Dovecot
from tests.test_http_status import get
from tests.test_imap_intake import box_of, deliver, idling, imap_config, processed

pytestmark = [pytest.mark.peer, pytest.mark.slow]

CYCLES = 8


@pytest.mark.timeout(240)
async def test_intake_survives_repeated_dovecot_restarts_while_idling(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    """Eight stop/start cycles of Dovecot under an idling intake: each time /healthz shows
    `imap:ops` not connected while the server is down, the intake reconnects, and mail
    delivered afterwards is processed."""
    config = imap_config(tmp_path, dovecot)
    config = config.model_copy(update={"http": config.http.model_copy(update={"port": 0})})
    back: list[float] = []
    async with running(config, clock=ticking(IN_HOURS)) as app:
        box = box_of(app)
        for cycle in range(CYCLES):
            await eventually(lambda: idling(box), timeout=30)
            await asyncio.sleep(0.05 * cycle)  # vary where in the IDLE the stop lands
            await asyncio.to_thread(dovecot.stop)
            await eventually(lambda: box.state != "connected", timeout=10)
            _, _, body = await get(app.http_port, "/healthz")
            assert body["components"]["imap:ops"] != "connected", body
            await asyncio.to_thread(dovecot.start)
            started = time.monotonic()
            await eventually(lambda: box.state == "connected", timeout=30)
            back.append(time.monotonic() - started)
            await eventually(lambda: idling(box), timeout=30)
            await deliver(
                dovecot,
                email_bytes(subject=f"after restart {cycle}", sender=f"r{cycle}@tenant.example"),
            )
            await eventually(lambda n=cycle + 1: processed(tmp_path, n), timeout=30)
    print(
        f"\nFIGURE imap restarts: cycles={CYCLES} processed_after={CYCLES} "
        f"reconnect_p50={statistics.median(back):.2f}s max={max(back):.2f}s"
    )
