"""The end-to-end self-test: a signed canary message through our own intake, the inbox
worker and the outbox, on a schedule.

Every `interval_s` the monitor submits a small email through the daemon's own intake (the
SMTP listener on loopback, else the durable inbox directly). It carries a token
`X-Chatops-Canary: <nonce>.<unix time>.<HMAC-SHA256>` keyed by a key derived from the
threading key, so only we can make one: the inbox worker recognises a canary only when the
signature verifies, and then plans nothing but a `canary` outbox entry, whose handler tells
the monitor it came through. A canary never becomes an incident, a page, a reply or a chat
message. A forged or damaged token is an ordinary message — and the canary is also marked
`Auto-Submitted: auto-generated`, so even unrecognised it is never answered or paged.

States (shown as the `canary` component): "waiting" until the first run, "ok" while the
last canary came through, "failed" (unhealthy) when one has not within `deadline_s`.
About once an hour, the canaries older than two days are deleted from the store.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import structlog

from gateway.domain import CANARY_OUTCOME, InboxRow, OutboxEntry, OutboxKind, OutboxSpec, Plan
from gateway.ports import TransientError

log = structlog.get_logger("gateway.run.canary")

HEADER = "X-Chatops-Canary"
MAX_AGE_S = 86400.0  # an older token is not a canary (a replay of a stolen one, at most)
KEEP_S = 2 * MAX_AGE_S  # canaries are kept this long, then pruned (nothing refers to them)
PRUNE_EVERY_S = 3600.0
_TOKEN = re.compile(
    rb"^x-chatops-canary:[ \t]*([0-9a-f]{32})\.(\d{1,12})\.([0-9a-f]{64})[ \t]*\r?$",
    re.IGNORECASE | re.MULTILINE,
)
_HEADER_END = re.compile(rb"\r?\n\r?\n")

Submit = Callable[[str, str, bytes], Awaitable[None]]  # mail_from, rcpt_to, raw


def canary_key(thread_key: str) -> bytes:
    """The canary's signing key, derived from the threading key (never the key itself)."""
    return hmac.new(thread_key.encode(), b"chatops-gateway canary v1", hashlib.sha256).digest()


def _mac(key: bytes, nonce: str, stamp: int) -> str:
    return hmac.new(key, f"{nonce}.{stamp}".encode(), hashlib.sha256).hexdigest()


def token(key: bytes, nonce: str, stamp: int) -> str:
    """The header value for one canary."""
    return f"{nonce}.{stamp}.{_mac(key, nonce, stamp)}"


def verified_nonce(key: bytes, raw: bytes, now: float) -> str | None:
    """The nonce of a canary we made (signature valid, not too old), else None. Only the
    message's own header block is looked at."""
    end = _HEADER_END.search(raw)
    match = _TOKEN.search(raw[: end.start()] if end else raw[:65536])
    if match is None:
        return None
    nonce, stamp, mac = (part.decode() for part in match.groups())
    if not hmac.compare_digest(mac, _mac(key, nonce, int(stamp))):
        log.warning("canary.forged")  # someone else's header: an ordinary message
        return None
    if abs(now - int(stamp)) > MAX_AGE_S:
        return None
    return nonce


def message(key: bytes, nonce: str, mail_from: str, rcpt_to: str, now: float) -> bytes:
    """The canary email (short, plain, automatic)."""
    domain = mail_from.rpartition("@")[2] or "localhost"
    lines = [
        f"From: chatops-gateway self-test <{mail_from}>",
        f"To: <{rcpt_to}>",
        "Subject: chatops-gateway self-test (ignore)",
        f"Date: {format_datetime(datetime.fromtimestamp(now, UTC))}",
        f"Message-ID: <canary-{nonce}@{domain}>",
        "Auto-Submitted: auto-generated",
        f"{HEADER}: {token(key, nonce, int(now))}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        "A self-test of the gateway's intake, pipeline and outbox. Nothing to do.",
        "",
    ]
    return "\r\n".join(lines).encode("ascii")


def recogniser(key: bytes) -> Callable[[InboxRow], Plan | None]:
    """For the inbox worker (thread-safe, pure): the plan of a canary row, else None."""

    def recognise(row: InboxRow) -> Plan | None:
        nonce = verified_nonce(key, row.raw, time.time())
        if nonce is None:
            return None
        return Plan(
            outcome=CANARY_OUTCOME, outbox=(OutboxSpec(OutboxKind.CANARY, {"nonce": nonce}),)
        )

    return recognise


class CanaryMonitor:
    """Sends a canary every `interval_s` and watches that it comes out of the outbox."""

    def __init__(
        self,
        key: bytes,
        submit: Submit,
        mail_from: str,
        rcpt_to: str,
        interval_s: float,
        deadline_s: float,
        elsewhere: Callable[[str], Awaitable[bool]] | None = None,
        poll_s: float = 1.0,
        prune: Callable[[datetime], Awaitable[int]] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        # `elsewhere(nonce)`: whether another node's outbox delivered that canary (several
        # nodes on one database: any node may claim the entry, only this one waits for it).
        self._elsewhere, self._poll_s = elsewhere, poll_s
        self._key, self._submit = key, submit
        self._from, self._to = mail_from, rcpt_to
        self._interval_s, self._deadline_s = interval_s, deadline_s
        self.state = "waiting"
        self.sent = 0
        self.through = 0
        self.last_error = ""
        self._arrived: dict[str, asyncio.Event] = {}
        # `prune(before)`: delete the canaries processed before then (the store's
        # prune_canaries), done about once an hour for those older than KEEP_S.
        self._prune, self._pruned_at, self._clock = prune, time.monotonic(), clock

    def problem(self) -> str:
        """Why the last canary failed, for /healthz."""
        return self.last_error if self.state == "failed" else ""

    async def handler(self, entry: OutboxEntry) -> dict[str, Any]:
        """The outbox handler of `canary` entries: the canary came all the way through."""
        nonce = str(entry.payload.get("nonce", ""))
        arrived = self._arrived.get(nonce)
        if arrived is not None:
            arrived.set()
        return {"canary": nonce}

    async def run(self) -> None:
        """Until cancelled: wait `interval_s`, then one canary; the first waits too, so a
        short-lived run (a test, a restart loop) adds nothing to the inbox."""
        while True:
            await asyncio.sleep(self._interval_s)
            await self.once()
            if self._prune is not None and time.monotonic() - self._pruned_at >= PRUNE_EVERY_S:
                await self.prune_old()

    async def prune_old(self) -> int:
        """Delete the canaries older than KEEP_S; a failure is logged and tried next time."""
        if self._prune is None:
            return 0
        self._pruned_at = time.monotonic()
        try:
            gone = await self._prune(self._clock() - timedelta(seconds=KEEP_S))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a database that does not answer: the next hour will do
            log.warning("canary.prune_failed", error=type(exc).__name__)
            return 0
        if gone:
            log.info("canary.pruned", canaries=gone)
        return gone

    async def once(self) -> bool:
        """Send one canary and wait for it; True if it came through in time."""
        nonce = secrets.token_hex(16)
        arrived = self._arrived[nonce] = asyncio.Event()
        started = time.monotonic()
        try:
            self.sent += 1
            async with asyncio.timeout(self._deadline_s):
                await self._submit(
                    self._from,
                    self._to,
                    message(self._key, nonce, self._from, self._to, time.time()),
                )
                await self._through(nonce, arrived)
        except TimeoutError:
            return self._failed(f"canary not through within {self._deadline_s:g}s")
        except TransientError as exc:
            return self._failed(f"intake did not take the canary: {exc.reason}")
        except ValueError as exc:
            return self._failed(f"intake refused the canary ({type(exc).__name__})")
        finally:
            del self._arrived[nonce]
        self.through += 1
        if self.state != "ok":
            log.info("canary.ok", seconds=round(time.monotonic() - started, 3))
        self.state, self.last_error = "ok", ""
        return True

    async def _through(self, nonce: str, arrived: asyncio.Event) -> None:
        """Until this node's handler saw the canary, or another node's delivered it."""
        if self._elsewhere is None:
            await arrived.wait()
            return
        while not arrived.is_set():
            try:
                async with asyncio.timeout(self._poll_s):
                    await arrived.wait()
            except TimeoutError:
                if await self._elsewhere(nonce):
                    return

    def _failed(self, reason: str) -> bool:
        self.state, self.last_error = "failed", reason
        log.error("canary.failed", reason=reason)
        return False
