"""The SMTP DATA reader (adapters.smtp_data): the same outcome as aiosmtpd's line-by-line
reading on generated streams, however the bytes arrive, with the event loop turning while a
huge message is read; and the listener's answers for what the reader refuses."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.smtp_data import TOO_BIG, Body, read_body, unstuff
from adapters.smtp_intake import SmtpIntakeServer
from gateway.run.intake import MailIntake
from gateway.store.sqlite import SqliteStore
from tests.test_smtp_abuse import Raw

SIZE_LIMIT = 4096


def reference(stream: bytes, size_limit: int) -> tuple[Body, bytes]:
    """aiosmtpd's reading: CRLF-ended lines until ".\\r\\n"; each line's leading dot
    removed; past the size limit 552; lines of any length. Returns the body and what is
    left in the stream."""
    lines, pos = [], 0
    while True:
        end = stream.index(b"\r\n", pos) + 2
        line, pos = stream[pos:end], end
        if line == b".\r\n":
            break
        lines.append(line)
    if sum(map(len, lines)) > size_limit:
        return Body(refusal=TOO_BIG), stream[pos:]
    return Body(b"".join(line[1:] if line[:1] == b"." else line for line in lines)), stream[pos:]


async def read_fed(stream: bytes, cuts: list[int], buffer_limit: int) -> tuple[Body, bytes]:
    """Run read_body on a reader fed `stream` in pieces cut at `cuts`, one per loop turn."""
    reader = asyncio.StreamReader(limit=buffer_limit)
    bounds = [0, *sorted({c % (len(stream) + 1) for c in cuts}), len(stream)]

    async def feed() -> None:
        for start, stop in itertools.pairwise(bounds):
            reader.feed_data(stream[start:stop])
            await asyncio.sleep(0)
        reader.feed_eof()

    feeder = asyncio.create_task(feed())
    body = await read_body(reader, size_limit=SIZE_LIMIT)
    await feeder
    return Body(body.content, body.refusal), await reader.read()


_PIECES = st.sampled_from(
    [b"\r\n", b".", b"..", b"x", b"\n", b"\r", b".\r\n", b"\r\n.", b"y" * 700, b"z" * 1200]
)


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(_PIECES, max_size=16),
    st.lists(st.integers(0, 10_000), max_size=6),
    st.sampled_from([4, 64, 1001, 65536]),
)
def test_agrees_with_a_line_by_line_reading(
    pieces: list[bytes], cuts: list[int], buffer_limit: int
) -> None:
    """Body or refusal, and the bytes left for the next command, match the reference for
    any mix of dots and line ends, any cut of the stream and any reader buffer size."""
    data = b"".join(pieces)
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    stream = data + b".\r\nQUIT\r\n"
    got = asyncio.run(read_fed(stream, cuts, buffer_limit))
    assert got == reference(stream, SIZE_LIMIT), stream


def test_examples() -> None:
    """The dot rules by example (RFC 5321 4.5.2), long lines, and the size refusal."""
    cases = {
        b".\r\n": Body(b""),
        b"..\r\n.\r\n": Body(b".\r\n"),
        b"a\r\n..b\r\n.c\r\n.\r\n": Body(b"a\r\n.b\r\nc\r\n"),
        b"a.\r\nb\n.\r\n\r\n.\r\n": Body(b"a.\r\nb\n.\r\n\r\n"),  # no CRLF before ".": data
        b"x" * 999 + b"\r\n.\r\n": Body(b"x" * 999 + b"\r\n"),
        b"x" * 3000 + b"\r\n.\r\n": Body(b"x" * 3000 + b"\r\n"),  # long lines are taken
        (b"y" * 99 + b"\r\n") * 41 + b".\r\n": Body(refusal=TOO_BIG),
    }
    for stream, body in cases.items():
        assert asyncio.run(read_fed(stream, [], 65536)) == (body, b""), stream
    assert unstuff(b".a\r\n..\r\n") == b"a\r\n.\r\n"


async def test_the_loop_turns_while_a_message_of_many_lines_is_read() -> None:
    """A 3.6 MB message of 300,000 lines ending in a dot, all buffered at once: read_body
    gives the event loop turns on the way (aiosmtpd held it for the whole buffer)."""
    reader = asyncio.StreamReader(limit=65536)
    reader.feed_data(b"abcdefghijk.\r\n" * 300_000 + b".\r\n")
    turns = 0

    async def count() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    counter = asyncio.create_task(count())
    await asyncio.sleep(0)
    before = turns
    body = await read_body(reader, size_limit=None)
    counter.cancel()
    assert len(body.content) == 14 * 300_000
    assert turns - before >= 300_000 // 256 - 1


@pytest.fixture
async def server(store: SqliteStore) -> AsyncIterator[SmtpIntakeServer]:
    intake = MailIntake(store, ["emergency@localhost"], ["support@localhost"], lambda: None)
    srv = SmtpIntakeServer(
        intake,
        host="127.0.0.1",
        port=0,
        hostname="localhost",
        max_message_bytes=SIZE_LIMIT,
        max_recipients=3,
        commit_timeout_s=5,
    )
    await srv.start()
    yield srv
    await srv.stop()


async def test_the_next_command_in_the_same_packet_is_answered(
    server: SmtpIntakeServer, store: SqliteStore
) -> None:
    """A client that writes QUIT together with the end of data gets 250 and then 221: what
    follows the lone dot is left for the command loop."""
    c = await Raw.open(server)
    await c.envelope()
    c.writer.write(b"Subject: x\r\n\r\n..dot\r\n.\r\nQUIT\r\n")
    assert (await c.reply()).startswith(b"250")
    assert (await c.reply()).startswith(b"221")
    c.close()
    [row] = await store.pending_inbox()
    assert row.raw == b"Subject: x\r\n\r\n.dot\r\n"


async def test_an_empty_message_is_taken(server: SmtpIntakeServer, store: SqliteStore) -> None:
    """A lone dot straight after DATA is an empty message, as RFC 5321 allows."""
    c = await Raw.open(server)
    await c.envelope()
    assert (await c.say(b".\r\n")).startswith(b"250")
    c.close()
    [row] = await store.pending_inbox()
    assert row.raw == b""
