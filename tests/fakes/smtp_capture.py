"""A capture SMTP server for outbound-mail tests: real aiosmtpd, served on the test's own loop.

It records every accepted envelope, can refuse the next messages with a chosen reply at a
chosen stage (or drop the connection there, or answer late), and optionally requires AUTH.
It never offers STARTTLS (no certificate), which is exactly what the "relay lost STARTTLS"
test needs.

    async with SmtpCapture() as relay:
        relay.fail_next("451 4.3.0 try later", stage="DATA")
        mailer = SmtpRelayMailer(relay.host, relay.port, starttls=False)
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

Stage = Literal["MAIL", "RCPT", "DATA"]


@dataclass(frozen=True)
class Captured:
    """One message the server accepted."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    authenticated: bool


DROP = "drop"  # a fault "reply" that closes the connection without answering


@dataclass
class _Fault:
    stage: Stage
    reply: str | None
    remaining: int
    delay_s: float = 0.0


class SmtpCapture:
    """aiosmtpd's SMTP protocol on `loop.create_server`, 127.0.0.1 and a free port."""

    def __init__(self, *, credentials: Mapping[str, str] | None = None) -> None:
        self._credentials = dict(credentials) if credentials is not None else None
        self._faults: list[_Fault] = []
        self._server: asyncio.Server | None = None
        self._protocols: list[SMTP] = []
        self._changed = asyncio.Event()
        self.messages: list[Captured] = []
        self.host = "127.0.0.1"
        self.port = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_protocol, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        for protocol in self._protocols:
            if protocol.transport is not None:
                protocol.transport.close()
        # Closing a transport cancels its session task; let those finish so nothing outlives
        # the test's loop.
        tasks = [p._handler_coroutine for p in self._protocols if p._handler_coroutine]
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    async def __aenter__(self) -> SmtpCapture:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def fail_next(
        self, reply: str | None, *, stage: Stage = "RCPT", count: int = 1, delay_s: float = 0.0
    ) -> None:
        """Answer `reply` at `stage` for the next `count` messages that reach that stage.

        `reply=DROP` resets the connection instead of answering; `delay_s` holds the answer
        back (a slow relay), and with `reply=None` then carries on normally.
        """
        self._faults.append(_Fault(stage=stage, reply=reply, remaining=count, delay_s=delay_s))

    async def wait_for(self, n: int, timeout: float = 5.0) -> list[Captured]:
        """Wait until at least `n` messages were accepted; returns them all."""
        async with asyncio.timeout(timeout):
            while len(self.messages) < n:
                self._changed.clear()
                await self._changed.wait()
        return list(self.messages)

    def _new_protocol(self) -> SMTP:
        extra: dict[str, Any] = {}
        if self._credentials is not None:
            # Loopback-only test server without TLS: AUTH in clear text is acceptable here.
            extra = {"authenticator": self._authenticate, "auth_require_tls": False}
        # A fixed hostname: the default asks DNS for this host's FQDN on every connection.
        protocol = SMTP(self, hostname="capture.test", **extra)
        self._protocols.append(protocol)
        return protocol

    async def _take_fault(self, server: SMTP, stage: Stage) -> str | None:
        for fault in self._faults:
            if fault.stage == stage:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                if fault.delay_s:
                    await asyncio.sleep(fault.delay_s)
                if fault.reply == DROP and server.transport is not None:
                    server.transport.abort()  # RST: the client sees the connection reset
                    return "421 4.4.2 dropped"  # never reaches the client
                return fault.reply
        return None

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert self._credentials is not None
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode(errors="replace")
            password = auth_data.password.decode(errors="replace")
            if self._credentials.get(login) == password:
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    # aiosmtpd handler hooks: each returns the SMTP reply line.

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        fault = await self._take_fault(server, "MAIL")
        if fault is not None:
            return fault
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        fault = await self._take_fault(server, "RCPT")
        if fault is not None:
            return fault
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        fault = await self._take_fault(server, "DATA")
        if fault is not None:
            return fault
        content = envelope.original_content or b""
        self.messages.append(
            Captured(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                content=content,
                authenticated=bool(session.authenticated),
            )
        )
        self._changed.set()
        return f"250 2.0.0 OK queued as capture-{len(self.messages)}"
