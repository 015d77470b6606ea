"""Authentication-Results headers (RFC 8601) as values: which results a given MTA recorded.

Parsing is done by `authres`, a maintained implementation of the RFC 8601 grammar (quoted
strings, comments, versions, property types), so a `;` inside a quoted local part or a
comment never starts a new result. A header the grammar rejects yields nothing: an
unreadable result is never read as a pass.

Anyone can write an Authentication-Results header, including one that claims another
server's authserv-id; only the topmost header with the authserv-id of an MTA we trust
counts (that MTA adds its own on top and, if it conforms, removes copies claiming its id).
`header_results` answers exactly that question for any authserv-id, so trust decisions based
on a trusted MTA or on a named forwarder use the same reader.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesHeaderParser
from types import MappingProxyType

import authres

# A header longer than this is not something an MTA wrote: it is not parsed at all.
_MAX_HEADER_CHARS = 8_192
# The authserv-id, when the value starts with it (no comment first): read without parsing,
# so that only the header of the MTA asked about is parsed in full (the parser's cost grows
# faster than the length, and every other header is the sender's to make long).
_LEADING_ID = re.compile(r"\s*([^\s;()]+)")


@dataclass(frozen=True)
class AuthResult:
    """One `method=result` with its properties (`"header.from"` → value), all lowercased
    except property values, which keep their case."""

    method: str
    result: str
    properties: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def domain(self, prop: str) -> str:
        """The domain in a property (`header.d`, `header.from`, or the part after the last
        "@" of an address such as `smtp.mailfrom` or `header.i`), lowercased; "" if none."""
        value = self.properties.get(prop, "").strip().strip('"').rstrip(".").lower()
        return value.rpartition("@")[2] if "@" in value else value


@dataclass(frozen=True)
class ParsedHeader:
    """One Authentication-Results header: who wrote it and what it says."""

    authserv_id: str
    results: tuple[AuthResult, ...]


def parse_header(value: str) -> ParsedHeader | None:
    """One header value (without the field name), or None when it is not valid RFC 8601."""
    if len(value) > _MAX_HEADER_CHARS:
        return None
    text = " ".join(value.split())  # unfold
    try:
        parsed = authres.AuthenticationResultsHeader.parse_value(text)
    except Exception:  # authres.AuthResError and anything its parser trips over
        return None
    authserv_id = str(parsed.authserv_id or "").lower()
    if not authserv_id:
        return None
    results = tuple(_result(r) for r in parsed.results)
    return ParsedHeader(authserv_id, results)


def _result(result: authres.core.AuthenticationResult) -> AuthResult:
    props = {
        f"{p.type}.{p.name}".lower(): str(p.value).strip('"')
        for p in result.properties
        if p.type and p.name and p.value is not None
    }
    method = str(result.method).split("/")[0].lower()  # "dkim/1": a method version
    return AuthResult(method, str(result.result).lower(), MappingProxyType(props))


def header_results(headers: Sequence[str], authserv_id: str) -> tuple[AuthResult, ...] | None:
    """The results of the topmost header whose authserv-id is `authserv_id` (case-insensitive),
    or None when there is none. Headers are given topmost first; unreadable ones are skipped
    (they cannot be told apart from a forgery), and so is everything below the first match."""
    wanted = authserv_id.lower()
    for value in headers:
        leading = _LEADING_ID.match(value)
        if leading is not None and leading.group(1).lower() != wanted:
            continue  # another server's header (or a forgery): not parsed at all
        parsed = parse_header(value)
        if parsed is not None and parsed.authserv_id == wanted:
            return parsed.results
    return None


def authentication_headers(raw: bytes) -> list[str]:
    """Every Authentication-Results header value of a raw message, topmost first."""
    try:
        msg = BytesHeaderParser(policy=policy.compat32).parsebytes(raw)
        return [str(v) for v in msg.get_all("Authentication-Results") or []]
    except Exception:  # malformed headers: there is simply nothing to trust
        return []
