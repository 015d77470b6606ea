"""Parsing inbound mail into the values the pipeline works with.

Owns the translation of raw RFC 5322 / MIME bytes, as SMTP or IMAP intake stored them,
into a frozen `ParsedMail`: normalised message ids for threading, the decoded subject and
sender, the body text and its newly written part (stripping lives in `gateway.parse.mailquote`),
the attachment list, a header map for rules, and whether the mail is automatic (the
classifier is `gateway.parse.automail`) so robots are told apart from people. Header fields
are decoded in `gateway.parse.mail_headers`, the MIME tree is walked in `gateway.parse.mime`.

Pure: bytes in, values out. Real-world mail is malformed in every way imaginable, so each
field degrades on its own; only input with nothing usable raises `UnparseableMessage`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage, Message

from gateway.parse.automail import Evidence, classify
from gateway.parse.listmail import list_info
from gateway.parse.mail_headers import (
    bare_address,
    clean,
    first_address,
    header_date,
    header_map,
    normalise_msgid,
    split_msgids,
)
from gateway.parse.mailquote import strip_quoted
from gateway.parse.mime import Attachment, Parts, html_to_text, parse_bytes, walk_parts

__all__ = [
    "Attachment",
    "ParsedMail",
    "UnparseableMessage",
    "automatic_reason",
    "html_to_text",
    "normalise_msgid",
    "parse_mail",
    "split_msgids",
    "strip_quoted",
]


@dataclass(frozen=True)
class ParsedMail:
    """Everything the pipeline needs from one inbound message."""

    message_id: str | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    subject: str
    from_addr: str
    from_name: str
    reply_to: str | None
    date: datetime | None
    text: str
    new_text: str
    attachments: tuple[Attachment, ...]
    headers: Mapping[str, str]
    automatic: str | None
    # Mail through a list or group (gateway.parse.listmail): its id, its own addresses (never a
    # recipient of ours), and which header named the author when the From was the list's.
    list_id: str | None = None
    list_addresses: tuple[str, ...] = ()
    via_list: bool = False
    author_header: str | None = None

    @property
    def through_list(self) -> bool:
        """The message came through a list or group (its envelope is the list's)."""
        return self.list_id is not None or bool(self.list_addresses)


class UnparseableMessage(Exception):
    """Raised only when the bytes are not a usable message at all (empty, no headers, no body)."""


def parse_mail(
    raw: bytes, envelope_sender: str | None = None, *, loop_header: str = "X-Chatops-Loop"
) -> ParsedMail:
    """Parse raw message bytes; raises nothing but `UnparseableMessage`.

    `envelope_sender` is the SMTP MAIL FROM: "" for the null reverse-path, None when
    unknown (then the Return-Path header stands in for it).
    """
    try:
        raw = bytes(raw)
        _require_mail(raw)
        return _assemble(parse_bytes(raw), envelope_sender, loop_header)
    except UnparseableMessage:
        raise
    except Exception as exc:  # every field degrades on its own; this is the last line of defence
        raise UnparseableMessage("the message could not be read") from exc


# RFC 5322 field name (printable ASCII but colon), then the colon. An mbox "From " line
# some tools leave on top is skipped first.
_FIELD = re.compile(rb"[!-9;-~]{1,200}[ \t]*:")
_MBOX_LINE = re.compile(rb"From [^\r\n]*\r?\n")
_KNOWN_HEADERS = re.compile(
    rb"^(?:from|sender|reply-to|return-path|received|message-id|date|to|cc|subject"
    rb"|mime-version|content-type|in-reply-to|references|delivered-to)[ \t]*:",
    re.IGNORECASE | re.MULTILINE,
)
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # Outlook .msg, Word and friends


def _require_mail(raw: bytes) -> None:
    """Refuse what is not an email at all, before anything acts on what it seems to say.

    A byte-order mark or a blank line before the headers, a log file, a binary Outlook
    `.msg`: the parser would read the whole thing as a body without headers (or take a
    line of it for a header), and the text could name any address. Such input is kept as
    an unreadable message for a person to look at.
    """
    start = _MBOX_LINE.match(raw)
    head = raw[start.end() if start else 0 :][:65536]
    if head.startswith(_OLE2):
        raise UnparseableMessage("not an email: a binary document (Outlook .msg or similar)")
    if head.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        raise UnparseableMessage("not an email: a byte-order mark before the headers")
    if head[:1] in (b"\r", b"\n"):
        raise UnparseableMessage("not an email: a blank line before the headers")
    if not _FIELD.match(head):
        raise UnparseableMessage("not an email: the first line is not a header")
    block = re.split(rb"\r?\n\r?\n", head, maxsplit=1)[0]
    if not _KNOWN_HEADERS.search(block):
        raise UnparseableMessage("not an email: none of the headers every email has")


def _assemble(msg: Message, envelope_sender: str | None, loop_header: str) -> ParsedMail:
    headers = header_map(msg)
    parts = walk_parts(msg)
    if not headers and not parts.text and not parts.attachments:
        raise UnparseableMessage("no headers and no body")
    sender = first_address(headers, "from") or ("", "")
    reply_to = first_address(headers, "reply-to")
    group = list_info(headers, envelope_sender)
    if group is not None and group.author is not None:
        # The list rewrote the From to itself: the reporter is the author it names.
        sender = (bare_address(group.author[0]), clean(group.author[1]) or sender[1])
    if group is not None and reply_to is not None and reply_to[0] in group.addresses:
        reply_to = None  # "reply to the group" is no address of the reporter's
    automatic = _automatic(msg, headers, parts, envelope_sender, loop_header)
    inner = _wrapped(msg) if group is not None and group.from_is_list else None
    if inner is not None:  # the author's own message, wrapped by the list: read that
        inner_headers = header_map(inner)
        parts = walk_parts(inner)
        if group is not None and group.author is None:
            sender = first_address(inner_headers, "from") or sender
        automatic = automatic or _automatic(inner, inner_headers, parts, None, loop_header)
    return ParsedMail(
        message_id=normalise_msgid(headers.get("message-id", "")),
        in_reply_to=split_msgids(headers.get("in-reply-to", "")),
        references=split_msgids(headers.get("references", "")),
        subject=headers.get("subject", ""),
        from_addr=sender[0],
        from_name=sender[1],
        reply_to=reply_to[0] if reply_to and reply_to[0] else None,
        date=header_date(headers),
        text=parts.text,
        new_text=strip_quoted(parts.text) if parts.text else "",
        attachments=tuple(parts.attachments),
        headers=headers,
        automatic=automatic,
        list_id=group.list_id if group else None,
        list_addresses=tuple(sorted(group.addresses)) if group else (),
        via_list=group is not None and group.from_is_list,
        author_header=group.author_header if group else None,
    )


def _wrapped(msg: Message) -> Message | None:
    """Mailman's `wrap_message` DMARC mitigation: the author's message as the one
    message/rfc822 part of a message From the list (after an optional text part)."""
    if msg.get_content_type() == "message/rfc822":
        candidates = [msg]
    elif msg.get_content_type() == "multipart/mixed" and msg.is_multipart():
        candidates = [p for p in msg.get_payload() if isinstance(p, Message)]
    else:
        return None
    wrapped = [p for p in candidates if p.get_content_type() == "message/rfc822"]
    payload = wrapped[0].get_payload() if len(wrapped) == 1 else None
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return payload[0]
    return None


def automatic_reason(
    msg: EmailMessage, envelope_sender: str | None, loop_header: str = "X-Chatops-Loop"
) -> str | None:
    """Why this message was sent by software rather than a person, or None (RFC 3834)."""
    return _automatic(msg, header_map(msg), walk_parts(msg), envelope_sender, loop_header)


def _automatic(
    msg: Message, headers: Mapping[str, str], parts: Parts, sender: str | None, loop: str
) -> str | None:
    evidence = Evidence(
        msg.get_content_type(),
        headers,
        parts.text,
        tuple(a.content_type for a in parts.attachments),
        tuple(parts.tnef_classes),
    )
    return classify(evidence, sender, loop)
