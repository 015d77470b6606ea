"""SMTP intake: aiosmtpd served on the daemon's own event loop, answering 250 only after commit.

The handler only checks the envelope and hands the message to the core's MailIntake; the
work happens in the inbox worker. Every failure of ours is a 451 (try again later), never
a 5xx, and never carries exception text to the client.

Abuse limits: a lone dot between bare CRs or LFs in the data (SMTP smuggling) gets 550,
too many recipients 452, oversize 552, connections past `max_connections` get 421 and are
closed, and a client silent for `idle_timeout_s` is hung up on (aiosmtpd's `timeout`).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

from adapters.smtp_data import MAX_LINE, TOO_BIG, read_body
from gateway.run import metrics
from gateway.run.intake import MailIntake

log = structlog.get_logger("adapters.smtp_intake")

TEMPFAIL = "451 4.3.0 Temporary failure, please try again later"
TOO_MANY_CONNECTIONS = b"421 4.7.0 Too many connections, please try again later\r\n"
IDLE_TIMEOUT = b"421 4.4.2 Idle too long, closing connection\r\n"
SMUGGLING = "550 5.5.2 Message refused: a line with a lone dot must end in CRLF"
# A lone dot between line ends other than CRLF ("\n.\n", "\r\n.\n", "\r.\r"): how SMTP
# smuggling hides a second message that a less strict server would split off. Other bare
# LFs are left alone: common clients (Python's smtplib given bytes) send them innocently.
# Each pattern starts with a literal, which the regex engine finds at memchr speed: a few ms
# for a 3.6 MB message on the event loop, where alternations such as (?:^|\r\n) took 130 ms.
_DOT_BEFORE_BARE_END = re.compile(rb"\n\.(?:\n|\r(?!\n))")  # "\n.\n", "\r\n.\r"
_DOT_AFTER_CR = re.compile(rb"\r\.[\r\n]")  # "\r.\r", "\r.\r\n": a lone CR before the dot
_DOT_AFTER_LF = re.compile(rb"(?<!\r)\n\.\r\n")  # a lone LF before "."; slower: used rarely
# aiosmtpd removes a line's leading dot before we see the data, so ".\n" sent at the start of
# a line arrives as a line starting with a bare LF (or CR): refused as well.
_BARE_AFTER_CRLF = re.compile(rb"\r\n(?:\n|\r(?!\n))")
_BARE_AT_START = re.compile(rb"\n|\r(?!\n)|\.(?:\n|\r(?!\n))")


def smuggling(raw: bytes) -> bool:
    """True when the data holds an end-of-data look-alike (the start counts as CRLF)."""
    if (_BARE_AT_START.match(raw) or _BARE_AFTER_CRLF.search(raw)
            or _DOT_BEFORE_BARE_END.search(raw) or _DOT_AFTER_CR.search(raw)):
        return True
    # "\n.\r\n" after a lone LF needs a lone LF somewhere: most data has none (SMTP is CRLF).
    return raw.count(b"\n") != raw.count(b"\r\n") and _DOT_AFTER_LF.search(raw) is not None


_REWRITES = {
    # aiosmtpd's fixed text for MAIL FROM's SIZE=, given the enhanced status code.
    b"552 Error: message size exceeds fixed maximum message size": TOO_BIG.encode(),
}


class _Handler:
    def __init__(self, owner: SmtpIntakeServer) -> None:
        self._owner = owner

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self._owner.stopping:
            metrics.REJECTED.inc(reason="shutting_down")
            return "421 4.3.2 Service shutting down, please try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self._owner.intake.mailbox_for(address) is None:
            metrics.REJECTED.inc(reason="unknown_recipient")
            return "550 5.1.1 No such mailbox here"
        if len(envelope.rcpt_tos) >= self._owner.max_recipients:
            metrics.REJECTED.inc(reason="too_many_recipients")
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self._owner.stopping:
            metrics.REJECTED.inc(reason="shutting_down")
            return "421 4.3.2 Service shutting down, please try again later"
        raw = envelope.original_content or b""
        if smuggling(raw):
            log.warning("smtp.smuggling_refused", size=len(raw))
            return SMUGGLING
        self._owner.in_flight += 1
        self._owner.idle.clear()
        # The idle timer must not hang up while we commit: a 421 then would hide a commit.
        if server._timeout_handle is not None:
            server._timeout_handle.cancel()
        try:
            # On timeout the store withdraws the message unless its commit is under way,
            # so a 451 always means "not kept".
            accepted = await self._owner.intake.accept(
                envelope.mail_from or "", envelope.rcpt_tos, raw,
                timeout_s=self._owner.commit_timeout_s,
                # The limits count the client's address: unlike the headers, not forged.
                client=str(session.peer[0]) if isinstance(session.peer, tuple) else None,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("inbox.accept_failed", error=type(exc).__name__)
            metrics.REJECTED.inc(reason="commit_failed")
            return TEMPFAIL
        finally:
            server._reset_timeout()
            self._owner.in_flight -= 1
            if not self._owner.in_flight:
                self._owner.idle.set()
        metrics.ACCEPTED.inc(channel="smtp")
        log.info(
            "inbox.accepted",
            inbox_id=accepted.inbox_id,
            duplicate=accepted.duplicate,
            size=len(raw),
        )
        return f"250 2.0.0 OK queued as {accepted.inbox_id}"

    async def handle_exception(self, error: Exception) -> str:
        log.error("smtp.session_error", error=type(error).__name__)
        return TEMPFAIL


class _Session(SMTP):
    """aiosmtpd's protocol, registered with its server so a stop can close it."""

    # aiosmtpd sizes its stream buffer by the line limit (1001 bytes), so every message
    # pauses and resumes the socket's reading. Lines are checked on their own (the DATA
    # reader checks MAX_LINE; commands have their own, smaller limits).
    line_length_limit = 64 * 1024

    def __init__(self, owner: SmtpIntakeServer, **kwargs: Any) -> None:
        super().__init__(_Handler(owner), **kwargs)
        self._owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self._owner.sessions) >= self._owner.max_connections:
            # Over the limit: say so and hang up before any session state exists.
            self._refused = True
            log.warning("smtp.connection_refused", sessions=len(self._owner.sessions))
            if not isinstance(transport, asyncio.WriteTransport):
                raise TypeError(f"expected asyncio.WriteTransport, got {type(transport).__name__}")
            transport.write(TOO_MANY_CONNECTIONS)
            transport.close()
            return
        self._refused = False
        self._owner.sessions.add(self)
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    def eof_received(self) -> bool | None:
        return None if self._refused else super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._owner.sessions.discard(self)
        super().connection_lost(exc)

    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA with the body read by adapters.smtp_data (same answers, far
        fewer awaits, and the event loop keeps turning on a huge message)."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        if self.envelope is None:
            raise RuntimeError("envelope is set here")
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            body = await read_body(self._reader, size_limit=self.data_size_limit,
                                   line_limit=MAX_LINE)
        except asyncio.IncompleteReadError:  # the client hung up mid-message
            self._writer.close()
            return
        except asyncio.CancelledError:  # the connection was lost (aiosmtpd cancels us)
            self._writer.close()
            raise
        if body.refusal is not None:
            if body.refusal == TOO_BIG:
                metrics.REJECTED.inc(reason="too_big")
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push(body.refusal)
            return
        self.envelope.content = self.envelope.original_content = body.content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(status)

    def _timeout_cb(self) -> None:
        # aiosmtpd just closes; RFC 5321 4.5.3.2 expects a 421 first.
        log.info("smtp.idle_timeout")
        if isinstance(self.transport, asyncio.WriteTransport):
            self.transport.write(IDLE_TIMEOUT)
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    async def push(self, status: bytes | str) -> None:
        raw = status.encode("ascii") if isinstance(status, str) else status
        if raw in _REWRITES:
            metrics.REJECTED.inc(reason="too_big")
            raw = _REWRITES[raw]
        await super().push(raw)


class SmtpIntakeServer:
    """Owns the listening socket and the live SMTP sessions."""

    def __init__(
        self,
        intake: MailIntake,
        *,
        host: str,
        port: int,
        hostname: str,
        max_message_bytes: int,
        max_recipients: int,
        commit_timeout_s: float,
        idle_timeout_s: float = 60.0,
        max_connections: int = 100,
    ) -> None:
        self.intake = intake
        self.max_connections = max_connections
        self.max_recipients = max_recipients
        self.commit_timeout_s = commit_timeout_s
        self.sessions: set[_Session] = set()
        self.stopping = False
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self._host, self._port, self._hostname = host, port, hostname
        self._max_bytes = max_message_bytes
        self._idle_timeout_s = idle_timeout_s
        self._server: asyncio.Server | None = None

    @property
    def state(self) -> str:
        """starting, listening or stopped (for readiness and health)."""
        if self.stopping:
            return "stopped"
        return "starting" if self._server is None else "listening"

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0)."""
        if self._server is None:
            raise RuntimeError("_server is set here")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and start accepting connections."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._session, self._host, self._port)
        log.info("smtp.listening", host=self._host, port=self.port)

    def _session(self) -> _Session:
        return _Session(
            self,
            hostname=self._hostname,
            ident="chatops-gateway",
            data_size_limit=self._max_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            timeout=self._idle_timeout_s,
        )

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop listening, refuse new transactions, let commits in flight finish, hang up."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        try:
            async with asyncio.timeout(grace_s):
                await self.idle.wait()
        except TimeoutError:
            log.warning("smtp.stop_grace_expired", in_flight=self.in_flight)
        sessions = list(self.sessions)
        for session in sessions:
            if session.transport is not None:
                session.transport.close()
        # Closing a transport cancels its session task: wait for those to end.
        tasks = [s._handler_coroutine for s in sessions if s._handler_coroutine is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=grace_s)
        if self._server is not None:
            await self._server.wait_closed()
        log.info("smtp.stopped")
