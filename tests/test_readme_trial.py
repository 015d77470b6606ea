"""The README's first command, as a newcomer runs it: `chatops-gateway run` with no
configuration file. A P1 report sent with an ordinary SMTP client becomes one P1 incident,
a page recorded in the store and a threaded acknowledgement written as an .eml file."""

from __future__ import annotations

import email
import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from email import policy
from pathlib import Path

EMBEDDED_PORT = 2525  # the embedded defaults' SMTP port (127.0.0.1)


def wait_for_port(proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-2000:]
        try:
            with socket.create_connection(("127.0.0.1", EMBEDDED_PORT), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the daemon did not listen on the embedded port")


def test_a_p1_to_the_default_daemon_pages_and_is_acknowledged(tmp_path: Path) -> None:
    """Embedded defaults (state under $STATE_DIRECTORY): incident, local page, .eml reply,
    and a warning in the log that this is a trial set-up."""
    env = {**os.environ, "STATE_DIRECTORY": str(tmp_path / "state"), "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(proc, log)
        with smtplib.SMTP("127.0.0.1", EMBEDDED_PORT, timeout=10) as client:
            client.sendmail(
                "alice@tenant.example",
                ["emergency@localhost"],
                b"From: alice@tenant.example\r\nTo: emergency@localhost\r\n"
                b"Subject: Our site is down\r\nMessage-ID: <trial-1@tenant.example>"
                b"\r\n\r\nAll our apps return 502.\r\n",
            )
        deadline = time.monotonic() + 20
        while True:
            listed = subprocess.run(
                [sys.executable, "-m", "gateway", "incidents", "list", "--json"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                check=True,
                text=True,
            )
            incidents = json.loads(listed.stdout)
            emls = list((tmp_path / "state" / "outgoing-mail").glob("*.eml"))
            if incidents and incidents[0]["pages_sent"] and emls:
                break
            assert time.monotonic() < deadline, (incidents, emls)
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    [incident] = incidents
    assert incident["priority"] == "P1" and incident["pages_sent"] == 1
    [eml] = emls
    reply = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert reply["To"] == "alice@tenant.example"
    assert reply["In-Reply-To"] == "<trial-1@tenant.example>"
    assert reply["Subject"] == f"Re: [{incident['reference']}] Our site is down"
    assert "gateway.embedded_defaults" in log.read_text()
