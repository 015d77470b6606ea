"""The incident timeline says how a reply left: emailed through the relay, or (folder mode)
only written as a .eml file for something else to send. The real App, a real SMTP client,
and for smtp mode a capture relay."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.conftest import IN_HOURS, email_bytes, eventually, make_config, running, ticking
from tests.fakes.smtp_capture import SmtpCapture
from tests.test_app_e2e import send


def reply_lines(state: Path) -> list[str]:
    """The timeline lines recorded for delivered replies."""
    conn = sqlite3.connect(f"file:{state / 'gateway.sqlite3'}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT text FROM timeline WHERE kind = 'replied' ORDER BY id")
        return [str(text) for (text,) in rows]
    finally:
        conn.close()


async def test_folder_mode_says_written_not_emailed(tmp_path: Path) -> None:
    """Folder mode: the acknowledgement is a file in the folder, and the timeline says so."""
    config = make_config(tmp_path)
    assert config.mail_out.mode == "folder"
    async with running(config, clock=ticking(IN_HOURS)) as app:
        assert app.smtp_port
        await send(app.smtp_port, email_bytes())
        await eventually(lambda: reply_lines(tmp_path))
    [line] = reply_lines(tmp_path)
    assert line == (
        "Acknowledgement to alice@tenant.example written to the outgoing-mail "
        "folder (not sent by the gateway)"
    )
    assert "emailed" not in line
    assert len(list((tmp_path / "outgoing-mail").glob("*.eml"))) == 1


async def test_smtp_mode_says_emailed(tmp_path: Path) -> None:
    """SMTP mode: the relay took the acknowledgement, and the timeline says it was emailed."""
    async with SmtpCapture() as relay:
        config = make_config(
            tmp_path,
            mail_out={
                "mode": "smtp",
                "smtp": {"host": "127.0.0.1", "port": relay.port, "starttls": False},
            },
        )
        async with running(config, clock=ticking(IN_HOURS)) as app:
            assert app.smtp_port
            await send(app.smtp_port, email_bytes())
            await eventually(lambda: reply_lines(tmp_path))
        assert [c.rcpt_tos for c in relay.messages] == [("alice@tenant.example",)]
    assert reply_lines(tmp_path) == ["Acknowledgement emailed to alice@tenant.example"]
