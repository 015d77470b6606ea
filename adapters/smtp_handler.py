"""The SMTP hooks aiosmtpd calls for MAIL, RCPT and DATA: the envelope checks, and the
durable accept behind the reply to DATA.

DATA is answered 250 only once the message is committed (MailIntake.accept returns after
the store's group commit); any failure of ours is a 451 (try again later), never a 5xx, and
never carries exception text to the client. Data holding an end-of-data look-alike (SMTP
smuggling, adapters.smtp_smuggling) gets 550 before anything is stored.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

from adapters.smtp_smuggling import smuggling
from gateway.run import metrics
from gateway.run.intake import MailIntake

# The same logger as the listener's: operators filter on it.
log = structlog.get_logger("adapters.smtp_intake")

TEMPFAIL = "451 4.3.0 Temporary failure, please try again later"
SMUGGLING = "550 5.5.2 Message refused: a line with a lone dot must end in CRLF"


class Owner(Protocol):
    """What the hooks need from the listener (adapters.smtp_intake.SmtpIntakeServer)."""

    intake: MailIntake
    stopping: bool
    max_recipients: int
    commit_timeout_s: float
    in_flight: int
    idle: asyncio.Event


class Handler:
    """aiosmtpd's hooks: each returns the SMTP reply."""

    def __init__(self, owner: Owner) -> None:
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
                envelope.mail_from or "",
                envelope.rcpt_tos,
                raw,
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
