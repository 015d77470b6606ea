"""Rendering the emails the gateway sends reporters: plain English, threaded, marked automatic.

Pure: values in, RFC 5322 bytes out. Every header value that came from input is cleaned of
CR/LF and control characters first, so a hostile subject can never add a header.

The message is written directly rather than through `email.message.EmailMessage`: the
header registry of the modern policy cost more than the rest of processing a report. The
output is what that policy produced: unstructured text as RFC 2047 encoded words where it
is not ASCII (`email.header.Header`), display names quoted or encoded by
`email.utils.formataddr`, lines folded at 78 characters, a UTF-8 text/plain body in 7bit,
8bit only when every line fits in 78 characters, else quoted-printable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email import charset as _charset
from email.header import Header
from email.utils import format_datetime, formataddr
from typing import Any
from zoneinfo import ZoneInfo

from gateway.plan.tokens import ThreadSigner
from rules.engine import promise_minute

LOOP_HEADER = "X-Chatops-Loop"
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]+")
_REPLY_PREFIX = re.compile(r"^\s*((re|fw|fwd|aw|sv|antw)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)
_TAG = re.compile(r"\s*\[INC-\d+\]\s*", re.IGNORECASE)


def one_line(value: str, limit: int = 200) -> str:
    """Fold CR/LF and control characters to spaces and trim: safe for any header."""
    return _CONTROL.sub(" ", value).strip()[:limit]


def base_subject(subject: str) -> str:
    """The subject without Re:/Fwd: prefixes and our [INC-n] tag."""
    return _TAG.sub(" ", _REPLY_PREFIX.sub("", one_line(subject, 500))).strip()


@dataclass(frozen=True)
class Sender:
    """Who our mail comes from, and the domain our Message-IDs use."""

    address: str
    name: str
    msgid_domain: str
    loop_token: str
    signer: ThreadSigner | None = None  # signs our Message-IDs (gateway.plan.tokens)

    def message_id(self, incident_id: int, label: str) -> str:
        """A Message-ID for mail about an incident: signed, so replies to it can be trusted."""
        if self.signer is not None:
            return self.signer.message_id(incident_id, label)
        return f"<inc-{incident_id}.{label}@{self.msgid_domain}>"  # never attaches a reply


@dataclass(frozen=True)
class Outgoing:
    """A rendered message and the identifiers the store needs."""

    message_id: str
    mail_from: str
    rcpt_to: str
    data: bytes


def local_time(when: datetime, tz: str) -> str:
    """'14:40 on Monday 24 November' in the team's time zone. Every time we print this way is
    a promise, so it is rounded up to the minute: never earlier than the clock it states."""
    local = promise_minute(when).astimezone(ZoneInfo(tz))
    return f"{local:%H:%M} on {local:%A} {local.day} {local:%B}"


def zone_name(tz: str) -> str:
    """How messages name the rulebook's time zone: "UK time" for Europe/London, else the zone
    itself ("Europe/Berlin", "UTC")."""
    return "UK time" if tz in ("Europe/London", "GB", "GB-Eire") else tz


def priority_line(priority: str, name: str, meaning: str) -> str:
    """'Priority: P1, a critical incident: your live service is down.' The rulebook's meaning
    usually names the level itself ("a critical incident: ..."); then the name is not said
    twice. Otherwise: 'Priority: P1 (Critical incident): <meaning>.'"""
    text = meaning.strip().rstrip(".")
    first = text.split(maxsplit=1)[0].lower().rstrip(":,;") if text else ""
    names_itself = first in ("a", "an", "the") or first == name.split(maxsplit=1)[0].lower()
    if names_itself:
        return f"Priority: {priority}, {text}."
    return f"Priority: {priority} ({name}): {text}." if text else f"Priority: {priority} ({name})."


def render(
    *,
    sender: Sender,
    to: str,
    subject: str,
    body: str,
    message_id: str,
    in_reply_to: str | None,
    references: Sequence[str],
    now: datetime,
    automatic: bool = True,
) -> Outgoing:
    """Build one threaded reply to exactly one recipient, marked automatic unless a person
    wrote it (`automatic=False`: an engineer's update or resolution)."""
    local, _, domain = sender.address.partition("@")
    to_local, _, to_domain = one_line(to, 254).partition("@")
    headers = [
        ("From", formataddr((one_line(sender.name, 80), f"{local}@{domain}"), "utf-8")),
        ("To", f"{to_local}@{to_domain}"),
        ("Subject", _unstructured("Subject", one_line(subject, 250))),
        ("Date", format_datetime(now)),
        ("Message-ID", one_line(message_id, 998)),
    ]
    parent = one_line(in_reply_to or "", 998)
    if parent and _fits(parent):
        headers.append(("In-Reply-To", parent))
    refs = trim_references([one_line(r, 998) for r in references if r])
    if refs:
        headers.append(("References", _fold_words("References", refs)))
    # RFC 3834: what software writes (acknowledgements, holding replies, notices) says so,
    # and nobody should answer it automatically. An engineer's own words are not
    # auto-submitted (some tenant systems discard auto-submitted mail), but keep everything
    # else that stops loops: no auto-responses please, our loop header, our signed ids.
    if automatic:
        headers.append(("Auto-Submitted", "auto-replied"))
    headers += [
        ("X-Auto-Response-Suppress", "All"),
        (LOOP_HEADER, one_line(sender.loop_token, 200)),
    ]
    cte, payload = _body(body)
    headers += [
        ("Content-Type", 'text/plain; charset="utf-8"'),
        ("Content-Transfer-Encoding", cte),
        ("MIME-Version", "1.0"),
    ]
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    # Only message ids and addresses from input can be non-ASCII here (RFC 6532 allows it).
    data = head.encode("utf-8", "surrogateescape") + b"\r\n" + payload
    return Outgoing(message_id, sender.address, f"{to_local}@{to_domain}", data)


_MAX_LINE = 78
# RFC 5322 §2.1.1: a line is at most 998 octets. In-Reply-To and References hold message
# ids we echo from the sender, who can make them as long as they like.
_MAX_HEADER_BYTES = 998
_MAX_ID_BYTES = 250  # longer is not a message id any mail reader needs to thread on


def _fits(msgid: str) -> bool:
    return len(msgid.encode("utf-8", "surrogateescape")) <= _MAX_ID_BYTES


def trim_references(ids: Sequence[str]) -> list[str]:
    """The References to send: at most 998 octets in all (with "References: "), keeping the
    first id (the thread's root) and as many of the latest as fit, dropping the middle as
    mail readers do (RFC 5322 §3.6.4 practice); ids too long to be real are left out."""
    usable = [i for i in ids if _fits(i)]
    if not usable:
        return []
    budget = _MAX_HEADER_BYTES - len("References: ")
    first, rest = usable[0], usable[1:]
    size = len(first.encode("utf-8", "surrogateescape"))
    latest: list[str] = []
    for msgid in reversed(rest):
        cost = 1 + len(msgid.encode("utf-8", "surrogateescape"))
        if size + cost > budget:
            break
        latest.append(msgid)
        size += cost
    return [first, *reversed(latest)]


def _unstructured(name: str, value: str) -> str:
    """Folded at spaces; RFC 2047 encoded words (UTF-8) when not plain ASCII, or when the
    text itself looks like an encoded word (so a reader shows it as written)."""
    if value.isascii() and "=?" not in value:
        return _fold_words(name, value.split(" "))
    return Header(value, "utf-8", header_name=name).encode(linesep="\r\n")


def _fold_words(name: str, words: Sequence[str]) -> str:
    """Words joined by spaces, folded before a space so that lines stay within 78
    characters where the words allow it (unfolding gives back the exact text)."""
    lines: list[str] = []
    line: str | None = None
    width = len(name) + 2
    for word in words:
        if line is None:
            line = word
        elif width + len(line) + 1 + len(word) > _MAX_LINE and line.strip():
            lines.append(line)
            line, width = " " + word, 0  # the space that was there starts the next line
        else:
            line = f"{line} {word}"
    lines.append(line or "")
    return "\r\n".join(lines)


def _body(text: str) -> tuple[str, bytes]:
    """The transfer encoding and the encoded body, CRLF line ends, ending in one."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    raw = [line.encode("utf-8", "surrogateescape") for line in lines]
    if all(len(line) <= _MAX_LINE for line in raw):
        cte = "7bit" if all(line.isascii() for line in raw) else "8bit"
        return cte, b"".join(line + b"\r\n" for line in raw)
    encoded = _charset.Charset("utf-8")
    encoded.body_encoding = _charset.QP
    return "quoted-printable", (encoded.body_encode("\n".join(lines) + "\n") or "").replace(
        "\n", "\r\n"
    ).encode("ascii")


def delivered_text(purpose: str, rcpt_to: str, result: Mapping[str, Any]) -> str:
    """The timeline line for a delivered reply, true to how it left: handed to the relay, or
    (folder mode, where the mail sender returns the file's `path`) only written as a file."""
    if "path" in result:
        return (
            f"{purpose.capitalize()} to {rcpt_to} written to the outgoing-mail folder "
            "(not sent by the gateway)"
        )
    return f"{purpose.capitalize()} emailed to {rcpt_to}"


def ack_subject(ref: str, subject: str) -> str:
    """'Re: [INC-42] Site is down'."""
    return f"Re: [{ref}] {base_subject(subject) or 'Your report'}"


def ack_body(
    *,
    ref: str,
    title: str,
    priority: str,
    priority_name: str,
    meaning: str,
    paged: bool,
    in_hours: bool,
    respond_by: datetime | None,
    next_update_by: datetime | None,
    tz: str,
    hours_text: str,
    signature: str,
) -> str:
    """The acknowledgement: reference, priority and what it means, paging, when they hear back."""
    lines = [
        "Hello,",
        "",
        f"Thank you for your report. We have logged it as {ref}: {title}",
        "",
        priority_line(priority, priority_name, meaning),
        "",
    ]
    if paged:
        lines.append("We have paged the on-call engineer.")
    zone = zone_name(tz)
    if respond_by is not None:
        when = local_time(respond_by, tz)
        if in_hours or paged:
            lines.append(f"An engineer will respond by {when} ({zone}).")
        else:
            lines.append(
                f"It is outside our support hours ({hours_text}), and this priority is not "
                f"covered out of hours, so work on it will start in the next support period. "
                f"You will hear from us by {when} ({zone})."
            )
    if next_update_by is not None:
        lines.append(f"We will send you an update by {local_time(next_update_by, tz)} ({zone}).")
    lines += [
        "",
        f"To add information, reply to this email and keep [{ref}] in the subject.",
        "",
        signature,
    ]
    return "\n".join(lines) + "\n"
