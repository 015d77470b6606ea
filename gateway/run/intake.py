"""Mail and chat intake in the core: which mailbox a recipient is, the re-send key, and the
durable accept.

Every way mail comes in (the SMTP listener, the IMAP watcher) calls `MailIntake.accept`;
it returns only after the message is committed, and then wakes the inbox worker.

The re-send key: the envelope sender and the Message-ID are both the client's choice, so
they alone would let a copy sent first (after a 250, nothing tells the genuine sender)
swallow the genuine report. A message is a re-send only when its content is the same too:
the body and the header fields its author wrote (`content_digest`), not the trace fields
that each hop adds, so a relay's retry or an IMAP re-scan is still processed once.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from gateway.domain import Accepted, Channel, ChatMessage, NewMessage, chat_key
from gateway.domain_chat import encode_chat
from gateway.ports import Store, TransientError
from gateway.run.worker import Clock, utcnow
from rules.types import Mailbox

_MSGID = re.compile(rb"^message-id:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.MULTILINE)
# The fields an author writes (RFC 5322 originator, destination, identification,
# informational, and the MIME fields that say how to read the body). Trace fields
# (Received, Return-Path, Authentication-Results, ARC-*, DKIM-Signature of a re-signing
# hop, X-* of filters) differ between two deliveries of the same message: left out.
_AUTHOR_FIELDS = frozenset(
    {
        b"from",
        b"sender",
        b"reply-to",
        b"to",
        b"cc",
        b"bcc",
        b"subject",
        b"date",
        b"message-id",
        b"in-reply-to",
        b"references",
        b"comments",
        b"keywords",
        b"mime-version",
        b"content-type",
        b"content-transfer-encoding",
        b"content-disposition",
    }
)


def canonical_address(address: str) -> str:
    """Lower-case, without angle brackets or a +detail (emergency+x@ → emergency@)."""
    address = address.strip().strip("<>").lower()
    local, at, domain = address.rpartition("@")
    if not at:
        return address
    return f"{local.split('+', 1)[0]}@{domain}"


def header_end(raw: bytes) -> tuple[int, int] | None:
    """Where the first blank line is, as _HEADER_END.search would say (start, end), found
    with bytes.find: the header of most mail is short and ends in CRLF CRLF, and the regex
    tried each of the body's line ends too (4 µs of the event loop for 2 KB, twice)."""
    crlf = raw.find(b"\r\n\r\n")
    limit = len(raw) if crlf < 0 else crlf + 4
    # The first LF followed by LF or CRLF, at or before the CRLF CRLF (its own LF is one).
    hits = [i for i in (raw.find(b"\n\n", 0, limit), raw.find(b"\n\r\n", 0, limit)) if i >= 0]
    if not hits:
        return None
    lf = min(hits)
    start = lf - 1 if lf and raw[lf - 1] == 0x0D else lf
    return start, lf + (2 if raw[lf + 1] == 0x0A else 3)


def content_digest(raw: bytes, end: tuple[int, int] | None = None) -> bytes:
    """What the author wrote: the author's header fields (unfolded, whitespace collapsed)
    and the body (line ends normalised, trailing blank lines dropped). `end`: header_end's
    answer, when the caller has it already."""
    end = end or header_end(raw)
    head, body = (raw[: end[0]], raw[end[1] :]) if end else (raw, b"")
    digest = hashlib.sha256()
    for match in _FIELD.finditer(head):
        name = match.group(1).lower()
        if name in _AUTHOR_FIELDS:
            digest.update(name + b":" + b" ".join(match.group(2).split()) + b"\n")
    digest.update(b"\n")
    digest.update(body.replace(b"\r\n", b"\n").rstrip(b"\r\n \t"))
    return digest.digest()


def resend_key(mail_from: str, raw: bytes) -> str | None:
    """Same sender + same Message-ID + same content (`content_digest`) = the same message
    sent again (processed once); None without a Message-ID."""
    end = header_end(raw)
    head = raw[: end[0]] if end else raw[:65536]
    match = _MSGID.search(head)
    if match is None:
        return None
    msgid = b"".join(match.group(1).split()).strip()
    if not msgid:
        return None
    # "v2": keys of the earlier form (sender and Message-ID only) never match these.
    digest = hashlib.sha256(
        b"v2\0"
        + mail_from.strip().lower().encode()
        + b"\0"
        + msgid.lower()
        + b"\0"
        + content_digest(raw, end)
    )
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
        client: str | None = None,
    ) -> Accepted:
        """Commit the message durably (emergency wins when both mailboxes are addressed);
        TimeoutError after `timeout_s` means it was not and will not be committed.
        `client`: the connecting client's address, which the rate limits count."""
        rcpts = tuple(rcpt_to)
        boxes = {self.mailbox_for(r) for r in rcpts} - {None}
        if not boxes:
            raise ValueError("no recipient belongs to a mailbox")
        mailbox = Mailbox.EMERGENCY if Mailbox.EMERGENCY in boxes else Mailbox.SUPPORT
        accepted = await self._store.accept(
            NewMessage(
                channel=Channel.EMAIL,
                mailbox=mailbox,
                mail_from=mail_from,
                rcpt_to=rcpts,
                raw=raw,
                dedup_key=resend_key(mail_from, raw),
                received_at=received_at or self._clock(),
                client=client,
            ),
            timeout_s,
        )
        self._on_accepted()
        return accepted

    async def accept_fetched(self, mailbox: Mailbox, mail_from: str, raw: bytes) -> Accepted:
        """Commit a message read from a mailbox (IMAP), addressed to that mailbox. Without a
        Message-ID the content itself is the re-send key, so a re-scan of the folder never
        processes a message twice. The caller wakes the worker (`wake`) after a batch."""
        rcpt = next((a for a, box in self._boxes.items() if box is mailbox), mailbox.value)
        key = resend_key(mail_from, raw) or "raw:" + hashlib.sha256(raw).hexdigest()
        return await self._store.accept(
            NewMessage(
                channel=Channel.EMAIL,
                mailbox=mailbox,
                mail_from=mail_from,
                rcpt_to=(rcpt,),
                raw=raw,
                dedup_key=key,
                received_at=self._clock(),
            )
        )

    def wake(self) -> None:
        """Tell the inbox worker there is new work."""
        self._on_accepted()


class ChatIntake:
    """Accepts chat messages (neutral values, translated by the chat adapter) into the
    durable inbox, keyed by event id (so a replayed sync batch is harmless), and wakes the
    inbox worker."""

    def __init__(
        self,
        store: Store,
        report_rooms: Mapping[str, str],
        on_accepted: Callable[[], None],
        clock: Clock = utcnow,
    ) -> None:
        self._store = store
        self._report_rooms = report_rooms
        self._on_accepted = on_accepted
        self._clock = clock

    async def accept(self, msg: ChatMessage) -> None:
        """Commit one message."""
        mailbox = self._report_rooms.get(msg.room_id)
        await self._store.accept(
            NewMessage(
                channel=Channel.CHAT,
                mailbox=Mailbox(mailbox) if mailbox else None,
                mail_from=msg.sender,
                rcpt_to=(msg.room_id,),
                raw=encode_chat(msg),
                # The same key as rows stored before chat was neutral: a batch replayed
                # across an upgrade is still accepted once.
                dedup_key=chat_key(msg.event_id) if msg.event_id else None,
                received_at=self._clock(),
            )
        )

    async def accept_all(self, messages: Iterable[ChatMessage]) -> None:
        """Commit a batch (they share group commits), then wake the worker once. A failure is
        a TransientError: the caller keeps its sync position and offers the batch again."""
        try:
            await asyncio.gather(*(self.accept(msg) for msg in messages))
        except Exception as exc:
            raise TransientError(f"could not commit chat events ({type(exc).__name__})") from exc
        self._on_accepted()
