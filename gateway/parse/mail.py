"""Parsing inbound mail into the values the pipeline works with.

Owns the translation of raw RFC 5322 / MIME bytes, as SMTP or IMAP intake stored them,
into a frozen `ParsedMail`: normalised message ids for threading, the decoded subject and
sender, the body text and its newly written part (stripping lives in `gateway.parse.mailquote`),
the attachment list, a header map for rules, and whether the mail is automatic (the
classifier is `gateway.parse.automail`) so robots are told apart from people.

Pure: bytes in, values out. Real-world mail is malformed in every way imaginable, so each
field degrades on its own; only input with nothing usable raises `UnparseableMessage`.
"""

from __future__ import annotations

import codecs
import html
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.headerregistry import AddressHeader
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from functools import cached_property
from types import MappingProxyType

import html2text

from gateway.parse.automail import Evidence, classify, safe_parseaddr
from gateway.parse.listmail import list_info
from gateway.parse.mailquote import strip_quoted

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
class Attachment:
    """A non-body part, listed but not parsed."""

    filename: str | None
    content_type: str
    size: int  # decoded payload bytes


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
        return _assemble(_parse(raw), envelope_sender, loop_header)
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


def _parse(raw: bytes) -> Message:
    # compat32 keeps headers as plain strings: the modern policy parses every header of
    # every part as it goes (a quarter of a millisecond per Content-Type), which made a
    # mail with thousands of parts take seconds. The fields below decode what they use.
    return BytesParser(policy=policy.compat32).parsebytes(raw)


def _assemble(msg: Message, envelope_sender: str | None, loop_header: str) -> ParsedMail:
    headers = _header_map(msg)
    parts = _walk_parts(msg)
    if not headers and not parts.text and not parts.attachments:
        raise UnparseableMessage("no headers and no body")
    sender = _address(headers, "from") or ("", "")
    reply_to = _address(headers, "reply-to")
    group = list_info(headers, envelope_sender)
    if group is not None and group.author is not None:
        # The list rewrote the From to itself: the reporter is the author it names.
        sender = (_bare_address(group.author[0]), _clean(group.author[1]) or sender[1])
    if group is not None and reply_to is not None and reply_to[0] in group.addresses:
        reply_to = None  # "reply to the group" is no address of the reporter's
    automatic = _automatic(msg, headers, parts, envelope_sender, loop_header)
    inner = _wrapped(msg) if group is not None and group.from_is_list else None
    if inner is not None:  # the author's own message, wrapped by the list: read that
        inner_headers = _header_map(inner)
        parts = _walk_parts(inner)
        if group is not None and group.author is None:
            sender = _address(inner_headers, "from") or sender
        automatic = automatic or _automatic(inner, inner_headers, parts, None, loop_header)
    return ParsedMail(
        message_id=normalise_msgid(headers.get("message-id", "")),
        in_reply_to=split_msgids(headers.get("in-reply-to", "")),
        references=split_msgids(headers.get("references", "")),
        subject=headers.get("subject", ""),
        from_addr=sender[0],
        from_name=sender[1],
        reply_to=reply_to[0] if reply_to and reply_to[0] else None,
        date=_date(headers),
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


# --- headers ------------------------------------------------------------------------------

_FOLD = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
# The policy's header parser is quadratic on some inputs (long runs of quotes, thousands
# of encoded words), so longer values skip it: one absurd mail must not stall the worker.
_MAX_PARSE_CHARS = 4096
_MAX_DECODE_CHARS = 65536


def _clean(value: str) -> str:
    """One line of valid text: control characters and line breaks folded to single spaces.

    This is also what stops header injection: an encoded "=0D=0A" in a subject must not
    survive as a line break when the subject is echoed into an outgoing message.
    """
    return _FOLD.sub(" ", _valid_text(value)).strip()


def _valid_text(value: str) -> str:
    """Re-decode the lone surrogates the parser uses for raw 8-bit header bytes."""
    if not _SURROGATE.search(value):
        return value
    try:
        return _decode(value.encode("utf-8", "surrogateescape"), None)
    except UnicodeEncodeError:  # surrogates that are not escaped bytes
        return value.encode("utf-8", "replace").decode()


def _header_map(msg: Message) -> Mapping[str, str]:
    """Lowercased name -> first value, decoded; one pass, so absurd header counts stay linear."""
    found: dict[str, str] = {}
    # raw_items is the only way to see each value before policy parsing, which can raise.
    for name, raw in msg.raw_items():
        key = _clean(str(name)).lower()
        if key and key not in found:
            found[key] = _decode_header(key, str(raw))
    return MappingProxyType(found)


def _decode_header(name: str, raw: str) -> str:
    """Decode one header value (RFC 2047, RFC 6532 or raw 8-bit), never raising.

    Address headers with encoded words come back re-quoted ('"Smith, John" <j@x>')
    so that they parse again.
    """
    text = _valid_text(raw)
    try:
        if "=?" in text and len(text) <= _MAX_PARSE_CHARS:
            text = str(policy.default.header_fetch_parse(name, text))
        elif "=?" in text and len(text) <= _MAX_DECODE_CHARS:
            text = str(make_header(decode_header(text)))
    except Exception:  # defective structured headers, unknown charsets in encoded words
        return _clean(text)
    return _clean(text)


def _address(headers: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """(bare lowercased address, display name) of the first address in a header, or None."""
    value = headers.get(name)
    if value is None:
        return None
    try:
        header = policy.default.header_fetch_parse(name, value[:_MAX_PARSE_CHARS])
        first = header.addresses[0] if isinstance(header, AddressHeader) else None
    except Exception:  # policy.default raises on some malformed address headers
        first = None
    if first is not None:
        return _bare_address(first.addr_spec), _clean(first.display_name)
    display, addr = safe_parseaddr(value)
    return _bare_address(addr), _clean(display)


_ADDRESS = re.compile(r"[^\s<>(),;:\"\[\]@]+(?:@[^\s<>(),;:\"\[\]@]+)?")


def _bare_address(addr_spec: str) -> str:
    """The address lowercased, or "" when it is not one (a bare local part is kept)."""
    addr = _clean(addr_spec).lower()
    return addr if _ADDRESS.fullmatch(addr) else ""


def _date(headers: Mapping[str, str]) -> datetime | None:
    """The Date header as an aware datetime; "-0000" (zone unknown) is taken as UTC."""
    try:
        parsed = parsedate_to_datetime(headers.get("date", ""))
    except Exception:  # ValueError, TypeError and friends on garbage dates
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# --- message ids --------------------------------------------------------------------------

_BRACKETED = re.compile(r"<([^<>]*)>")
_MSGID = re.compile(r"[^\s<>@\x00-\x1f\x7f-\x9f]+@[^\s<>@\x00-\x1f\x7f-\x9f]+")
_MAX_MSGID_CHARS = 998  # the RFC 5322 line limit; longer is not an id anyone generated


def normalise_msgid(value: str) -> str | None:
    """The first message id in `value` as "<local@domain>", or None when there is none."""
    ids = split_msgids(value)
    return ids[0] if ids else None


def split_msgids(value: str) -> tuple[str, ...]:
    """Every message id in `value`, in order, deduplicated, each as "<local@domain>".

    Ids are case-sensitive and kept as sent. Bare ids without brackets, which some
    clients write, are accepted when the value has no brackets at all.
    """
    value = _valid_text(value)
    candidates = _BRACKETED.findall(value) if "<" in value else re.split(r"[\s,]+", value)
    ids: dict[str, None] = {}  # ordered and deduplicated
    for candidate in candidates:
        token = re.sub(r"\s+", "", candidate)  # folding whitespace inside an id
        if len(token) <= _MAX_MSGID_CHARS and _MSGID.fullmatch(token):
            ids[f"<{token}>"] = None
    return tuple(ids)


# --- body and attachments -----------------------------------------------------------------

_MAX_DEPTH = 32  # deeper MIME nesting is an attack, not mail


@dataclass
class _Parts:
    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    tnef_classes: list[str] = field(default_factory=list)

    @cached_property
    def text(self) -> str:
        """Text/plain preferred; HTML converted only when a message has no plain text at all."""
        if any(p.strip() for p in self.plain):
            text = "\n".join(self.plain)
        else:
            text = "\n".join(html_to_text(h) for h in self.html)
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        return re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "", text).strip()


def _walk_parts(msg: Message) -> _Parts:
    parts = _Parts()
    if _is_leaf(msg) and msg.get_content_maintype() == "text" and not _is_attachment(msg):
        # A single-part message of any text subtype is its own body.
        target = parts.html if msg.get_content_subtype() == "html" else parts.plain
        target.append(_part_text(msg))
    else:
        _collect(msg, 0, True, parts)
    return parts


def _collect(part: Message, depth: int, take_text: bool, parts: _Parts) -> None:
    """Sort the leaves under `part` into bodies and attachments, depth first."""
    if depth > _MAX_DEPTH:
        return
    if not _is_leaf(part):
        children = [p for p in part.get_payload() if isinstance(p, Message)]
        alternative = part.get_content_subtype() == "alternative"
        chosen = _preferred_alternative(children) if alternative else None
        for child in children:
            keep = take_text and (chosen is None or child is chosen)
            _collect(child, depth + 1, keep, parts)
        return
    content_type = part.get_content_type()
    if content_type.startswith("multipart/"):
        recovered = _recover_multipart(part)
        if recovered is not None:
            _collect(recovered, depth + 1, take_text, parts)
        elif take_text:  # raw MIME is better than losing the text
            parts.plain.append(_part_text(part))
    elif content_type in ("text/plain", "text/html") and not _is_attachment(part):
        if take_text:  # the other renderings of a multipart/alternative are not attachments
            target = parts.plain if content_type == "text/plain" else parts.html
            target.append(_part_text(part))
    else:
        parts.attachments.append(_attachment(part))
        if content_type in _TNEF_TYPES:
            parts.tnef_classes += _tnef_classes(part)


# Outlook's winmail.dat: its message class says what the item is (a read receipt, a
# non-delivery report, an out-of-office template), written as plain ASCII inside.
_TNEF_TYPES = ("application/ms-tnef", "application/vnd.ms-tnef")
_TNEF_CLASS = re.compile(rb"(REPORT\.IPM\.[A-Za-z.]{1,40}|IPM\.Note\.Rules\.OofTemplate[A-Za-z.]*)")


def _tnef_classes(part: Message) -> list[str]:
    found = _TNEF_CLASS.search(_payload_bytes(part)[:65536])
    return [found.group(1).decode("ascii")] if found else []


def _recover_multipart(part: Message) -> Message | None:
    """A multipart whose boundary parameter got lost (say, its header line was not indented
    as a continuation): take the boundary from the first delimiter line and parse again."""
    try:
        payload = part.get_payload()
    except Exception:  # get_payload decodes with the charset parameter, whatever it says
        return None
    if not isinstance(payload, str):
        return None
    delimiter = re.search(r"^--([^\s\"]{1,70})\s*$", payload, re.MULTILINE)
    if delimiter is None:
        return None
    head = f'Content-Type: {part.get_content_type()}; boundary="{delimiter.group(1)}"\n\n'
    try:
        recovered = _parse((head + payload).encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:  # surrogates that are not escaped bytes
        return None
    return recovered if recovered.is_multipart() else None


def _is_leaf(part: Message) -> bool:
    """Multiparts recurse; message/* parts, though the parser nests them, are leaves."""
    return part.get_content_maintype() != "multipart" or not part.is_multipart()


def _preferred_alternative(children: list[Message]) -> Message | None:
    """In multipart/alternative, the plain-text rendering if any, else the HTML one."""
    for wanted in ("text/plain", "text/html"):
        for child in children:
            if any(p.get_content_type() == wanted for p in child.walk()):
                return child
    return children[0] if children else None


def _is_attachment(part: Message) -> bool:
    try:
        return part.get_content_disposition() == "attachment"
    except Exception:  # a defective Content-Disposition header
        return False


def _payload_bytes(part: Message) -> bytes:
    """The decoded payload; the parser already tolerates bad base64 and quoted-printable."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:  # a transfer encoding the decoder chokes on
        return b""
    return payload if isinstance(payload, bytes) else b""


def _part_text(part: Message) -> str:
    try:
        charset = part.get_content_charset()
    except Exception:  # a defective Content-Type parameter
        charset = None
    return _decode(_payload_bytes(part), charset)


def _attachment(part: Message) -> Attachment:
    try:
        filename = part.get_filename()
    except Exception:  # defective RFC 2231 parameters
        filename = None
    return Attachment(_clean(filename or "") or None, part.get_content_type(), _part_size(part))


def _part_size(part: Message) -> int:
    if not part.is_multipart():
        return len(_payload_bytes(part))
    try:  # message/rfc822 and message/delivery-status: the encapsulated bytes
        inner = [p for p in part.get_payload() if isinstance(p, Message)]
        return sum(len(p.as_bytes(policy=policy.compat32)) for p in inner)
    except Exception:  # an encapsulated message too broken to serialise
        return 0


# Labels senders get wrong, mapped as the WHATWG Encoding Standard does: to the superset
# mail clients actually use, so "iso-8859-1" text with curly quotes decodes as written.
# "us-ascii" is so often 8-bit in practice that it gets the unlabelled treatment.
_CHARSET_ALIASES = {
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "us-ascii": "",
    "ascii": "",
    "gb2312": "gb18030",
    "ks_c_5601-1987": "cp949",
    "x-sjis": "cp932",
    "iso-8859-8-i": "iso-8859-8",
    "windows-874": "cp874",
}


def _decode(data: bytes, charset: str | None) -> str:
    """Decode body bytes, never raising.

    The declared charset if the bytes fit it, else UTF-8 if they fit that (a common
    mislabelling), else the declared charset with replacement characters. Absent and
    unknown charsets: UTF-8, else cp1252 with replacement characters.
    """
    label = (charset or "").strip().strip("\"'").lower()
    name = _CHARSET_ALIASES.get(label, label)
    attempts = ((name, "strict"), ("utf-8", "strict"), (name, "replace")) if name else ()
    for encoding, errors in attempts or (("utf-8", "strict"),):
        try:
            return data.decode(codecs.lookup(encoding).name, errors)
        except (LookupError, ValueError):  # an unknown or absurd label, bytes that do not fit
            continue
    return data.decode("cp1252", errors="replace")


def html_to_text(html_text: str) -> str:
    """Readable text from HTML: tags gone, entities decoded, links kept, no wrapping."""
    converter = html2text.HTML2Text()
    converter.body_width = 0
    converter.ignore_images = True
    converter.ignore_emphasis = True
    converter.unicode_snob = True
    try:
        text = str(converter.handle(html_text))
    except Exception:  # html2text on pathological markup; plain tag stripping will do
        text = html.unescape(re.sub(r"<[^>]*>", " ", html_text))
    lines = (line.replace("\xa0", " ").rstrip() for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# --- automatic mail (the classifier lives in gateway.parse.automail) ----------------------------


def automatic_reason(
    msg: EmailMessage, envelope_sender: str | None, loop_header: str = "X-Chatops-Loop"
) -> str | None:
    """Why this message was sent by software rather than a person, or None (RFC 3834)."""
    return _automatic(msg, _header_map(msg), _walk_parts(msg), envelope_sender, loop_header)


def _automatic(
    msg: Message, headers: Mapping[str, str], parts: _Parts, sender: str | None, loop: str
) -> str | None:
    evidence = Evidence(
        msg.get_content_type(),
        headers,
        parts.text,
        tuple(a.content_type for a in parts.attachments),
        tuple(parts.tnef_classes),
    )
    return classify(evidence, sender, loop)
