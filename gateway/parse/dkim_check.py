"""DKIM verification of inbound mail (RFC 6376), for when no trusted MTA is in front.

Uses dkimpy. The DNS lookup is injectable (`lookup(name) -> TXT record bytes or None`):
tests use a key they generate; the daemon uses dkimpy's own resolver (dnspython), which
blocks, so this runs on the worker thread with the rest of the per-message CPU work.
"""

from __future__ import annotations

from collections.abc import Callable

import dkim

Lookup = Callable[[bytes], bytes | None]
_MAX_SIGNATURES = 4  # a message may carry several; more is abuse


def dkim_verifier(lookup: Lookup | None = None) -> Callable[[bytes], str | None]:
    """A function: raw message -> the domain (d=) of the first valid signature, or None."""

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        if lookup is None:
            raise RuntimeError("lookup is set here")
        return lookup(name)

    def verify(raw: bytes) -> str | None:
        try:
            checker = dkim.DKIM(raw, minkey=1024)
            count = len([h for h in checker.headers if h[0].lower() == b"dkim-signature"])
            for index in range(min(count, _MAX_SIGNATURES)):
                ok = (checker.verify(index, dnsfunc=dnsfunc) if lookup is not None
                      else checker.verify(index))
                if ok and checker.domain:
                    return bytes(checker.domain).decode("ascii", "replace").lower()
        except Exception:  # dkimpy raises on malformed signatures and DNS errors: not valid
            return None
        return None

    return verify
