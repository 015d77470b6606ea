"""Header fields of inbound mail: decoded, folded to one line, and message ids normalised.

Owns turning raw header values (RFC 2047 encoded words, RFC 6532 UTF-8, raw 8-bit bytes)
into clean one-line text, the first address of an address header, the Date, and the
message-id lists threading keys on. Never raises: each field degrades on its own. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.headerregistry import AddressHeader
from email.message import Message
from email.utils import parsedate_to_datetime
from types import MappingProxyType

from gateway.parse.automail import safe_parseaddr
from gateway.parse.charsets import decode_text

__all__ = [
    "bare_address",
    "clean",
    "first_address",
    "header_date",
    "header_map",
    "normalise_msgid",
    "split_msgids",
    "valid_text",
]


_FOLD = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
# The policy's header parser is quadratic on some inputs (long runs of quotes, thousands
# of encoded words), so longer values skip it: one absurd mail must not stall the worker.
_MAX_PARSE_CHARS = 4096
_MAX_DECODE_CHARS = 65536


def clean(value: str) -> str:
    """One line of valid text: control characters and line breaks folded to single spaces.

    This is also what stops header injection: an encoded "=0D=0A" in a subject must not
    survive as a line break when the subject is echoed into an outgoing message.
    """
    return _FOLD.sub(" ", valid_text(value)).strip()


def valid_text(value: str) -> str:
    """Re-decode the lone surrogates the parser uses for raw 8-bit header bytes."""
    if not _SURROGATE.search(value):
        return value
    try:
        return decode_text(value.encode("utf-8", "surrogateescape"), None)
    except UnicodeEncodeError:  # surrogates that are not escaped bytes
        return value.encode("utf-8", "replace").decode()


def header_map(msg: Message) -> Mapping[str, str]:
    """Lowercased name -> first value, decoded; one pass, so absurd header counts stay linear."""
    found: dict[str, str] = {}
    # raw_items is the only way to see each value before policy parsing, which can raise.
    for name, raw in msg.raw_items():
        key = clean(str(name)).lower()
        if key and key not in found:
            found[key] = decode_header_value(key, str(raw))
    return MappingProxyType(found)


def decode_header_value(name: str, raw: str) -> str:
    """Decode one header value (RFC 2047, RFC 6532 or raw 8-bit), never raising.

    Address headers with encoded words come back re-quoted ('"Smith, John" <j@x>')
    so that they parse again.
    """
    text = valid_text(raw)
    try:
        if "=?" in text and len(text) <= _MAX_PARSE_CHARS:
            text = str(policy.default.header_fetch_parse(name, text))
        elif "=?" in text and len(text) <= _MAX_DECODE_CHARS:
            text = str(make_header(decode_header(text)))
    except Exception:  # defective structured headers, unknown charsets in encoded words
        return clean(text)
    return clean(text)


def first_address(headers: Mapping[str, str], name: str) -> tuple[str, str] | None:
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
        return bare_address(first.addr_spec), clean(first.display_name)
    display, addr = safe_parseaddr(value)
    return bare_address(addr), clean(display)


_ADDRESS = re.compile(r"[^\s<>(),;:\"\[\]@]+(?:@[^\s<>(),;:\"\[\]@]+)?")


def bare_address(addr_spec: str) -> str:
    """The address lowercased, or "" when it is not one (a bare local part is kept)."""
    addr = clean(addr_spec).lower()
    return addr if _ADDRESS.fullmatch(addr) else ""


def header_date(headers: Mapping[str, str]) -> datetime | None:
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
    value = valid_text(value)
    candidates = _BRACKETED.findall(value) if "<" in value else re.split(r"[\s,]+", value)
    ids: dict[str, None] = {}  # ordered and deduplicated
    for candidate in candidates:
        token = re.sub(r"\s+", "", candidate)  # folding whitespace inside an id
        if len(token) <= _MAX_MSGID_CHARS and _MSGID.fullmatch(token):
            ids[f"<{token}>"] = None
    return tuple(ids)
