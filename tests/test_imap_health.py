"""Each IMAP intake's state on /healthz and in `chatops-gateway status`, against a real
Dovecot: a mailbox whose password is refused makes the daemon unhealthy (503) and is named."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.status import status_command
from gateway.config.model import Config, parse_config
from tests.conftest import IN_HOURS, eventually, running, ticking
from tests.peers.dovecot import Dovecot
from tests.test_http_status import get

pytestmark = pytest.mark.peer


def boxes_config(state: Path, dv: Dovecot, passwords: dict[str, str]) -> Config:
    """A daemon (SMTP and HTTP on free ports) watching one IMAP mailbox per name given."""
    boxes: list[dict[str, Any]] = [
        {
            "name": name,
            "host": "127.0.0.1",
            "port": dv.port,
            "tls": "none",
            "allow_plaintext": True,
            "user": "gw",
            "password": {"value": password},
            "backoff_max_s": 1.0,
        }
        for name, password in passwords.items()
    ]
    return parse_config(
        {"state": {"dir": str(state)}, "smtp": {"port": 0}, "http": {"port": 0}, "imap": boxes}
    )


async def test_refused_imap_password_makes_healthz_503_and_status_names_it(
    tmp_path: Path, dovecot: Dovecot, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two intakes, one with a wrong password: /healthz answers 503 naming `imap:bad` as
    bad_credentials while `imap:ops` is connected; `status` shows both and exits 1."""
    config = boxes_config(tmp_path, dovecot, {"ops": "gw-secret", "bad": "not-the-password"})
    async with running(config, clock=ticking(IN_HOURS)) as app:
        states = {box.name: box for box in app.imap}
        await eventually(
            lambda: states["bad"].state == "bad_credentials" and states["ops"].state == "connected"
        )
        status, _, body = await get(app.http_port, "/healthz")
        code = await asyncio.to_thread(status_command, config)
    assert status == 503
    assert body["components"]["imap:ops"] == "connected"
    assert body["components"]["imap:bad"] == "bad_credentials"
    assert body["problems"] == ["imap:bad: bad_credentials"]
    shown = capsys.readouterr().out
    assert code == 1
    assert re.search(r"imap:bad\s+bad_credentials", shown), shown
    assert re.search(r"imap:ops\s+connected", shown), shown


async def test_connected_imap_intake_is_healthy(
    tmp_path: Path, dovecot: Dovecot, capsys: pytest.CaptureFixture[str]
) -> None:
    """A logged-in intake is `connected`: /healthz answers 200 and `status` exits 0."""
    config = boxes_config(tmp_path, dovecot, {"ops": "gw-secret"})
    async with running(config, clock=ticking(IN_HOURS)) as app:
        [box] = app.imap
        await eventually(lambda: box.state == "connected")
        status, _, body = await get(app.http_port, "/healthz")
        code = await asyncio.to_thread(status_command, config)
    assert status == 200 and body["healthy"] is True
    assert body["components"]["imap:ops"] == "connected"
    assert code == 0
    assert re.search(r"imap:ops\s+connected", capsys.readouterr().out)
