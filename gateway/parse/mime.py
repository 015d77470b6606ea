"""The MIME tree of inbound mail: which parts are the body and which are attachments.

Owns walking a parsed message (depth-limited, tolerant of lost boundaries and broken
parameters), choosing the plain-text rendering of an alternative, converting HTML when a
message has no plain text, listing attachments, and reading Outlook TNEF message classes
for the automatic-mail classifier. Pure.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from email import policy
from email.message import Message
from email.parser import BytesParser
from functools import cached_property

import html2text

from gateway.parse.charsets import decode_text
from gateway.parse.mail_headers import clean

__all__ = ["Attachment", "Parts", "html_to_text", "parse_bytes", "walk_parts"]


@dataclass(frozen=True)
class Attachment:
    """A non-body part, listed but not parsed."""

    filename: str | None
    content_type: str
    size: int  # decoded payload bytes


def parse_bytes(raw: bytes) -> Message:
    """The message tree of `raw`, headers kept as plain strings."""
    # compat32 keeps headers as plain strings: the modern policy parses every header of
    # every part as it goes (a quarter of a millisecond per Content-Type), which made a
    # mail with thousands of parts take seconds. The fields decode what they use.
    return BytesParser(policy=policy.compat32).parsebytes(raw)


_MAX_DEPTH = 32  # deeper MIME nesting is an attack, not mail


@dataclass
class Parts:
    """The leaves of one message, sorted into body renderings and attachments."""

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


def walk_parts(msg: Message) -> Parts:
    parts = Parts()
    if _is_leaf(msg) and msg.get_content_maintype() == "text" and not _is_attachment(msg):
        # A single-part message of any text subtype is its own body.
        target = parts.html if msg.get_content_subtype() == "html" else parts.plain
        target.append(_part_text(msg))
    else:
        _collect(msg, 0, True, parts)
    return parts


def _collect(part: Message, depth: int, take_text: bool, parts: Parts) -> None:
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
        recovered = parse_bytes((head + payload).encode("utf-8", "surrogateescape"))
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
    return decode_text(_payload_bytes(part), charset)


def _attachment(part: Message) -> Attachment:
    try:
        filename = part.get_filename()
    except Exception:  # defective RFC 2231 parameters
        filename = None
    return Attachment(clean(filename or "") or None, part.get_content_type(), _part_size(part))


def _part_size(part: Message) -> int:
    if not part.is_multipart():
        return len(_payload_bytes(part))
    try:  # message/rfc822 and message/delivery-status: the encapsulated bytes
        inner = [p for p in part.get_payload() if isinstance(p, Message)]
        return sum(len(p.as_bytes(policy=policy.compat32)) for p in inner)
    except Exception:  # an encapsulated message too broken to serialise
        return 0


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
