"""Crash safety: a message that got 250 survives SIGKILL and is processed exactly once."""

from __future__ import annotations

import json
import smtplib
import time
from pathlib import Path

from tests.conftest import email_bytes
from tests.daemon import Daemon

SUBJECTS = [
    "Site is down",
    "Database unreachable",
    "Cannot push apps",
    "Login returns 500",
    "DNS not resolving",
]
TRUST = '[trust]\nallow_domains = ["tenant.example"]\n'


def wait_for(check, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def incidents(d: Daemon) -> list[dict]:
    out = d.cli("incidents", "list", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_sigkill_right_after_250_loses_nothing_and_doubles_nothing(tmp_path: Path) -> None:
    """Five reports, each followed at once by SIGKILL: after restarts, five incidents, five
    pages, five acknowledgements — no more, no fewer."""
    d = Daemon(tmp_path, TRUST)
    try:
        for n, subject in enumerate(SUBJECTS):
            d.start()
            with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as smtp:
                # Five different reporters and problems: one reporter's second report, or
                # the same outage reported again, would join the first incident.
                sender = f"tenant{n}@tenant.example"
                raw = email_bytes(
                    subject=subject, message_id=f"<crash-{n}@t.example>", sender=sender
                )
                assert smtp.sendmail(sender, ["emergency@localhost"], raw) == {}
            d.kill()
        d.start()
        mail = tmp_path / "state" / "outgoing-mail"
        wait_for(
            lambda: (
                len(list(mail.glob("*.eml"))) >= 5
                and all(i["pages_sent"] == 1 for i in incidents(d))
                and len(incidents(d)) == 5
            )
        )
        assert d.stop() == 0
    finally:
        d.kill()
    found = incidents(d)
    assert sorted(i["title"] for i in found) == sorted(SUBJECTS)
    assert [i["pages_sent"] for i in found] == [1] * 5
    assert len(list(mail.glob("*.eml"))) == 5


def test_sigterm_stops_cleanly_with_exit_0(tmp_path: Path) -> None:
    """SIGTERM drains and exits 0; the accepted report is fully handled before exit."""
    d = Daemon(tmp_path, TRUST)
    try:
        d.start()
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as smtp:
            smtp.sendmail("alice@tenant.example", ["emergency@localhost"], email_bytes())
        assert d.stop() == 0
    finally:
        d.kill()
    [incident] = incidents(d)
    assert incident["pages_sent"] == 1
