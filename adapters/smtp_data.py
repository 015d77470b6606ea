"""Reading an SMTP DATA body: up to the lone dot, dot-unstuffed, with size and line limits.

aiosmtpd reads DATA one line per await. That costs a few microseconds a line (a large part
of the cost of a small message) and, when many short lines are already buffered, holds the
event loop for the whole buffer: a 3.6 MB message of 300,000 lines held it for 136 ms. This
reader takes the stream in pieces up to each ".\\r\\n" (or about 1 KB at a time when there
is none), checks the limits once on the whole, and lets the loop run every few hundred
pieces. The outcome is the same as aiosmtpd's (tests compare the two on generated input):

* the data ends at a line holding a lone dot, the start of the data counting as a line
  start; what comes after it stays in the stream for the next command;
* each line's leading dot is removed (RFC 5321 4.5.2);
* past `size_limit` bytes the data is dropped as it comes and the answer is 552 once the
  client has finished; a line over `line_limit` bytes (with its CRLF) gets 500.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

TOO_BIG = "552 5.3.4 Message too big for this system"
LINE_TOO_LONG = "500 5.5.6 Line too long (see RFC 5321 4.5.3.1.6)"
MAX_LINE = 1001  # bytes with the CRLF: RFC 5321's 1000, and one more as aiosmtpd allows
_END = b".\r\n"
_CRLF = b"\r\n"
_YIELD_EVERY = 256  # pieces read between turns given to the event loop


@dataclass(frozen=True)
class Body:
    """What DATA produced: the content, or the refusal to answer with."""

    content: bytes = b""
    refusal: str | None = None


# C901: one pass over DATA's lines (limits, dot-stuffing, the end) reads best in one loop.
async def read_body(reader: asyncio.StreamReader, *, size_limit: int | None,  # noqa: C901
                    line_limit: int) -> Body:
    """Read up to and including the lone dot; raises IncompleteReadError if the client
    hangs up first."""
    parts: list[bytes] = []
    size = 0
    tail = _CRLF  # the last two bytes read: the data starts at a line start
    too_big = False
    pieces = 0
    while True:
        pieces += 1
        if pieces % _YIELD_EVERY == 0:
            await asyncio.sleep(0)
        try:
            piece = await reader.readuntil(_END)
        except asyncio.LimitOverrunError as exc:
            # No ".\r\n" within the reader's limit (or it lies further on): take what is
            # before it; the bytes a separator could start with stay in the stream.
            piece = await reader.read(exc.consumed)
            end = False
        else:
            end = (tail + piece)[-5:-3] == _CRLF
            if end:
                piece = piece[:-3]
        size += len(piece)
        tail = (tail + piece)[-2:] if not end else tail
        if size_limit and size > size_limit:
            too_big = True
            parts.clear()
        elif not too_big:
            parts.append(piece)
        if end:
            break
    if too_big:
        return Body(refusal=TOO_BIG)
    data = b"".join(parts)
    if len(data) > line_limit - 2 and max(map(len, data.split(_CRLF))) > line_limit - 2:
        return Body(refusal=LINE_TOO_LONG)
    return Body(unstuff(data))


def unstuff(data: bytes) -> bytes:
    """Remove the leading dot of every line (lines end in CRLF; the data starts a line)."""
    if data.startswith(b"."):
        data = data[1:]
    return data.replace(b"\r\n.", _CRLF)
