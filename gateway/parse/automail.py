"""Telling mail sent by software from mail sent by people (RFC 3834 and real-world practice).

Owns the classifier: auto-replies and vacation notices, bounces and delivery reports, list
traffic, mail from system senders, and our own loop header. Pure: the parsed message's
`Evidence` in, a reason (or None) out; `gateway.parse.mail` gathers the evidence.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parseaddr

__all__ = ["Evidence", "classify", "safe_parseaddr"]

_MAX_PARSE_CHARS = 4096


def safe_parseaddr(value: str) -> tuple[str, str]:
    """email.utils.parseaddr, which recurses on nested comments, made total."""
    try:
        return parseaddr(value[:_MAX_PARSE_CHARS])
    except Exception:  # RecursionError on "((((...", and whatever else garbage finds
        return "", ""


_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})
_AUTOREPLY_HEADERS = ("x-autoreply", "x-autorespond", "x-auto-reply-from", "x-mail-autoreply")
# List managers that predate RFC 2369 List-* headers (ezmlm, fml, SmartList).
_LIST_HEADERS = ("mailing-list", "x-mailing-list", "x-mlserver", "x-ml-name")
_STATUS_TYPES = (
    "message/delivery-status",
    "message/global-delivery-status",
    "message/disposition-notification",
    "message/feedback-report",
)
_REPORT_TYPE = re.compile(r"report-type\s*=\s*\"?([\w.-]+)", re.IGNORECASE)
# System senders, compared with "-", "_" and "." removed so "post_master" counts too.
_DAEMONS = frozenset({"mailerdaemon", "postmaster", "maildaemon"})
# Last resort, for software that sets none of the headers above: the subjects of common
# MTA bounces (Exchange, Postfix, Exim and DragonFly, sendmail, qmail), vacation replies
# (Exchange in English, French, German; Apple) and Microsoft JMRP complaints. Anchored,
# mostly with their colon, so a person's "Re: out of office?" does not match. A bounce
# someone forwarded counts: it reports a delivery problem, it is not a new incident.
_AUTO_SUBJECT = re.compile(
    r"^(?:fwd?\s*:\s*)*(?:undeliverable\s*:|undelivered mail returned to sender"
    r"|delivery status notification|mail delivery failed|returned mail\s*:|failure notice$"
    r"|out of office(?: autoreply)?\s*:|automatic reply\s*:|auto[- ]?reply\s*:"
    r"|r[ée]ponse automatique\s*:|abwesenheitsnotiz\s*:|automatische antwort\s*:"
    r"|complaint about message from)",
    re.IGNORECASE,
)
# Amazon SES bounce, complaint and delivery notifications relayed by SNS, as JSON.
_SES_NOTIFICATION = re.compile(
    r'\\?"(?:notification|event)Type\\?"\s*:\s*\\?"(?:Bounce|Complaint|Delivery)\\?"'
)
_FAILURE_TEXT = re.compile(
    r"could not be delivered|undeliverable|delivery (?:has )?failed|permanent fatal error",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Evidence:
    """What the classifier looks at: the parsed message's type, headers, text and parts."""

    content_type: str
    headers: Mapping[str, str]
    text: str
    attachment_types: tuple[str, ...]


def classify(evidence: Evidence, envelope_sender: str | None,
             loop_header: str = "X-Chatops-Loop") -> str | None:
    """Why this message was sent by software rather than a person, or None (RFC 3834)."""
    headers = evidence.headers
    return (
        _header_reason(headers, loop_header)
        or _report_reason(evidence)
        or _sender_reason(headers, envelope_sender)
        or _content_reason(headers.get("subject", ""), evidence)
    )


def _header_reason(headers: Mapping[str, str], loop_header: str) -> str | None:
    """The headers RFC 3834, Microsoft, vacation programs and list managers set."""
    submitted = _first_word(headers.get("auto-submitted", "no")) or "present"
    suppress = _first_word(headers.get("x-auto-response-suppress", "none"))
    precedence = _first_word(headers.get("precedence", ""))
    autoreply = next((name for name in _AUTOREPLY_HEADERS if name in headers), "")
    list_header = next((n for n in headers if n.startswith("list-") or n in _LIST_HEADERS), "")
    checks = (
        (loop_header.lower() in headers, "our own loop header"),
        (submitted != "no", f"Auto-Submitted: {submitted}"),
        ("x-failed-recipients" in headers, "X-Failed-Recipients"),
        (bool(autoreply), _title(autoreply)),
        (suppress not in ("", "none"), "X-Auto-Response-Suppress"),
        (precedence in _PRECEDENCE, f"Precedence: {precedence}"),
        (bool(list_header), f"{_title(list_header)} header"),
    )
    return next((reason for hit, reason in checks if hit), None)


def _report_reason(evidence: Evidence) -> str | None:
    """Delivery status notifications, read receipts and abuse reports (RFC 6522, 5965)."""
    content_type = evidence.content_type
    if content_type == "multipart/report":
        found = _REPORT_TYPE.search(evidence.headers.get("content-type", ""))
        report_type = found.group(1).lower() if found else "untyped"
        return f"delivery status notification ({content_type}; {report_type})"
    if content_type in _STATUS_TYPES:
        return f"delivery status notification ({content_type})"
    # Some gateways wrap a genuine status part in multipart/mixed; people never write one.
    status = next((t for t in evidence.attachment_types if t in _STATUS_TYPES), "")
    return f"delivery status part ({status})" if status else None


def _sender_reason(headers: Mapping[str, str], envelope_sender: str | None) -> str | None:
    """Null reverse-path, or a mail system or list manager sender, as vacation(1) checks.

    Without an envelope (a file read from disk) the Return-Path header stands in for it.
    """
    if envelope_sender is None and "return-path" in headers:
        envelope_sender = safe_parseaddr(headers["return-path"])[1] or headers["return-path"]
    if envelope_sender is not None and not envelope_sender.strip().strip("<>").strip():
        return "null return path"
    if re.search(r"<\s*>", headers.get("from", "")):  # "MAILER-DAEMON <>": only bounces
        return "null From address"
    for source, value in (("envelope", envelope_sender), ("From", headers.get("from"))):
        local = (safe_parseaddr(value)[1] if value else "").split("@")[0].lower()
        if re.sub(r"[-_.]", "", local) in _DAEMONS:
            return f"sender is {local.upper()} ({source})"
        if local.startswith("owner-") or local.endswith("-request"):
            return f"sender is a list manager ({source})"
    return None


def _content_reason(subject: str, evidence: Evidence) -> str | None:
    """Last resort: what bounces and reports say, for software that says nothing else."""
    if _AUTO_SUBJECT.match(subject):
        return f"automatic subject: {subject[:60]}"
    if _SES_NOTIFICATION.search(evidence.text[:10000]):
        return "Amazon SES notification"
    returned = {"message/rfc822", "text/rfc822-headers"} & set(evidence.attachment_types)
    if returned and _FAILURE_TEXT.search(evidence.text[:4000]):
        return "returned message with a delivery failure notice"
    return None


def _first_word(value: str) -> str:
    """The keyword of a header like "auto-generated (postmaster-notification)", lowercased."""
    return re.split(r"[\s;,(]+", value.strip().lower(), maxsplit=1)[0]


def _title(header_name: str) -> str:
    return "-".join(word.capitalize() for word in header_name.split("-"))
