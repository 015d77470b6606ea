"""Sender trust: may a report page on its own, or must an engineer confirm it first?

Two questions, both answered from values, with reasons:

- **Is the sender authentic?** Read from the `Authentication-Results` header (RFC 8601)
  that the configured trusted MTA added — only the topmost one whose authserv-id is that
  MTA's; any other is ignored, because a sender can write whatever headers they like. A
  DMARC pass, or a DKIM or SPF pass aligned with the From domain, makes the sender
  authentic. Without a trusted MTA, an optional DKIM check (`gateway.dkim`) can answer
  instead; with neither, authenticity is not checked (None) and the allow-list alone decides.
- **Is the sender known?** The tenant allow-list: exact addresses, exact domains (the
  domain of an email address, or the server of a Matrix user id), or `allow_all`.

A trusted sender is known and not shown to be inauthentic. Anyone else never pages alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email import policy
from email.parser import BytesHeaderParser

UNVERIFIED_FLAG = "unverified sender"
_COMMENT = re.compile(r"\([^()]*\)")
_PROPERTY = re.compile(r"^([a-z]+)\.([a-z0-9_.-]+)=(.*)$")
_MATRIX_USER = re.compile(r"^@[^:\s]+:(\S+)$")


@dataclass(frozen=True)
class MethodResult:
    """One `method=result` of an Authentication-Results header, with its properties."""

    method: str
    result: str
    properties: dict[str, str]


@dataclass(frozen=True)
class TrustPolicy:
    """Who is trusted: the MTA whose results count, and the tenant allow-list."""

    authserv_id: str | None = None
    allow_domains: frozenset[str] = frozenset()
    allow_addresses: frozenset[str] = frozenset()
    allow_all: bool = False
    dkim: Callable[[bytes], str | None] | None = None  # raw -> verified signing domain
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


def parse_authentication_results(value: str) -> tuple[str, list[MethodResult]]:
    """(authserv-id, results) of one Authentication-Results header value (RFC 8601)."""
    text = " ".join(value.split())
    while _COMMENT.search(text):  # comments nest; strip the innermost until none is left
        text = _COMMENT.sub(" ", text)
    head, *parts = [p.strip() for p in text.split(";")]
    authserv_id = head.split()[0].lower() if head.split() else ""
    results = []
    for part in parts:
        words = part.split()
        if not words or "=" not in words[0]:
            continue  # "none", or something unreadable
        method, _, result = words[0].partition("=")
        props = {}
        for word in words[1:]:
            match = _PROPERTY.match(word.lower())
            if match:
                props[f"{match.group(1)}.{match.group(2)}"] = match.group(3).strip('"')
        results.append(MethodResult(method.split("/")[0].lower(), result.lower(), props))
    return authserv_id, results


def trusted_results(headers: Sequence[str], authserv_id: str) -> list[MethodResult] | None:
    """The results in the topmost header from our trusted MTA, or None if it added none.

    Our MTA adds its header on top; older ones below may have been written by anyone,
    including a copy that claims to be from our MTA (a conforming MTA removes those)."""
    for value in headers:
        found, results = parse_authentication_results(value)
        if found == authserv_id.lower():
            return results
    return None


def authentication_headers(raw: bytes) -> list[str]:
    """Every Authentication-Results header of a raw message, topmost first."""
    try:
        msg = BytesHeaderParser(policy=policy.compat32).parsebytes(raw)
        return [str(v) for v in msg.get_all("Authentication-Results") or []]
    except Exception:  # malformed headers: there is simply nothing to trust
        return []


def _aligned(domain: str, from_domain: str) -> bool:
    """Relaxed alignment: the same domain, or one a subdomain of the other."""
    domain, from_domain = domain.lower().rstrip("."), from_domain.lower().rstrip(".")
    if not domain or not from_domain:
        return False
    return (domain == from_domain or from_domain.endswith("." + domain)
            or domain.endswith("." + from_domain))


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower() if "@" in address else ""


def authentic_from_results(results: list[MethodResult], from_domain: str) -> tuple[bool, str]:
    """Whether the results show the From domain is genuine, and the reason."""
    for r in results:
        if r.method == "dmarc" and r.result == "pass" and _aligned(
                r.properties.get("header.from", from_domain), from_domain):
            return True, "DMARC pass"
        if r.method == "dmarc" and r.result in ("fail", "quarantine", "reject"):
            return False, f"DMARC {r.result}"
    for r in results:
        d = r.properties.get("header.d") or _domain_of(r.properties.get("header.i", ""))
        if r.method == "dkim" and r.result == "pass" and _aligned(d, from_domain):
            return True, f"DKIM pass for {d}"
        mailfrom = _domain_of(r.properties.get("smtp.mailfrom", "")) or r.properties.get(
            "smtp.mailfrom", "")
        if r.method == "spf" and r.result == "pass" and _aligned(mailfrom, from_domain):
            return True, f"SPF pass for {mailfrom}"
    seen = ", ".join(f"{r.method}={r.result}" for r in results) or "no results"
    return False, f"no aligned pass ({seen})"


def is_known(sender: str, policy_: TrustPolicy) -> bool:
    """On the allow-list: an exact address (or Matrix user id), or its exact domain/server."""
    sender = sender.strip().lower()
    if policy_.allow_all or sender in policy_.allow_addresses:
        return True
    matrix = _MATRIX_USER.match(sender)
    domain = matrix.group(1) if matrix else _domain_of(sender)
    return bool(domain) and domain in policy_.allow_domains


def judge_email(raw: bytes, from_addr: str, policy_: TrustPolicy) -> Verdict:
    """The verdict on an email's sender (the From address, which the rules and people see)."""
    found = policy_.forwarded(raw, from_addr) if policy_.forwarded is not None else None
    if found is not None:  # through a group: what the trusted forwarder recorded decides
        return _verdict(from_addr, found[0], [found[1]], policy_)
    reasons = []
    authentic: bool | None = None
    from_domain = _domain_of(from_addr)
    if policy_.authserv_id:
        results = trusted_results(authentication_headers(raw), policy_.authserv_id)
        if results is None:
            authentic, why = False, f"no Authentication-Results from {policy_.authserv_id}"
        else:
            authentic, why = authentic_from_results(results, from_domain)
        reasons.append(why)
    elif policy_.dkim is not None:
        signer = policy_.dkim(raw)
        authentic = signer is not None and _aligned(signer, from_domain)
        reasons.append(f"DKIM verified for {signer}" if authentic else
                       "no valid DKIM signature aligned with the From domain")
    else:
        reasons.append("authenticity not checked (no trusted MTA, no DKIM check configured)")
    return _verdict(from_addr, authentic, reasons, policy_)


def judge_chat(user_id: str, policy_: TrustPolicy) -> Verdict:
    """A Matrix user: the homeserver authenticated them; the allow-list decides."""
    return _verdict(user_id, True, ["the homeserver authenticated the user"], policy_)


def _verdict(sender: str, authentic: bool | None, reasons: list[str],
             policy_: TrustPolicy) -> Verdict:
    known = is_known(sender, policy_)
    reasons.append(f"{sender or 'the sender'} is " + ("on the allow-list" if known
                                                       else "not on the allow-list"))
    return Verdict(trusted=known and authentic is not False, authentic=authentic, known=known,
                   reasons=tuple(reasons))
