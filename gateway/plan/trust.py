"""Sender trust: may a report page on its own, or must an engineer confirm it first?

Two questions, both answered from values, with reasons:

- **Is the sender authentic?** Read from the `Authentication-Results` header (RFC 8601,
  parsed by `gateway.parse.auth_results`) that the configured trusted MTA added — only the
  topmost one whose authserv-id is that MTA's; any other is ignored, because a sender can
  write whatever headers they like. A DMARC pass for our From domain, or a DKIM or SPF pass
  aligned with it (same organisational domain, `gateway.plan.orgdomain`), makes the sender
  authentic. Without a trusted MTA, an optional DKIM check (`gateway.parse.dkim_check`) can
  answer instead, with a signature that covers every From and Subject header; with
  neither, authenticity is not checked (None) and the allow-list alone decides. Mail with
  two From headers (or, when checked, two Subjects) is never authentic.
- **Is the sender known?** The tenant allow-list: exact addresses, exact domains (the
  domain of an email address, or the server the chat adapter says authenticated a chat
  user), or `allow_all`.

A trusted sender is known and not shown to be inauthentic. Anyone else never pages alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email import policy
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import TYPE_CHECKING

from gateway.parse.auth_results import (
    AuthResult,
    authentication_headers,
    header_results,
    parse_header,
)
from gateway.parse.signed_headers import signatures, uncovered
from gateway.plan.orgdomain import aligned

if TYPE_CHECKING:  # dkimpy is imported only where DKIM checking is configured
    from gateway.parse.dkim_check import DkimResult

UNVERIFIED_FLAG = "unverified sender"
MethodResult = AuthResult  # the name earlier callers used


@dataclass(frozen=True)
class TrustPolicy:
    """Who is trusted: the MTA whose results count, and the tenant allow-list."""

    authserv_id: str | None = None
    allow_domains: frozenset[str] = frozenset()
    allow_addresses: frozenset[str] = frozenset()
    allow_all: bool = False
    dkim: Callable[[bytes], DkimResult] | None = None  # raw -> covering valid signature
    # (raw, author) -> (authentic, why) when the mail came through a group or forwarder
    # (gateway.plan.forwarder); None: judge it as direct mail
    forwarded: Callable[[bytes, str], tuple[bool, str] | None] | None = None


@dataclass(frozen=True)
class Verdict:
    """May this sender page on its own (`trusted`), and why (or why not)."""

    trusted: bool
    authentic: bool | None  # None: not checked (no trusted MTA, no DKIM check)
    known: bool
    reasons: tuple[str, ...]


def parse_authentication_results(value: str) -> tuple[str, list[AuthResult]]:
    """(authserv-id, results) of one Authentication-Results header value (RFC 8601);
    ("", []) when the value is not valid RFC 8601."""
    parsed = parse_header(value)
    return ("", []) if parsed is None else (parsed.authserv_id, list(parsed.results))


def trusted_results(headers: Sequence[str], authserv_id: str) -> list[AuthResult] | None:
    """The results in the topmost header from our trusted MTA, or None if it added none."""
    found = header_results(headers, authserv_id)
    return None if found is None else list(found)


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".") if "@" in address else ""


def authentic_from_results(results: Sequence[AuthResult], from_domain: str) -> tuple[bool, str]:
    """Whether the results show the From domain is genuine, and the reason.

    DMARC counts only with a `header.from` that is our From domain: a pass without one, or
    for another domain, judged some other From. DKIM and SPF count when their domain has
    the From domain's organisational domain (relaxed alignment, RFC 7489)."""
    from_domain = from_domain.lower().rstrip(".")
    for r in results:
        if r.method != "dmarc":
            continue
        if r.result == "pass" and from_domain and r.domain("header.from") == from_domain:
            return True, "DMARC pass"
        if r.result in ("fail", "quarantine", "reject"):
            return False, f"DMARC {r.result}"
    for r in results:
        if r.method == "dkim" and r.result == "pass":
            d = r.domain("header.d") or r.domain("header.i")
            if aligned(d, from_domain):
                return True, f"DKIM pass for {d}"
        if r.method == "spf" and r.result == "pass":
            mailfrom = r.domain("smtp.mailfrom")
            if aligned(mailfrom, from_domain):
                return True, f"SPF pass for {mailfrom}"
    seen = ", ".join(f"{r.method}={r.result}" for r in results) or "no results"
    return False, f"no aligned pass ({seen})"


def unsigned_decision_headers(
    raw: bytes, results: Sequence[AuthResult], from_domain: str
) -> str | None:
    """Why a trusted MTA's pass does not vouch for the From and Subject we decide on, or None.

    An aligned SPF pass means the tenant's own server sent the mail: nothing to add. A pass
    that rests on DKIM vouches only for what the signature covers (`gateway.parse.signed_headers`):
    the signatures it names (by `header.b`), or else every signature aligned with the From
    domain, must cover every From and Subject, so a replayed signed mail with its Subject
    replaced or added to is not believed."""
    if any(
        r.method == "spf" and r.result == "pass" and aligned(r.domain("smtp.mailfrom"), from_domain)
        for r in results
    ):
        return None
    tags, names = signatures(raw)
    mine = [t for t in tags if aligned(t.get("d", ""), from_domain)]
    named = [
        r.properties.get("header.b", "")
        for r in results
        if r.method == "dkim" and r.result == "pass" and r.properties.get("header.b")
    ]
    if named:
        mine = [t for t in mine if any(t.get("b", "").startswith(b) for b in named)] or mine
    for t in mine:
        gap = uncovered(t, names)
        if gap is not None:
            return f"the DKIM signature of {t.get('d', '?')} does not cover {gap}"
    return None


def _headers(raw: bytes) -> Message | None:
    try:
        return BytesHeaderParser(policy=policy.compat32).parsebytes(raw)
    except Exception:  # malformed headers: nothing can be read from them
        return None


def ambiguity(raw: bytes, *, subject: bool) -> str | None:
    """Why the headers the gateway decides on are ambiguous, or None.

    RFC 5322 allows one From and at most one Subject. With two, an MTA's check (or a DKIM
    signature) may have looked at another one than the one rules and people read, so such
    mail is never authentic. A From naming several addresses is refused for the same
    reason (DMARC, RFC 7489 §6.6.1, cannot judge it either)."""
    msg = _headers(raw)
    if msg is None:
        return "unreadable headers"
    froms = [str(v) for v in msg.get_all("From") or []]
    if len(froms) > 1:
        return f"{len(froms)} From headers (RFC 5322 allows one)"
    if froms and len([a for _n, a in getaddresses(froms) if "@" in a]) > 1:
        return "the From header names several addresses"
    if subject and len(msg.get_all("Subject") or []) > 1:
        return "several Subject headers (RFC 5322 allows one)"
    return None


def judge_email(raw: bytes, from_addr: str, policy_: TrustPolicy) -> Verdict:
    """The verdict on an email's sender (the From address, which the rules and people see)."""
    reasons = []
    authentic: bool | None = None
    from_domain = _domain_of(from_addr)
    ambiguous = ambiguity(raw, subject=bool(policy_.authserv_id))
    found = (
        policy_.forwarded(raw, from_addr)
        if policy_.forwarded is not None and ambiguous is None
        else None
    )
    if ambiguous is not None:
        authentic = False
        reasons.append(f"not authentic: {ambiguous}")
    elif found is not None:  # through a group: what the trusted forwarder recorded decides
        authentic = found[0]
        reasons.append(found[1])
    elif policy_.authserv_id:
        results = trusted_results(authentication_headers(raw), policy_.authserv_id)
        if results is None:
            authentic, why = False, f"no Authentication-Results from {policy_.authserv_id}"
        else:
            authentic, why = authentic_from_results(results, from_domain)
            if authentic:
                gap = unsigned_decision_headers(raw, results, from_domain)
                if gap is not None:
                    authentic, why = False, f"{why}, but {gap}"
        reasons.append(why)
    elif policy_.dkim is not None:
        checked = policy_.dkim(raw)
        signer = checked.domain
        authentic = signer is not None and aligned(signer, from_domain)
        if authentic:
            reasons.append(f"DKIM verified for {signer}")
        elif signer is not None:
            reasons.append(f"the DKIM signature of {signer} is not aligned with the From domain")
        else:
            reasons.append(checked.problem or "no valid DKIM signature")
    else:
        reasons.append("authenticity not checked (no trusted MTA, no DKIM check configured)")
    return _verdict(from_addr, authentic, reasons, policy_)


def is_known(sender: str, policy_: TrustPolicy, domain: str | None = None) -> bool:
    """On the allow-list: an exact address (or chat user id), or its exact domain: an email
    address's own, or for a chat user `domain`, the server the chat adapter says
    authenticated them (never read from the id here: only the adapter knows its form)."""
    sender = sender.strip().lower()
    if policy_.allow_all or sender in policy_.allow_addresses:
        return True
    found = _domain_of(sender) if domain is None else domain.strip().lower()
    return bool(found) and found in policy_.allow_domains


def judge_chat(user_id: str, policy_: TrustPolicy, domain: str | None = None) -> Verdict:
    """A chat user: their chat server authenticated them; the allow-list decides (by the id,
    or by `domain`, the server that authenticated them, when the chat adapter names one)."""
    reasons = ["the chat server authenticated the user"]
    return _verdict(user_id, True, reasons, policy_, domain or "")


def _verdict(
    sender: str,
    authentic: bool | None,
    reasons: list[str],
    policy_: TrustPolicy,
    domain: str | None = None,
) -> Verdict:
    known = is_known(sender, policy_, domain)
    reasons.append(
        f"{sender or 'the sender'} is "
        + ("on the allow-list" if known else "not on the allow-list")
    )
    return Verdict(
        trusted=known and authentic is not False,
        authentic=authentic,
        known=known,
        reasons=tuple(reasons),
    )
