"""The SMTP listener's per-session and per-client bounds, attacked over loopback: pipelined
NOOP bursts, error storms, keep-alives that never send mail, one client taking every slot,
slow but live DATA, over-long lines, and many large messages in DATA at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from adapters.smtp_intake import SmtpIntakeServer, SmtpLimits
from gateway.config.model import ConfigError, parse_config
from gateway.run.intake import MailIntake
from gateway.store.sqlite import SqliteStore as Store
from tests.test_smtp_abuse import Raw

LIMITS = SmtpLimits(
    max_junk_commands=10,
    max_errors=5,
    max_connections_per_client=2,
    max_session_s=30.0,
    max_data_bytes_in_flight=160 * 1024,
)


async def make_server(
    store: Store, limits: SmtpLimits = LIMITS, idle_timeout_s: float = 0.5
) -> SmtpIntakeServer:
    intake = MailIntake(store, ["emergency@localhost"], ["support@localhost"], lambda: None)
    srv = SmtpIntakeServer(
        intake,
        host="127.0.0.1",
        port=0,
        hostname="localhost",
        max_message_bytes=128 * 1024,
        max_recipients=3,
        commit_timeout_s=5,
        max_connections=10,
        idle_timeout_s=idle_timeout_s,
        limits=limits,
    )
    await srv.start()
    return srv


@pytest.fixture
async def server(store: Store) -> AsyncIterator[SmtpIntakeServer]:
    srv = await make_server(store)
    yield srv
    await srv.stop()


async def open_from(srv: SmtpIntakeServer, client_ip: str) -> Raw:
    """A connection from another loopback address (all of 127/8 is loopback on Linux)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port, local_addr=(client_ip, 0))
    return Raw(reader, writer)


async def replies_until_hangup(c: Raw, limit: int) -> list[bytes]:
    """Every reply the server sends until it hangs up (at most `limit`)."""
    out = []
    for _ in range(limit):
        reply = await c.reply()
        if not reply:
            break
        out.append(reply)
    return out


async def send_mail(c: Raw, body: bytes = b"Subject: hi\r\n\r\nhello\r\n") -> bytes:
    assert (await c.say(b"MAIL FROM:<alice@tenant.example>\r\n")).startswith(b"250")
    assert (await c.say(b"RCPT TO:<emergency@localhost>\r\n")).startswith(b"250")
    assert (await c.say(b"DATA\r\n")).startswith(b"354")
    return await c.say(body + b".\r\n")


async def test_a_pipelined_noop_burst_is_cut_off_and_others_are_served(
    server: SmtpIntakeServer, store: Store
) -> None:
    """5,000 NOOPs in one write get at most the junk budget of 250s, then 421 and a hang-up;
    a mail sent on another connection meanwhile is accepted."""
    c = await Raw.open(server)
    assert (await c.reply()).startswith(b"220")
    assert (await c.say(b"EHLO attacker.example\r\n")).startswith(b"250")
    c.writer.write(b"NOOP\r\n" * 5000)
    other = await open_from(server, "127.0.0.9")
    assert (await other.reply()).startswith(b"220")
    assert (await other.say(b"HELO good.example\r\n")).startswith(b"250")
    assert (await send_mail(other)).startswith(b"250")
    other.close()
    replies = await replies_until_hangup(c, 6000)
    c.close()
    assert len(replies) == LIMITS.max_junk_commands + 1
    assert replies[-1].startswith(b"421 4.7.0")
    assert len(await store.pending_inbox()) == 1


async def test_the_loop_turns_during_a_pipelined_burst(store: Store) -> None:
    """With a large junk budget, a burst of pipelined commands still lets other tasks run
    while it is answered (the session yields between commands)."""
    srv = await make_server(store, SmtpLimits(max_junk_commands=100_000))
    turns = 0

    async def count() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    try:
        c = await Raw.open(srv)
        assert (await c.reply()).startswith(b"220")
        c.writer.write(b"NOOP\r\n" * 20_000)
        counter = asyncio.create_task(count())
        for _ in range(20_000):
            assert (await c.reply()).startswith(b"250")
        counter.cancel()
        c.close()
    finally:
        await srv.stop()
    # Reading replies costs the client a turn per buffer, not per reply: the extra turns
    # come from the server yielding while it answers.
    assert turns >= 20_000 // 64


async def test_repeated_errors_end_the_session(server: SmtpIntakeServer) -> None:
    """Refused commands (unknown recipients) count as errors: past the error budget the
    client gets 421 and is hung up on."""
    c = await Raw.open(server)
    assert (await c.reply()).startswith(b"220")
    assert (await c.say(b"EHLO attacker.example\r\n")).startswith(b"250")
    assert (await c.say(b"MAIL FROM:<a@attacker.example>\r\n")).startswith(b"250")
    c.writer.write(b"RCPT TO:<nobody@localhost>\r\n" * 100)
    replies = await replies_until_hangup(c, 200)
    c.close()
    assert [r[:3] for r in replies[:-1]] == [b"550"] * LIMITS.max_errors
    assert replies[-1].startswith(b"421 4.7.0")


async def test_noop_keepalives_do_not_reset_the_idle_timer(server: SmtpIntakeServer) -> None:
    """A client that only sends NOOPs, well within each idle period, is still hung up on
    once it has sent no mail command for idle_timeout_s."""
    c = await Raw.open(server)
    assert (await c.reply()).startswith(b"220")
    assert (await c.say(b"EHLO idle.example\r\n")).startswith(b"250")
    last = b""
    for _ in range(9):  # fewer than the junk budget: only the idle timer can end this
        await asyncio.sleep(0.2)
        c.writer.write(b"NOOP\r\n")
        last = await c.reply()
        if not last.startswith(b"250"):
            break
    c.close()
    assert last.startswith(b"421 4.4.2")


async def test_one_client_cannot_take_every_connection_slot(server: SmtpIntakeServer) -> None:
    """Connections from one address past max_connections_per_client get 421; another client
    is still served."""
    held = [await open_from(server, "127.0.0.2") for _ in range(LIMITS.max_connections_per_client)]
    for c in held:
        assert (await c.reply()).startswith(b"220")
    extra = await open_from(server, "127.0.0.2")
    assert (await extra.reply()).startswith(b"421 4.7.0")
    assert await extra.reply() == b""
    other = await open_from(server, "127.0.0.3")
    assert (await other.reply()).startswith(b"220")
    for c in [*held, extra, other]:
        c.close()


async def test_the_session_lifetime_ends_a_session_that_keeps_sending_mail(store: Store) -> None:
    """A session older than max_session_s is told 421 at its next command, however busy."""
    srv = await make_server(store, SmtpLimits(max_session_s=0.3), idle_timeout_s=5)
    try:
        c = await Raw.open(srv)
        assert (await c.reply()).startswith(b"220")
        assert (await c.say(b"HELO busy.example\r\n")).startswith(b"250")
        answer = b""
        for _ in range(50):
            await asyncio.sleep(0.05)
            answer = await c.say(b"MAIL FROM:<alice@tenant.example>\r\n")
            if not answer.startswith(b"250"):
                break
            assert (await c.say(b"RSET\r\n")).startswith(b"250")
        c.close()
    finally:
        await srv.stop()
    assert answer.startswith(b"421 4.4.2")


async def test_slow_but_steady_data_is_accepted(store: Store) -> None:
    """DATA that takes longer in total than idle_timeout_s, but never pauses that long, is
    accepted (the idle timeout applies to each read, as in MTAs)."""
    srv = await make_server(store, idle_timeout_s=1.0)
    try:
        c = await Raw.open(srv)
        assert (await c.reply()).startswith(b"220")
        assert (await c.say(b"HELO slow.example\r\n")).startswith(b"250")
        assert (await c.say(b"MAIL FROM:<alice@tenant.example>\r\n")).startswith(b"250")
        assert (await c.say(b"RCPT TO:<emergency@localhost>\r\n")).startswith(b"250")
        assert (await c.say(b"DATA\r\n")).startswith(b"354")
        c.writer.write(b"Subject: slow\r\n\r\n")
        for _ in range(25):  # 25 x 0.1 s: two and a half times the idle timeout in all
            await asyncio.sleep(0.1)
            c.writer.write(b"a line\r\n")
            await c.writer.drain()
        assert (await c.say(b".\r\n")).startswith(b"250")
        c.close()
    finally:
        await srv.stop()
    assert len(await store.pending_inbox()) == 1


async def test_over_long_lines_are_accepted_byte_for_byte(
    server: SmtpIntakeServer, store: Store
) -> None:
    """A 20,000-byte line (HTML without wrapping) is taken as sent, not refused."""
    c = await Raw.open(server)
    assert (await c.reply()).startswith(b"220")
    assert (await c.say(b"HELO outlook.example\r\n")).startswith(b"250")
    body = b"Subject: long\r\n\r\n<p>" + b"x" * 20_000 + b"</p>\r\n..dot\r\n"
    assert (await send_mail(c, body)).startswith(b"250")
    c.close()
    [row] = await store.pending_inbox()
    assert row.raw == body.replace(b"\r\n..", b"\r\n.")


async def test_data_bytes_in_flight_are_capped_with_452(
    server: SmtpIntakeServer, store: Store
) -> None:
    """While one session holds most of the in-flight DATA budget, another message that
    would exceed it gets 452 4.3.1 and is not kept; the first is accepted."""
    a = await open_from(server, "127.0.0.4")
    b = await open_from(server, "127.0.0.5")
    for c in (a, b):
        assert (await c.reply()).startswith(b"220")
        assert (await c.say(b"HELO big.example\r\n")).startswith(b"250")
        assert (await c.say(b"MAIL FROM:<alice@tenant.example>\r\n")).startswith(b"250")
        assert (await c.say(b"RCPT TO:<emergency@localhost>\r\n")).startswith(b"250")
        assert (await c.say(b"DATA\r\n")).startswith(b"354")
    line = b"y" * 998 + b"\r\n"
    a.writer.write(b"Subject: a\r\n\r\n" + line * 120)
    for _ in range(1000):
        if server.data_bytes_in_flight >= 50_000:
            break
        await asyncio.sleep(0.01)
    assert server.data_bytes_in_flight >= 50_000
    answer = await b.say(b"Subject: b\r\n\r\n" + line * 120 + b".\r\n")
    assert answer.startswith(b"452 4.3.1")
    assert (await a.say(b".\r\n")).startswith(b"250")
    a.close()
    b.close()
    [row] = await store.pending_inbox()
    assert row.raw.startswith(b"Subject: a")
    assert server.data_bytes_in_flight == 0


async def test_delivering_mail_renews_the_junk_budget(
    server: SmtpIntakeServer, store: Store
) -> None:
    """A relay that sends RSET before each of many messages on one session (more RSETs in
    all than the junk budget) has every message accepted."""
    c = await Raw.open(server)
    assert (await c.reply()).startswith(b"220")
    assert (await c.say(b"EHLO relay.example\r\n")).startswith(b"250")
    for n in range(LIMITS.max_junk_commands + 5):
        assert (await c.say(b"RSET\r\n")).startswith(b"250")
        assert (await send_mail(c, b"Subject: %d\r\n\r\nhello\r\n" % n)).startswith(b"250")
    c.close()
    assert len(await store.pending_inbox(100)) == LIMITS.max_junk_commands + 5


def test_the_bounds_are_validated_with_safe_defaults() -> None:
    """Defaults as documented; a DATA budget below the message size limit, a session
    lifetime shorter than the idle timeout, or a zero limit are configuration errors."""
    config = parse_config({})
    assert (
        config.smtp.max_junk_commands,
        config.smtp.max_errors,
        config.smtp.max_connections_per_client,
    ) == (100, 20, 50)
    assert config.smtp.max_data_bytes_in_flight >= config.smtp.max_message_bytes
    assert (config.http.max_connections, config.http.idle_timeout_s) == (64, 10.0)
    for bad in (
        {"smtp": {"max_data_bytes_in_flight": 1024}},
        {"smtp": {"max_session_s": 10, "idle_timeout_s": 60}},
        {"smtp": {"max_junk_commands": 0}},
        {"http": {"max_connections": 0}},
    ):
        with pytest.raises(ConfigError):
            parse_config(bad)
