"""Mail intake in the core: which mailbox a recipient is, the re-send key, and the durable accept.

Every way mail comes in (the SMTP listener, the IMAP watcher) calls `MailIntake.accept`;
it returns only after the message is committed, and then wakes the inbox worker.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from gateway.domain import Accepted, Channel, NewMessage
from gateway.ports import Store, TransientError
from gateway.run.worker import Clock, utcnow
from rules.types import Mailbox

_MSGID = re.compile(rb"^message-id:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def canonical_address(address: str) -> str:
    """Lower-case, without angle brackets or a +detail (emergency+x@ → emergency@)."""
    address = address.strip().strip("<>").lower()
    local, at, domain = address.rpartition("@")
    if not at:
        return address
    return f"{local.split('+', 1)[0]}@{domain}"


def resend_key(mail_from: str, raw: bytes) -> str | None:
    """Same sender + same Message-ID = the same message sent again (processed once)."""
    end = _HEADER_END.search(raw)
    head = raw[: end.start()] if end else raw[:65536]
    match = _MSGID.search(head)
    if match is None:
        return None
    msgid = b"".join(match.group(1).split()).strip()
    if not msgid:
        return None
    digest = hashlib.sha256(mail_from.strip().lower().encode() + b"\0" + msgid.lower())
    return digest.hexdigest()


class MailIntake:
    """Maps recipients to mailboxes and accepts messages into the durable inbox."""

    def __init__(
        self,
        store: Store,
        emergency: Iterable[str],
        support: Iterable[str],
        on_accepted: Callable[[], None],
        clock: Clock = utcnow,
    ) -> None:
        self._store = store
        self._boxes = {canonical_address(a): Mailbox.EMERGENCY for a in emergency}
        self._boxes.update({canonical_address(a): Mailbox.SUPPORT for a in support})
        self._on_accepted = on_accepted
        self._clock = clock

    def mailbox_for(self, rcpt: str) -> Mailbox | None:
        """The mailbox a recipient address belongs to, or None if it is not ours."""
        return self._boxes.get(canonical_address(rcpt))

    async def accept(
        self,
        mail_from: str,
        rcpt_to: Iterable[str],
        raw: bytes,
        *,
        received_at: datetime | None = None,
        timeout_s: float | None = None,
    ) -> Accepted:
        """Commit the message durably (emergency wins when both mailboxes are addressed);
        TimeoutError after `timeout_s` means it was not and will not be committed."""
        rcpts = tuple(rcpt_to)
        boxes = {self.mailbox_for(r) for r in rcpts} - {None}
        if not boxes:
            raise ValueError("no recipient belongs to a mailbox")
        mailbox = Mailbox.EMERGENCY if Mailbox.EMERGENCY in boxes else Mailbox.SUPPORT
        accepted = await self._store.accept(NewMessage(
            channel=Channel.EMAIL, mailbox=mailbox, mail_from=mail_from, rcpt_to=rcpts, raw=raw,
            dedup_key=resend_key(mail_from, raw), received_at=received_at or self._clock(),
        ), timeout_s)
        self._on_accepted()
        return accepted

    async def accept_fetched(self, mailbox: Mailbox, mail_from: str, raw: bytes) -> Accepted:
        """Commit a message read from a mailbox (IMAP), addressed to that mailbox. Without a
        Message-ID the content itself is the re-send key, so a re-scan of the folder never
        processes a message twice. The caller wakes the worker (`wake`) after a batch."""
        rcpt = next((a for a, box in self._boxes.items() if box is mailbox), mailbox.value)
        key = resend_key(mail_from, raw) or "raw:" + hashlib.sha256(raw).hexdigest()
        return await self._store.accept(NewMessage(
            channel=Channel.EMAIL, mailbox=mailbox, mail_from=mail_from, rcpt_to=(rcpt,),
            raw=raw, dedup_key=key, received_at=self._clock(),
        ))

    def wake(self) -> None:
        """Tell the inbox worker there is new work."""
        self._on_accepted()


class ChatIntake:
    """Accepts chat events into the durable inbox, keyed by event id (so a replayed sync
    batch is harmless), and wakes the inbox worker."""

    def __init__(self, store: Store, report_rooms: Mapping[str, str],
                 on_accepted: Callable[[], None], clock: Clock = utcnow) -> None:
        self._store = store
        self._report_rooms = report_rooms
        self._on_accepted = on_accepted
        self._clock = clock

    async def accept(self, room_id: str, event: Mapping[str, Any], sender_power: int) -> None:
        """Commit one room event."""
        event_id = str(event.get("event_id", ""))
        raw = json.dumps({"room_id": room_id, "sender_power": sender_power, "event": event},
                         separators=(",", ":")).encode()
        mailbox = self._report_rooms.get(room_id)
        await self._store.accept(NewMessage(
            channel=Channel.MATRIX, mailbox=Mailbox(mailbox) if mailbox else None,
            mail_from=str(event.get("sender", "")), rcpt_to=(room_id,), raw=raw,
            dedup_key=f"mx:{event_id}" if event_id else None, received_at=self._clock(),
        ))

    async def accept_all(self, events: Iterable[tuple[str, Mapping[str, Any], int]]) -> None:
        """Commit a batch (they share group commits), then wake the worker once. A failure is
        a TransientError: the caller keeps its sync position and offers the batch again."""
        try:
            await asyncio.gather(*(self.accept(room, event, power)
                                   for room, event, power in events))
        except Exception as exc:
            raise TransientError(f"could not commit chat events ({type(exc).__name__})") from exc
        self._on_accepted()
