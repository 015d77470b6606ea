"""DKIM verification of inbound mail (RFC 6376), for when no trusted MTA is in front.

Uses dkimpy. The DNS lookup is injectable (`lookup(name) -> TXT record bytes or None`):
tests use a key they generate; the daemon uses dkimpy's own resolver (dnspython), which
blocks, so this runs on the worker thread with the rest of the per-message CPU work.

A valid signature proves only what it covers: it vouches for a message only when it covers
every From and Subject header and the whole body (`gateway.parse.signed_headers`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import dkim

from gateway.parse.signed_headers import uncovered

Lookup = Callable[[bytes], bytes | None]
_MAX_SIGNATURES = 4  # a message may carry several; more is abuse


@dataclass(frozen=True)
class DkimResult:
    """The domain (d=) of a valid signature that covers what the gateway decides on, or
    None, with the reason why not (for the timeline)."""

    domain: str | None
    problem: str = ""


def dkim_verifier(lookup: Lookup | None = None) -> Callable[[bytes], DkimResult]:
    """A function: raw message -> the `DkimResult` of its first covering valid signature."""

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        if lookup is None:
            raise RuntimeError("lookup is set here")
        return lookup(name)

    def verify(raw: bytes) -> DkimResult:
        problem = "no valid DKIM signature"
        try:
            checker = dkim.DKIM(raw, minkey=1024)
            count = len([h for h in checker.headers if h[0].lower() == b"dkim-signature"])
            for index in range(min(count, _MAX_SIGNATURES)):
                ok = (
                    checker.verify(index, dnsfunc=dnsfunc)
                    if lookup is not None
                    else checker.verify(index)
                )
                if not ok or not checker.domain:
                    continue
                domain = bytes(checker.domain).decode("ascii", "replace").lower()
                uncovered = _uncovered(checker)
                if uncovered is None:
                    return DkimResult(domain)
                problem = f"the DKIM signature of {domain} does not cover {uncovered}"
        except Exception:  # dkimpy raises on malformed signatures and DNS errors: not valid
            return DkimResult(None, problem)
        return DkimResult(None, problem)

    return verify


def _uncovered(checker: dkim.DKIM) -> str | None:
    """What a verified signature leaves unsigned that the gateway relies on, or None."""
    tags = {
        bytes(k).decode("ascii", "replace").lower(): bytes(v).decode("ascii", "replace")
        for k, v in checker.signature_fields.items()
    }
    names = [bytes(name).decode("ascii", "replace") for name, _value in checker.headers]
    return uncovered(tags, names)
