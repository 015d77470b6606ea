"""The small interfaces the core needs from the edges, and the two errors every edge speaks.

Adapters translate their library's failures (aiohttp errors, SMTP replies, nio error
values) into TransientError (try again later) or PermanentError (retrying cannot help)
at the boundary, so the outbox can decide what to do without knowing any library.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class TransientError(Exception):
    """A failure worth retrying: network trouble, 5xx, 429. `retry_after_s` is the peer's hint."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class PermanentError(Exception):
    """A failure retrying cannot fix: 400, bad credentials, a rejected recipient."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class PageRequest:
    """One PagerDuty-style page: `dedup_key` makes retries and later actions idempotent."""

    dedup_key: str
    summary: str
    severity: str  # critical | error | warning | info
    source: str
    details: Mapping[str, Any]


class Pager(Protocol):
    """Wakes somebody up. Every call is idempotent for the same dedup_key."""

    async def trigger(self, page: PageRequest) -> Mapping[str, Any]:
        """Open (or re-open) the alert; returns what the provider said, for the record."""
        ...

    async def acknowledge(self, dedup_key: str) -> Mapping[str, Any]:
        """Tell the provider someone is on it."""
        ...

    async def resolve(self, dedup_key: str) -> Mapping[str, Any]:
        """Close the alert."""
        ...


class MailSender(Protocol):
    """Delivers one fully rendered RFC 5322 message to one recipient."""

    async def send(self, message: bytes, mail_from: str, rcpt_to: str) -> Mapping[str, Any]:
        """Deliver; idempotent per Message-ID where the transport allows it."""
        ...


class ChatSender(Protocol):
    """Posts one event to a chat room. `txn_id` makes a retried send deliver exactly once."""

    async def send(self, room_id: str, content: Mapping[str, Any], txn_id: str
                   ) -> Mapping[str, Any]:
        """Send; returns at least {"event_id": ...}."""
        ...
