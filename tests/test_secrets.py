"""Secrets never leak: with every secret of the configuration set to a distinctive value and
every peer refusing them (PagerDuty 400 quoting the key back, the relay refusing the
password, Synapse refusing the token and the password), none of the values — nor their
base64 forms — appears in the daemon's output, the CLI's output, or anywhere in the database."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiosmtplib
import pytest

from tests.conftest import email_bytes, eventually
from tests.daemon import Daemon
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.smtp_capture import SmtpCapture
from tests.peers.synapse import Synapse

pytestmark = pytest.mark.peer

ROUTING_KEY = "LeakCanaryRoutingKeyQ9x8w7v6u5t4"
RELAY_PASSWORD = "leak-canary-relay-Pa55-7Zq"
MATRIX_TOKEN = "syt_leak_canary_TOKEN_4Xw2"
MATRIX_PASSWORD = "leak-canary-matrix-Pa55-3Lp"
THREAD_KEY = "leak-canary-thread-key-Hm4c-9Vb"
SECRETS = (ROUTING_KEY, RELAY_PASSWORD, MATRIX_TOKEN, MATRIX_PASSWORD, THREAD_KEY)


def forms(secret: str) -> list[str]:
    """The value and the encodings a careless log line would carry it in."""
    plain = base64.b64encode(b"\0gateway\0" + secret.encode()).decode()
    return [secret, base64.b64encode(secret.encode()).decode(), plain, repr(secret)[1:-1]]


def leaks(text: str) -> list[str]:
    return [form for s in SECRETS for form in forms(s) if form in text]


def config_toml(
    state: Path, port: int, pd: FakePagerDuty, relay: SmtpCapture, synapse: Synapse, room: str
) -> str:
    return f"""
[state]
dir = "{state}"
[smtp]
port = {port}
[log]
format = "json"
level = "debug"
[outbox]
max_attempts = 2
backoff_initial_s = 0.05
backoff_max_s = 0.2
drain_timeout_s = 1
poll_interval_s = 0.2
[pagerduty]
routing_key = {{ value = "{ROUTING_KEY}" }}
url = "{pd.url}"
[threading]
key = {{ value = "{THREAD_KEY}" }}
[trust]
allow_domains = ["tenant.example"]
[mail_out]
mode = "smtp"
[mail_out.smtp]
host = "{relay.host}"
port = {relay.port}
starttls = false
username = "gateway"
password = {{ file = "relay-password" }}
[matrix]
homeserver = "{synapse.url}"
user_id = "@gateway-canary:localhost"
access_token = {{ value = "{MATRIX_TOKEN}" }}
password = {{ value = "{MATRIX_PASSWORD}" }}
incidents_room = "{room}"
engineers = ["@eng:localhost"]
sync_timeout_s = 1
backoff_max_s = 1
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def dead_count(state: Path) -> int:
    db = state / "gateway.sqlite3"
    if not db.exists():
        return 0
    conn = sqlite3.connect(db)
    try:
        (n,) = conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'dead'").fetchone()
        return int(n)
    finally:
        conn.close()


async def test_no_secret_reaches_logs_cli_output_or_the_database(
    synapse: Synapse, tmp_path: Path
) -> None:
    """The daemon meets every failure path for its credentials; logs, CLI output (including
    `check-config` errors) and the database bytes hold none of the secret values."""
    _, eng_token, _ = synapse.register("engineer")
    room = synapse.create_room(eng_token, name="incidents")
    async with FakePagerDuty() as pd, SmtpCapture(credentials={"gateway": "other"}) as relay:
        pd.fail_next(
            status=400,
            body=json.dumps(
                {
                    "status": "invalid event",
                    "message": "Event object is invalid",
                    "errors": [f"routing_key {ROUTING_KEY} is not an integration key"],
                }
            ),
        )
        d = Daemon(tmp_path)
        state = tmp_path / "state"
        (tmp_path / "relay-password").write_text(RELAY_PASSWORD + "\n")
        d.config.write_text(config_toml(state, d.port, pd, relay, synapse, room))
        try:
            await asyncio.to_thread(d.start)  # blocking calls in threads: the fakes run here
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=d.port) as smtp:
                await smtp.sendmail("alice@tenant.example", ["emergency@localhost"], email_bytes())
            await eventually(lambda: dead_count(state) >= 2, timeout=60)
            outputs = [
                await asyncio.to_thread(d.cli, *args)
                for args in (
                    ("incidents", "show", "INC-1"),
                    ("incidents", "show", "INC-1", "--json"),
                    ("incidents", "list", "--json"),
                    ("outbox", "list"),
                )
            ]
            assert await asyncio.to_thread(d.stop) == 0
        finally:
            d.kill()
    assert dead_count(state) >= 2  # the page (400) and the email (535) were given up on
    bad = tmp_path / "bad.toml"
    bad.write_text(
        config_toml(state, d.port, pd, relay, synapse, room).replace(
            f'access_token = {{ value = "{MATRIX_TOKEN}" }}',
            f'access_token = {{ value = "{MATRIX_TOKEN}", file = "x", colour = 1 }}',
        )
    )
    outputs += [cli("check-config", str(bad)), cli("check-config", str(d.config))]
    assert outputs[-2].returncode == 3 and "matrix.access_token" in outputs[-2].stderr
    texts = {"daemon log": d.log.read_text()}
    for n, out in enumerate(outputs):
        texts[f"cli {n} ({out.args[3:5]})"] = out.stdout + out.stderr
    for suffix in ("", "-wal"):
        db = state / f"gateway.sqlite3{suffix}"
        if db.exists():
            texts[db.name] = db.read_bytes().decode("latin-1")
    found = {name: leaks(text) for name, text in texts.items() if leaks(text)}
    checked = sum(len(t) for t in texts.values())
    print(
        f"\nFIGURE secrets: secrets={len(SECRETS)} forms_each={len(forms(ROUTING_KEY))} "
        f"sources={len(texts)} bytes_checked={checked} leaks={len(found)}"
    )
    # Each failure path was really taken (and logged, scrubbed):
    for seen in (
        "<routing key>",
        "relay rejected our credentials",
        "the homeserver refused the password",
    ):
        assert seen in texts["daemon log"]
    assert found == {}
