"""The SMTP listener against hostile or broken clients, byte for byte over raw sockets:
smuggling with bare LF / CR, too many connections, silent clients, and a store that cannot
commit (disk full, database locked) — 5xx/4xx as documented, never a 250 for what is not kept."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator

import pytest

from adapters.smtp_intake import SmtpIntakeServer
from gateway.run.intake import MailIntake
from gateway.store.sqlite import SqliteStore
from tests.conftest import email_bytes

MAX_CONNECTIONS = 3


@pytest.fixture
async def server(store: SqliteStore) -> AsyncIterator[SmtpIntakeServer]:
    intake = MailIntake(store, ["emergency@localhost"], ["support@localhost"], lambda: None)
    srv = SmtpIntakeServer(
        intake,
        host="127.0.0.1",
        port=0,
        hostname="localhost",
        max_message_bytes=64 * 1024,
        max_recipients=3,
        commit_timeout_s=1,
        max_connections=MAX_CONNECTIONS,
        idle_timeout_s=0.5,
    )
    await srv.start()
    yield srv
    await srv.stop()


class Raw:
    """One SMTP conversation over a plain socket: what we send is exactly what is sent."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, srv: SmtpIntakeServer) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        return cls(reader, writer)

    async def reply(self) -> bytes:
        """One whole reply (multi-line replies joined); b"" when the server hung up."""
        lines = b""
        while True:
            line = await self.reader.readline()
            lines += line
            if not line or line[3:4] != b"-":
                return lines

    async def say(self, data: bytes) -> bytes:
        self.writer.write(data)
        await self.writer.drain()
        return await self.reply()

    async def envelope(self) -> None:
        assert (await self.reply()).startswith(b"220")
        assert (await self.say(b"EHLO client.example\r\n")).startswith(b"250")
        assert (await self.say(b"MAIL FROM:<alice@tenant.example>\r\n")).startswith(b"250")
        assert (await self.say(b"RCPT TO:<emergency@localhost>\r\n")).startswith(b"250")
        assert (await self.say(b"DATA\r\n")).startswith(b"354")

    def close(self) -> None:
        self.writer.close()


SMUGGLED = (
    b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<support@localhost>\r\nDATA\r\n"
    b"Subject: smuggled\r\n\r\nI was hidden.\r\n"
)


@pytest.mark.parametrize(
    "end",
    [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r", b"\r.\r\n", b"\r\n.\r", b"\n\n.\n\n"],
    ids=["LF.LF", "CRLF.LF", "LF.CRLF", "CR.CR", "CR.CRLF", "CRLF.CR", "LFLF.LFLF"],
)
async def test_smuggling_variants_are_refused(
    server: SmtpIntakeServer, store: SqliteStore, end: bytes
) -> None:
    """A message whose data hides a second message behind a non-CRLF end-of-data gets 550
    5.5.2 as a whole; neither it nor the smuggled one is stored, and the session goes on."""
    c = await Raw.open(server)
    await c.envelope()
    answer = await c.say(b"Subject: hello\r\n\r\nfirst part" + end + SMUGGLED + b".\r\n")
    assert answer.startswith(b"550 5.5.2")
    assert (await c.say(b"QUIT\r\n")).startswith(b"221")
    c.close()
    stored = len(await store.pending_inbox())
    print(f"\nFIGURE smuggling {end!r}: reply={answer[:9]!r} stored={stored}")
    assert stored == 0


async def test_other_bare_lfs_are_kept_byte_for_byte(
    server: SmtpIntakeServer, store: SqliteStore
) -> None:
    """A bare LF that hides no end-of-data (as Python's smtplib sends bytes) is taken and
    kept as sent, and an escaped dot line (".." on the wire) is not mistaken for smuggling."""
    c = await Raw.open(server)
    await c.envelope()
    sent = b"Subject: a\nX: y\r\n\r\nbody\n..\r\n..\r\nend\r\n"
    assert (await c.say(sent + b".\r\n")).startswith(b"250")
    c.close()
    [row] = await store.pending_inbox()
    assert row.raw == sent.replace(b"\r\n..\r\n", b"\r\n.\r\n")  # RFC 5321 4.5.2


async def test_connections_over_the_limit_get_421_and_are_closed(
    server: SmtpIntakeServer,
) -> None:
    """With the limit reached, one more connection reads 421 4.7.0 and EOF; once a session
    ends, a new client is served again."""
    held = [await Raw.open(server) for _ in range(MAX_CONNECTIONS)]
    for c in held:
        assert (await c.reply()).startswith(b"220")
    extra = await Raw.open(server)
    refused = await extra.reply()
    print(f"\nFIGURE connection limit: held={len(held)} next_reply={refused[:9]!r}")
    assert refused.startswith(b"421 4.7.0")
    assert await extra.reader.read() == b""
    extra.close()
    held.pop().close()
    while True:  # the freed slot shows once the server has seen the close
        again = await Raw.open(server)
        first = await again.reply()
        again.close()
        if first.startswith(b"220"):
            break
        await asyncio.sleep(0.01)
    for c in held:
        c.close()


async def test_silent_clients_are_hung_up_on_and_cannot_exhaust_the_server(
    server: SmtpIntakeServer, store: SqliteStore
) -> None:
    """Clients that connect and say nothing (or stop mid-DATA) fill every slot, are sent 421
    4.4.2 and closed after the idle timeout, and a real client then gets its mail in."""
    silent = [await Raw.open(server) for _ in range(MAX_CONNECTIONS - 1)]
    stalled = await Raw.open(server)
    await stalled.envelope()
    stalled.writer.write(b"Subject: slow\r\n\r\nhalf a mess")
    for c in silent:
        assert (await c.reply()).startswith(b"220")
        assert (await c.reply()).startswith(b"421 4.4.2")
        assert await c.reader.read() == b""
    assert (await stalled.reply()).startswith(b"421 4.4.2")
    print(f"\nFIGURE idle timeout: silent_clients={len(silent) + 1} hung_up_with_421=all")
    for c in [*silent, stalled]:
        c.close()
    while True:
        c = await Raw.open(server)
        if (await c.reply()).startswith(b"220"):
            break
        c.close()
        await asyncio.sleep(0.01)
    await c.say(b"EHLO client.example\r\n")
    await c.say(b"MAIL FROM:<alice@tenant.example>\r\n")
    await c.say(b"RCPT TO:<emergency@localhost>\r\n")
    await c.say(b"DATA\r\n")
    assert (await c.say(email_bytes().replace(b"\n", b"\r\n") + b".\r\n")).startswith(b"250")
    c.close()
    assert len(await store.pending_inbox()) == 1


async def send_one(server: SmtpIntakeServer, body: bytes) -> bytes:
    c = await Raw.open(server)
    await c.envelope()
    answer = await c.say(body + b"\r\n.\r\n")
    c.close()
    return answer


async def test_disk_full_answers_451_never_250(
    server: SmtpIntakeServer, store: SqliteStore
) -> None:
    """When SQLite reports the disk full (SQLITE_FULL, here by capping the database's pages
    on the store's own connection), the client gets 451 4.3.0 and nothing is kept; once
    space is back the same message is taken."""
    (pages,) = await store._call(lambda c: c.execute("PRAGMA page_count").fetchone())
    await store._call(lambda c: c.execute(f"PRAGMA max_page_count = {pages}"))
    body = b"Subject: big\r\n\r\n" + (b"x" * 900 + b"\r\n") * 40
    answer = await send_one(server, body)
    assert answer.startswith(b"451 4.3.0") and b"full" not in answer.lower(), answer
    print(f"\nFIGURE disk full: reply={answer[:9]!r} stored={len(await store.pending_inbox())}")
    assert await store.pending_inbox() == []
    await store._call(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))
    assert (await send_one(server, body)).startswith(b"250")


async def test_locked_database_answers_451_never_250(
    server: SmtpIntakeServer, store: SqliteStore
) -> None:
    """Another writer holding the database past the commit timeout gives 451 (once the
    commit already under way has failed: a 4xx never hides a commit), and nothing is kept."""
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        answer = await send_one(server, b"Subject: locked\r\n\r\nbody")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert answer.startswith(b"451 4.3.0"), answer
    assert await store.pending_inbox() == []


async def test_a_queued_message_that_times_out_is_never_committed(store: SqliteStore) -> None:
    """Behind a commit that is stuck, a queued message whose time is up is withdrawn
    (TimeoutError, so intake says 451); when the stuck commit completes, only the first
    message is in the inbox."""
    intake = MailIntake(store, ["emergency@localhost"], [], lambda: None)
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    first = asyncio.create_task(intake.accept("a@x", ["emergency@localhost"], b"Subject: 1\r\n"))
    await asyncio.sleep(0.05)  # let the first commit start (and block on the lock)
    with pytest.raises(TimeoutError):
        await intake.accept("b@x", ["emergency@localhost"], b"Subject: 2\r\n", timeout_s=0.1)
    blocker.execute("ROLLBACK")
    blocker.close()
    await first
    assert [row.mail_from for row in await store.pending_inbox()] == ["a@x"]
