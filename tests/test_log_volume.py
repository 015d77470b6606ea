"""Log volume under attack: with the logging the daemon configures (level info), a session
of pipelined NOOPs and a delivered message write no per-command library lines and no
envelope addresses; our own `smtp.*` and `inbox.*` events remain."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
import structlog

from adapters.smtp_intake import SmtpIntakeServer, SmtpLimits
from gateway.run import logs
from gateway.run.intake import MailIntake
from gateway.store.sqlite import SqliteStore as Store
from tests.test_smtp_abuse import Raw
from tests.test_smtp_bounds import replies_until_hangup, send_mail


@pytest.fixture
def configured() -> Iterator[io.StringIO]:
    """logs.configure("info", "json") for one test, its lines written to the StringIO
    given; the previous set-up restored after."""
    root = logging.getLogger()
    saved = (
        root.handlers[:],
        root.level,
        {
            n: logging.getLogger(n).level
            for n in ("mail.log", "nio", "aioimaplib", "aiohttp", "asyncio", "aiosmtpd")
        },
        structlog.get_config(),
    )
    logs.configure("info", "json")
    out = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    yield out
    root.handlers[:], root.level = saved[0], saved[1]
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)
    structlog.configure(**saved[3])


async def test_an_attack_session_writes_a_bounded_log_without_addresses(
    configured: io.StringIO, store: Store
) -> None:
    """200 pipelined NOOPs and one message: a handful of lines, none naming the envelope
    sender, no per-command lines; inbox.accepted and smtp.session_ended are there."""
    intake = MailIntake(store, ["emergency@localhost"], ["support@localhost"], lambda: None)
    srv = SmtpIntakeServer(
        intake,
        host="127.0.0.1",
        port=0,
        hostname="localhost",
        max_message_bytes=64 * 1024,
        max_recipients=3,
        commit_timeout_s=5,
        limits=SmtpLimits(max_junk_commands=150),
    )
    await srv.start()
    try:
        c = await Raw.open(srv)
        assert (await c.reply()).startswith(b"220")
        assert (await c.say(b"EHLO attacker.example\r\n")).startswith(b"250")
        assert (await send_mail(c)).startswith(b"250")
        c.writer.write(b"NOOP\r\n" * 200)
        replies = await replies_until_hangup(c, 300)
        c.close()
    finally:
        await srv.stop()
    assert replies[-1].startswith(b"421")
    out = configured.getvalue()
    assert "alice@tenant.example" not in out
    assert "NOOP" not in out
    assert '"inbox.accepted"' in out and '"smtp.session_ended"' in out
    assert len(out.splitlines()) < 20


def test_library_protocol_logs_are_off_unless_debugging(configured: io.StringIO) -> None:
    """At info, aiosmtpd's per-command lines (INFO and WARNING) and matrix-nio's and
    aioimaplib's INFO lines are dropped, their warnings kept; at debug all are back."""
    assert not logging.getLogger("mail.log").isEnabledFor(logging.WARNING)
    for name in ("nio.rooms", "aioimaplib.aioimaplib"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO)
        assert logging.getLogger(name).isEnabledFor(logging.WARNING)
    logs.configure("debug", "json")
    for name in ("mail.log", "nio.rooms", "aioimaplib.aioimaplib"):
        assert logging.getLogger(name).isEnabledFor(logging.INFO)
