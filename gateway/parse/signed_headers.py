"""Does a DKIM signature vouch for the headers the gateway decides on?

A valid DKIM signature (RFC 6376) covers the header fields listed in its `h=` tag, each
listing taking the next instance of that name from the bottom of the header up, and the
body up to its `l=` length if it has one. Mail can therefore be replayed with a field added
above the signed ones (a second Subject, which mail readers and the gateway show) or text
appended past `l=`, and still verify. The gateway decides on the From and the Subject, so a
signature vouches for a message only when it lists each of them at least as often as the
message has them, and has no `l=`.

Pure: works on the signature's tags and the message's header names, for both the gateway's
own DKIM check (`gateway.parse.dkim_check`) and a trusted MTA's DKIM pass (`gateway.plan.trust`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from email import policy
from email.parser import BytesHeaderParser

DECISION_HEADERS = ("from", "subject")
_FWS = re.compile(r"\s+")


def uncovered(tags: Mapping[str, str], header_names: Sequence[str]) -> str | None:
    """What a signature (its tags) leaves unsigned that the gateway relies on, or None."""
    if "l" in tags:
        return "the whole body (it has a body length, l=)"
    listed = [h.strip().lower() for h in tags.get("h", "").split(":")]
    present = [name.lower() for name in header_names]
    for name in DECISION_HEADERS:
        if present.count(name) > listed.count(name):
            return f"every {name.title()} header"
    return None


def signature_tags(value: str) -> dict[str, str]:
    """The tags of one DKIM-Signature value (`d`, `h`, `b`, …), whitespace removed."""
    tags: dict[str, str] = {}
    for part in value.split(";"):
        name, sep, tag_value = part.partition("=")
        if sep and name.strip():
            tags.setdefault(name.strip().lower(), _FWS.sub("", tag_value))
    return tags


def signatures(raw: bytes) -> tuple[list[dict[str, str]], list[str]]:
    """(the tags of every DKIM-Signature, the names of every header field, in order)."""
    try:
        msg = BytesHeaderParser(policy=policy.compat32).parsebytes(raw)
    except Exception:  # malformed headers: nothing can be said to be signed
        return [], []
    names = [str(name) for name in msg]
    values = [str(v) for v in msg.get_all("DKIM-Signature") or []]
    return [signature_tags(v) for v in values], names
