"""The IMAP wire for the mailbox watcher: aioimaplib's client and the answers it parses.

Owns the aioimaplib subclasses (a protocol that notes EXISTS pushes the library drops
between commands, a client that builds it), closing a client with every helper task the
library starts, quoting mailbox names, and reading SELECT, UID SEARCH and UID FETCH
answers. The aioimaplib internals touched here are why its pin has an upper bound.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Callable
from typing import Any

from aioimaplib import IMAP4, IMAP4ClientProtocol, Response

from gateway.ports import TransientError

__all__ = [
    "EXISTS",
    "Client",
    "WatchingProtocol",
    "astring",
    "drop",
    "parse_fetch",
    "parse_search",
    "parse_select",
]

EXISTS = re.compile(rb"^(?:\* )?\d+ EXISTS")
_FETCH_HEAD = re.compile(rb"^\d+ FETCH \(")
_UID = re.compile(rb"UID (\d+)")
_ATOM = re.compile(r"^[A-Za-z0-9_./-]+$")


class WatchingProtocol(IMAP4ClientProtocol):  # type: ignore[misc]
    """aioimaplib's protocol, noting EXISTS pushes it would otherwise drop between commands."""

    new_mail = False

    def _untagged_response(self, line: bytes) -> Any:
        if EXISTS.match(line):
            self.new_mail = True
        return super()._untagged_response(line)


class Client(IMAP4):  # type: ignore[misc]
    """aioimaplib's client, speaking through a `WatchingProtocol`."""

    def create_client(
        self,
        host: str,
        port: int,
        loop: asyncio.AbstractEventLoop | None,
        conn_lost_cb: Callable[[Exception | None], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        loop = loop or asyncio.get_running_loop()
        self.protocol = WatchingProtocol(loop, conn_lost_cb)
        self._client_task = loop.create_task(
            loop.create_connection(lambda: self.protocol, host, port, ssl=ssl_context)
        )


def astring(name: str) -> str:
    """A mailbox name as an IMAP astring (quoted unless it is a plain atom)."""
    if _ATOM.match(name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_select(resp: Response) -> tuple[int, int | None]:
    """UIDVALIDITY and UIDNEXT from a SELECT answer."""
    text = b"\n".join(line for line in resp.lines if isinstance(line, bytes))
    validity = re.search(rb"\[UIDVALIDITY (\d+)\]", text)
    nxt = re.search(rb"\[UIDNEXT (\d+)\]", text)
    if validity is None:
        raise TransientError("SELECT answered without UIDVALIDITY")
    return int(validity.group(1)), int(nxt.group(1)) if nxt else None


def parse_search(resp: Response) -> list[int]:
    """The UIDs of a UID SEARCH answer (aioimaplib strips the leading `SEARCH`)."""
    found: list[int] = []
    for line in resp.lines[:-1]:
        if isinstance(line, bytes):
            found.extend(int(word) for word in line.split() if word.isdigit())
    return found


def parse_fetch(resp: Response) -> list[tuple[int, bytes]]:
    """(uid, raw message) pairs from a `UID FETCH … (UID BODY.PEEK[])` answer. The UID may
    come before or after the literal; unsolicited FETCH lines (flag changes) carry none."""
    out: list[tuple[int, bytes]] = []
    uid: int | None = None
    body: bytes | None = None
    for line in resp.lines:
        if isinstance(line, bytes) and _FETCH_HEAD.match(line):
            if uid is not None and body is not None:
                out.append((uid, body))
            found = _UID.search(line)
            uid, body = (int(found.group(1)) if found else None), None
        elif isinstance(line, bytearray):
            body = bytes(line)
        elif isinstance(line, bytes) and uid is None:
            found = _UID.search(line)
            uid = int(found.group(1)) if found else None
    if uid is not None and body is not None:
        out.append((uid, body))
    return out


def drop(client: Client) -> None:
    """Close the connection and the library's helper tasks (nothing may outlive it)."""
    transport = client.protocol.transport
    if transport is not None:
        transport.close()
    for task in (*client.tasks, *client.protocol.tasks, client._client_task):
        if not task.done():
            task.cancel()
    if client._idle_waiter is not None:
        client._idle_waiter.cancel()
