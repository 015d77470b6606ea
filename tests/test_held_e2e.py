"""Held mail and unreadable emergency mail, end to end: the real daemon and its CLI
(`held list`, `held release`), and real SMTP messages whose triage runs out of time."""

from __future__ import annotations

import json
import smtplib
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from gateway.parse.sandbox import TOO_SLOW, MailJob, ParseSandbox, Prepared, _Lost
from tests.conftest import IN_HOURS, email_bytes, eventually, make_config, running, ticking
from tests.daemon import Daemon
from tests.test_trust_e2e import incidents, read, send, settled

MTA = "mx.gateway.test"
PASS = f"{MTA}; dmarc=pass header.from=tenant.example"


def wait_for(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll a condition from sync code until it is truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception:  # the database may not exist yet
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met")


def test_held_list_and_release_process_a_held_message_exactly_once(tmp_path: Path) -> None:
    """Past per_sender a stranger's third report is held: `held list` shows it, `held
    release` has the running daemon process it once (an incident opens), a second release
    is refused with exit code 2, and /healthz counted it while held."""
    d = Daemon(
        tmp_path,
        '[trust]\nallow_domains = ["tenant.example"]\n'
        "[limits]\nper_sender = 2\nstorm_window_s = 0\n",
    )
    state = tmp_path / "state"
    d.start()
    try:
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as client:
            for n in range(3):
                client.sendmail(
                    "m@stranger.example",
                    ["emergency@localhost"],
                    email_bytes(
                        subject=f"Problem number {n}", body=f"Text {n}", sender="m@stranger.example"
                    ),
                )
        wait_for(lambda: read(state, "SELECT COUNT(*) FROM inbox WHERE state = 'held'") == [(1,)])
        listed = d.cli("held", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        [item] = json.loads(listed.stdout)
        assert item["subject"] == "Problem number 2" and item["client"] == "127.0.0.1"
        assert item["reason"].startswith("rate limit: more than 2 messages")
        assert "Problem number 2" in d.cli("held", "list").stdout
        status = d.cli("status", "--json")
        assert json.loads(status.stdout)["inbox"]["held"] == 1
        released = d.cli("held", "release", str(item["id"]))
        assert released.returncode == 0 and "released" in released.stdout
        wait_for(lambda: len(incidents(state)) == 3)
        again = d.cli("held", "release", str(item["id"]))
        assert again.returncode == 2 and "not held" in again.stderr
        missing = d.cli("held", "release", "9999")
        assert missing.returncode == 2 and "no inbox message 9999" in missing.stderr
        assert d.cli("held", "list").stdout.strip() == "No held messages."
    finally:
        assert d.stop() == 0
    assert read(state, "SELECT state, outcome LIKE 'opened INC-3%' FROM inbox WHERE id = 3") == [
        ("done", 1)
    ]
    assert len(incidents(state)) == 3


class OutOfTime(ParseSandbox):
    """A sandbox whose every batch of mail misses its deadline, as a real one does when
    triage is too slow: the child is killed and the mail reported too slow. (A zero budget
    is not enough: on a loaded host the child can answer before the deadline is checked.)"""

    def _exchange(self, jobs: list[MailJob], now: datetime, deadline_s: float) -> list[Prepared]:
        if jobs:
            self._kill(TOO_SLOW)
            raise _Lost(TOO_SLOW)
        return super()._exchange(jobs, now, deadline_s)


@pytest.fixture
def no_time_to_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's parse sandbox runs out of time on every message's triage."""
    monkeypatch.setattr("gateway.app.ParseSandbox", OutOfTime)


@pytest.mark.usefixtures("no_time_to_parse")
async def test_emergency_mail_whose_triage_times_out_still_reaches_a_person(tmp_path: Path) -> None:
    """Triage out of time: the authenticated tenant's emergency mail pages as an
    unparseable P1; a stranger's is an unparseable P1 awaiting !page; support mail stays a
    quiet P4 ticket."""
    config = make_config(tmp_path, trust={"trusted_authserv_id": MTA})
    async with running(config, ticking(IN_HOURS)) as app:
        port = app.smtp_port or 0
        await send(port, email_bytes(Authentication_Results=PASS), "alice@tenant.example")
        await send(port, email_bytes(sender="mallory@evil.example"), "mallory@evil.example")
        await eventually(lambda: settled(tmp_path) and len(incidents(tmp_path)) == 2, timeout=30)
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
            await client.sendmail(
                "alice@tenant.example",
                ["support@localhost"],
                email_bytes(to="support@localhost", subject="Question"),
            )
        await eventually(lambda: settled(tmp_path) and len(incidents(tmp_path)) == 3, timeout=30)
    trusted, stranger, support = incidents(tmp_path)
    assert trusted.title == "Unreadable emergency message from alice@tenant.example"
    assert trusted.priority == "P1" and trusted.pages_sent == 1
    assert trusted.flags == ("unparseable",)
    assert stranger.priority == "P1" and stranger.pages_sent == 0
    assert stranger.flags == ("unparseable", "unverified sender")
    assert any("!page INC-2" in e.text for e in stranger.timeline)
    assert support.priority == "P4" and support.flags == ("unparseable",)
    assert read(tmp_path, "SELECT COUNT(*) FROM tickets") == [(3,)]


async def test_emergency_mail_whose_planning_fails_still_reaches_a_person(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in planning (injected): the authenticated tenant's emergency mail still pages
    as an unparseable P1; support mail whose planning fails stays a P4 ticket."""

    def bug(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("injected planning bug")

    monkeypatch.setattr("gateway.run.worker.plan_email", bug)
    config = make_config(tmp_path, trust={"trusted_authserv_id": MTA})
    async with running(config, ticking(IN_HOURS)) as app:
        port = app.smtp_port or 0
        await send(port, email_bytes(Authentication_Results=PASS), "alice@tenant.example")
        await eventually(lambda: settled(tmp_path) and len(incidents(tmp_path)) == 1)
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
            await client.sendmail(
                "alice@tenant.example",
                ["support@localhost"],
                email_bytes(to="support@localhost", subject="Question"),
            )
        await eventually(lambda: settled(tmp_path) and len(incidents(tmp_path)) == 2)
    emergency, support = incidents(tmp_path)
    assert emergency.priority == "P1" and emergency.pages_sent == 1
    assert "processing failed: RuntimeError" in emergency.reasons[0]
    assert support.priority == "P4" and support.pages_sent == 0
