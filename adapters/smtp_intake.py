"""SMTP intake: the listening socket and its sessions (aiosmtpd served on the daemon's own
event loop), with the session budgets; 250 only after commit.

The hooks (adapters.smtp_handler) only check the envelope and hand the message to the
core's MailIntake; the work happens in the inbox worker. DATA is read by
adapters.smtp_data. Every failure of ours is a 451 (try again later), never a 5xx, and
never carries exception text to the client.

Abuse limits: a lone dot between bare CRs or LFs in the data (SMTP smuggling) gets 550,
too many recipients 452, oversize 552, connections past `max_connections` get 421 and are
closed, and a client silent for `idle_timeout_s` is hung up on (aiosmtpd's `timeout`). Only
commands that move a mail transaction on (and each read of DATA) restart that timer; junk
commands, errors, connections per client, the session's age and the DATA bytes held in
memory have their own budgets (adapters.smtp_limits), past which the client gets 421 (452
for memory) and the loop is never held by one client's pipelined commands.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiosmtpd.smtp import SMTP

from adapters.smtp_address import plain_address
from adapters.smtp_data import TOO_BIG, read_body
from adapters.smtp_handler import Handler
from adapters.smtp_limits import (
    JUNK_COMMANDS,
    NO_ROOM,
    TOO_LONG,
    TOO_MANY_ERRORS,
    TOO_MANY_FROM_CLIENT,
    TOO_MUCH_JUNK,
    ClientSlots,
    DataBudget,
    SmtpLimits,
)
from gateway.run import metrics
from gateway.run.intake import MailIntake

log = structlog.get_logger("adapters.smtp_intake")

TOO_MANY_CONNECTIONS = b"421 4.7.0 Too many connections, please try again later\r\n"
IDLE_TIMEOUT = b"421 4.4.2 Idle too long, closing connection\r\n"
_REWRITES = {
    # aiosmtpd's fixed text for MAIL FROM's SIZE=, given the enhanced status code.
    b"552 Error: message size exceeds fixed maximum message size": TOO_BIG.encode(),
}


class _Session(SMTP):
    """aiosmtpd's protocol, registered with its server so a stop can close it, with the
    session budgets of adapters.smtp_limits."""

    # aiosmtpd sizes its stream buffer by the line limit (1001 bytes), so every message
    # pauses and resumes the socket's reading. Commands have their own, smaller limits;
    # DATA lines have none but the message size (adapters.smtp_data).
    line_length_limit = 64 * 1024
    _YIELD_EVERY = 16  # replies between turns given to the event loop

    def __init__(self, owner: SmtpIntakeServer, **kwargs: Any) -> None:
        super().__init__(Handler(owner), **kwargs)
        self._owner = owner
        self._refused = True  # until connection_made says otherwise
        self._client = ""
        self._junk = self._errors = self._replies = 0
        self._closing = self._committing = self._expired = False
        self._greeted = False
        self._idle_deadline = self._last_deadline = 0.0
        self._in_data = False
        self._lifetime: asyncio.TimerHandle | None = None
        for name in (*JUNK_COMMANDS, "HELO", "EHLO"):
            if name in self._smtp_methods:
                self._smtp_methods[name] = self._counted(name, self._smtp_methods[name])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        refusal = None
        if len(self._owner.sessions) >= self._owner.max_connections:
            refusal = TOO_MANY_CONNECTIONS
            log.warning("smtp.connection_refused", sessions=len(self._owner.sessions))
        elif not self._owner.slots.take(client):
            refusal = TOO_MANY_FROM_CLIENT
            log.warning("smtp.client_limit", client=client)
        if refusal is not None:
            # Over a limit: say so and hang up before any session state exists.
            if not isinstance(transport, asyncio.WriteTransport):
                raise TypeError(f"expected asyncio.WriteTransport, got {type(transport).__name__}")
            transport.write(refusal)
            transport.close()
            return
        self._refused = False
        self._client = client
        self._owner.sessions.add(self)
        super().connection_made(transport)
        self._lifetime = self.loop.call_later(self._owner.limits.max_session_s, self._too_old)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_data:  # the idle timeout applies to each read of DATA, as in MTAs
            self._reset_timeout()
        super().data_received(data)

    def eof_received(self) -> bool | None:
        return None if self._refused else super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._refused = True  # once only
        if self._lifetime is not None:
            self._lifetime.cancel()
        self._owner.slots.give_back(self._client)
        self._owner.sessions.discard(self)
        super().connection_lost(exc)

    # -- budgets ---------------------------------------------------------------------------
    def _counted(
        self, name: str, method: Callable[[str], Awaitable[None]]
    ) -> Callable[[str], Awaitable[None]]:
        @functools.wraps(method)
        async def counted(arg: str) -> None:
            if self._closing:
                return
            if name in ("HELO", "EHLO") and not self._greeted:
                self._greeted = True
            else:
                # Junk does not keep the session alive: back to the last mail command's
                # deadline (aiosmtpd restarted the idle timer for every command).
                self._keep_idle_deadline()
                self._junk += 1
                if self._junk > self._owner.limits.max_junk_commands:
                    self._hang_up(TOO_MUCH_JUNK, "junk_commands")
                    await asyncio.sleep(0)  # where the cancellation of this session lands
                    return
            await method(arg)

        return counted

    def _reset_timeout(self, duration: float | None = None) -> None:
        super()._reset_timeout(duration)
        self._last_deadline = self._idle_deadline
        self._idle_deadline = self.loop.time() + (duration or self._timeout_duration)

    def _keep_idle_deadline(self) -> None:
        # aiosmtpd has just restarted the timer for this command: put the old one back.
        if self._timeout_handle is not None and not self._committing:
            self._timeout_handle.cancel()
            self._idle_deadline = self._last_deadline
            self._timeout_handle = self.loop.call_at(self._idle_deadline, self._timeout_cb)

    def _too_old(self) -> None:
        if self._committing:  # a hang-up now would hide the commit's answer
            self._expired = True
            return
        self._hang_up(TOO_LONG, "session_too_long")

    def _hang_up(self, reply: bytes, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        log.warning("smtp.session_ended", reason=reason, client=self._client)
        metrics.REJECTED.inc(reason=reason)
        if isinstance(self.transport, asyncio.WriteTransport):
            self.transport.write(reply)
            self.transport.close()
        # The commands already buffered are never read: the session's task ends at its
        # next await (aiosmtpd closes the writer on cancellation).
        if self._handler_coroutine is not None:
            self._handler_coroutine.cancel()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's address reading, with a fast path for the plain form
        (adapters.smtp_address)."""
        plain = None if self.local_part_limit else plain_address(arg)
        return plain if plain is not None else super()._getaddr(arg)

    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA with the body read by adapters.smtp_data (same answers, far
        fewer awaits, the event loop keeps turning on a huge message, and the idle timer
        restarts on every read)."""
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
        budget = self._owner.data_budget
        self._in_data = True
        try:
            body = await read_body(self._reader, size_limit=self.data_size_limit, budget=budget)
        except asyncio.IncompleteReadError:  # the client hung up mid-message
            self._writer.close()
            return
        except asyncio.CancelledError:  # the connection was lost (aiosmtpd cancels us)
            self._writer.close()
            raise
        finally:
            self._in_data = False
        try:
            await self._data_done(body.content, body.refusal)
        finally:
            budget.release(body.reserved)

    async def _data_done(self, content: bytes, refusal: str | None) -> None:
        if self.envelope is None:
            raise RuntimeError("envelope is set here")
        if refusal is not None:
            metrics.REJECTED.inc(reason="too_big" if refusal == TOO_BIG else "no_room")
            if refusal == NO_ROOM:
                log.warning("smtp.data_budget_full", client=self._client)
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push(refusal)
            return
        self.envelope.content = self.envelope.original_content = content
        self._committing = True
        try:
            status = await self._call_handler_hook("DATA")
        finally:
            self._committing = False
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(status)
        if status.startswith("250"):
            # Budgets count what a client does *without* delivering mail (as Postfix's
            # limits do): a relay that reuses its session for many messages is not junk.
            self._junk = self._errors = 0
        if self._expired:
            self._hang_up(TOO_LONG, "session_too_long")

    def _timeout_cb(self) -> None:
        # aiosmtpd just closes; RFC 5321 4.5.3.2 expects a 421 first.
        log.info("smtp.idle_timeout")
        self._closing = True
        if isinstance(self.transport, asyncio.WriteTransport):
            self.transport.write(IDLE_TIMEOUT)
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    async def push(self, status: bytes | str) -> None:
        if self._closing:  # a budget ran out: what was still buffered gets no answer
            await asyncio.sleep(0)  # and the hang-up (connection_lost) ends this session
            return
        raw = status.encode("ascii") if isinstance(status, str) else status
        if raw in _REWRITES:
            metrics.REJECTED.inc(reason="too_big")
            raw = _REWRITES[raw]
        if raw[:1] in (b"4", b"5") and not raw.startswith(b"421"):
            self._errors += 1
            if self._errors > self._owner.limits.max_errors:
                self._hang_up(TOO_MANY_ERRORS, "errors")
                await asyncio.sleep(0)  # where the cancellation of this session lands
                return
        await super().push(raw)
        self._replies += 1
        if self._replies % self._YIELD_EVERY == 0:
            # Pipelined commands already buffered are read without a pause: let the rest
            # of the daemon (other sessions, the watchdog, /healthz) have a turn.
            await asyncio.sleep(0)


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
        limits: SmtpLimits | None = None,
    ) -> None:
        self.limits = limits or SmtpLimits()
        self.slots = ClientSlots(self.limits.max_connections_per_client)
        self.data_budget = DataBudget(self.limits.max_data_bytes_in_flight)
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
    def data_bytes_in_flight(self) -> int:
        """DATA bytes all sessions hold in memory now."""
        return self.data_budget.used

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
