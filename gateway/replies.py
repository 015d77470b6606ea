"""Rendering the emails the gateway sends reporters: plain English, threaded, marked automatic.

Pure: values in, RFC 5322 bytes out. Every header value that came from input is cleaned of
CR/LF and control characters first, so a hostile subject can never add a header.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from zoneinfo import ZoneInfo

from gateway.tokens import ThreadSigner

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
    signer: ThreadSigner | None = None  # signs our Message-IDs (gateway.tokens)

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
    """'14:40 on Monday 24 November' in the team's time zone."""
    local = when.astimezone(ZoneInfo(tz))
    return f"{local:%H:%M} on {local:%A} {local.day} {local:%B}"


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
) -> Outgoing:
    """Build one threaded, automatic-marked reply to exactly one recipient."""
    msg = EmailMessage(policy=policy.SMTP)
    local, _, domain = sender.address.partition("@")
    msg["From"] = Address(display_name=one_line(sender.name, 80), username=local, domain=domain)
    to_local, _, to_domain = one_line(to, 254).partition("@")
    msg["To"] = Address(username=to_local, domain=to_domain)
    msg["Subject"] = one_line(subject, 250)
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = one_line(in_reply_to, 998)
    refs = [one_line(r, 998) for r in references if r][-20:]
    if refs:
        msg["References"] = " ".join(refs)
    # RFC 3834: we answer automatically, and nobody should answer us automatically.
    msg["Auto-Submitted"] = "auto-replied"
    msg["X-Auto-Response-Suppress"] = "All"
    msg[LOOP_HEADER] = sender.loop_token
    msg.set_content(body)
    return Outgoing(message_id, sender.address, f"{to_local}@{to_domain}", msg.as_bytes())


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
        f"Priority: {priority} ({priority_name}). {meaning}",
        "",
    ]
    if paged:
        lines.append("We have paged the on-call engineer.")
    if respond_by is not None:
        when = local_time(respond_by, tz)
        if in_hours or paged:
            lines.append(f"An engineer will respond by {when} (UK time).")
        else:
            lines.append(
                f"It is outside our support hours ({hours_text}), and this priority is not "
                f"covered out of hours, so work on it will start in the next support period. "
                f"You will hear from us by {when} (UK time)."
            )
    if next_update_by is not None:
        lines.append(f"We will send you an update by {local_time(next_update_by, tz)}.")
    lines += [
        "",
        f"To add information, reply to this email and keep [{ref}] in the subject.",
        "",
        signature,
    ]
    return "\n".join(lines) + "\n"
