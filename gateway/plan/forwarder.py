"""Trust through a forwarder: judging an author's mail from what a trusted group recorded.

A Google Group or a Mailman list re-sends the author's mail from its own servers: SPF then
names the group, and the author's DKIM signature rarely survives (a rewritten From, a subject
tag, a footer). What the group saw when the mail reached it is still on the message, in two
forms:

- **ARC** (RFC 8617): the group seals an `ARC-Authentication-Results` header recording the
  author's DKIM/SPF/DMARC results. The chain is verified here with dkimpy (`dkim.arc_verify`,
  the DNS lookup injectable as in `gateway.parse.dkim_check`), and only the instance sealed by the
  configured signer (`arc_signer`, the ARC-Seal `d=`) is read.
- **The forwarder's own Authentication-Results** (or Google's
  `X-Original-Authentication-Results`), the topmost one with the forwarder's authserv-id, and
  only when the message is shown to come from that forwarder: a DKIM signature of the
  forwarder's domain (`dkim_domain`) that our trusted MTA recorded as passing, or that our own
  DKIM check verified.

Only forwarders the operator named (`[[trust.forwarders]]`, by List-Id and/or ARC signer)
count: anyone can write any of these headers. An author named by a list's headers (the From
was rewritten to the group) whom no trusted forwarder vouches for is never authentic.
Headers are parsed by gateway.parse.auth_results (RFC 8601, `authres`) and domains aligned
by organisational domain (gateway.plan.orgdomain, the Public Suffix List).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email import policy
from email.message import Message
from email.parser import BytesHeaderParser

from gateway.parse.auth_results import parse_header
from gateway.parse.listmail import list_info
from gateway.plan.orgdomain import aligned

__all__ = ["Forwarder", "ForwarderJudge", "forwarder_judge", "judge_results", "read_results"]

Lookup = Callable[[bytes], bytes | None]
# raw -> DKIM domains (d=) shown to have signed the message (by our MTA's results or our check)
SignedBy = Callable[[bytes], frozenset[str]]
ForwarderJudge = Callable[[bytes, str], tuple[bool, str] | None]
_INSTANCE = re.compile(r"^\s*i\s*=\s*(\d{1,2})\s*;", re.IGNORECASE)
_TAG_D = re.compile(r"(?:^|;)\s*d\s*=\s*([^;\s]+)", re.IGNORECASE)
_MAX_HEADER_CHARS = 8192


@dataclass(frozen=True)
class Forwarder:
    """A group or list the operator trusts to record how the author's mail authenticated."""

    name: str
    authserv_id: str
    list_id: str | None = None
    arc_signer: str | None = None
    dkim_domain: str | None = None


@dataclass(frozen=True)
class Result:
    """One method's result, with the domain it speaks for."""

    method: str
    result: str
    domain: str


def read_results(value: str) -> tuple[str, list[Result]] | None:
    """(authserv-id, results) of an (ARC-)Authentication-Results value; None if unreadable."""
    value = " ".join(value[:_MAX_HEADER_CHARS].split())
    instance = _INSTANCE.match(value)
    if instance:
        value = value[instance.end() :]
    parsed = parse_header(value)
    if parsed is None:
        return None
    return parsed.authserv_id, [
        Result(
            r.method,
            r.result,
            r.domain("header.from")
            or r.domain("header.d")
            or r.domain("header.i")
            or r.domain("smtp.mailfrom"),
        )
        for r in parsed.results
    ]


def judge_results(results: Sequence[Result], author: str, where: str) -> tuple[bool, str]:
    """Whether the recorded results show the author's domain genuine, and why."""
    author_domain = author.rpartition("@")[2].lower()
    for r in results:
        if r.method == "dmarc" and r.domain == author_domain:
            if r.result == "pass":
                return True, f"DMARC pass for {author_domain} recorded by {where}"
            if r.result in ("fail", "quarantine", "reject"):
                return False, f"DMARC {r.result} for {author_domain} recorded by {where}"
    for r in results:
        if r.method in ("dkim", "spf") and r.result == "pass" and aligned(r.domain, author_domain):
            return True, f"{r.method.upper()} pass for {r.domain} recorded by {where}"
    seen = ", ".join(f"{r.method}={r.result}" for r in results) or "no results"
    return (
        False,
        f"no pass aligned with {author_domain or 'the author'} recorded by {where} ({seen})",
    )


def _headers(raw: bytes) -> Message | None:
    try:
        return BytesHeaderParser(policy=policy.compat32).parsebytes(raw)
    except Exception:  # malformed headers: nothing to read, nothing to trust
        return None


def _list_id(msg: Message) -> str | None:
    found = re.search(r"<([^<>\s]{1,255})>\s*$", str(msg.get("List-Id", ""))[:1024])
    return found.group(1).lower() if found else None


def forwarder_judge(
    forwarders: Sequence[Forwarder],
    *,
    mta_authserv_id: str | None = None,
    dkim: Callable[[bytes], str | None] | None = None,
    lookup: Lookup | None = None,
) -> ForwarderJudge:
    """The hook `gateway.plan.trust` asks first: (raw, author) -> (authentic, reason), or None when
    the mail did not come through a trusted forwarder and is not an author named by a list.

    With a trusted MTA (`mta_authserv_id`) its results say whether the ARC chain and the
    forwarder's DKIM signature verified; without one, dkimpy checks the ARC chain (`lookup`
    replaces DNS) and `dkim` (gateway.parse.dkim_check) the signature."""
    signed_by = (
        mta_signers(mta_authserv_id)
        if mta_authserv_id
        else checked_signers(dkim)
        if dkim is not None
        else None
    )
    chain_ok: Callable[[bytes], bool] = (
        _mta_arc_pass(mta_authserv_id)
        if mta_authserv_id
        else lambda raw: _chain_passes(raw, lookup)
    )

    def judge(raw: bytes, author: str) -> tuple[bool, str] | None:
        msg = _headers(raw)
        if msg is None:
            return None
        list_id = _list_id(msg)
        for fwd in forwarders:
            if fwd.list_id is not None and fwd.list_id != list_id:
                continue
            found = _through(fwd, raw, msg, author, signed_by, chain_ok)
            if found is not None:
                return found
        headers = {k.lower(): str(v)[:_MAX_HEADER_CHARS] for k, v in msg.items()}
        info = list_info(headers, None)
        if info is not None and info.from_is_list:
            return False, (
                "the author is named only by the list's headers "
                f"({info.author_header or 'none'}), and no trusted forwarder "
                "vouches for them"
            )
        return None

    return judge


def _through(
    fwd: Forwarder,
    raw: bytes,
    msg: Message,
    author: str,
    signed_by: SignedBy | None,
    chain_ok: Callable[[bytes], bool],
) -> tuple[bool, str] | None:
    """The judgement recorded by `fwd`, if the message shows it passed through `fwd`."""
    if fwd.arc_signer is not None:
        sealed = _arc_results(fwd, raw, msg, chain_ok)
        if sealed is not None:
            return judge_results(sealed, author, f"{fwd.name} (ARC, {fwd.authserv_id})")
    if (
        fwd.dkim_domain is not None
        and signed_by is not None
        and (fwd.dkim_domain in signed_by(raw))
    ):
        own = _own_results(fwd, msg)
        if own is not None:
            return judge_results(own, author, f"{fwd.name} ({fwd.authserv_id})")
    if fwd.list_id is not None:  # it says it is this list, and nothing proves it
        return False, (
            f"claims to come through {fwd.name}, but neither an ARC seal by "
            f"{fwd.arc_signer or '-'} nor a DKIM signature of "
            f"{fwd.dkim_domain or '-'} verifies"
        )
    return None


def _arc_results(
    fwd: Forwarder, raw: bytes, msg: Message, chain_ok: Callable[[bytes], bool]
) -> list[Result] | None:
    """The forwarder's sealed results, when the whole ARC chain verifies."""
    seals = [str(v) for v in msg.get_all("ARC-Seal") or []]
    instances = {}
    for seal in seals:
        i, d = _INSTANCE_TAG.search(seal), _TAG_D.search(seal)
        if i and d:
            instances[int(i.group(1))] = d.group(1).lower().rstrip(".")
    ours = [i for i, d in instances.items() if d == fwd.arc_signer]
    if not ours or not chain_ok(raw):
        return None
    instance = max(ours)
    for value in msg.get_all("ARC-Authentication-Results") or []:
        text = str(value)
        found = _INSTANCE.match(" ".join(text.split()))
        if found and int(found.group(1)) == instance:
            parsed = read_results(text)
            if parsed is not None and parsed[0] == fwd.authserv_id:
                return parsed[1]
    return None


_INSTANCE_TAG = re.compile(r"(?:^|;)\s*i\s*=\s*(\d{1,2})\b", re.IGNORECASE)


def _chain_passes(raw: bytes, lookup: Lookup | None) -> bool:
    import dkim  # noqa: PLC0415  (large: loaded when first needed, or after start-up)

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return None if lookup is None else lookup(name)

    try:
        if lookup is not None:
            cv, _, _ = dkim.arc_verify(raw, dnsfunc=dnsfunc)
        else:
            cv, _, _ = dkim.arc_verify(raw)
    except Exception:  # dkimpy raises on malformed sets and DNS errors: not verified
        return False
    return bool(cv == dkim.CV_Pass)


def _own_results(fwd: Forwarder, msg: Message) -> list[Result] | None:
    """The topmost results header the forwarder wrote below its own DKIM signature.

    The forwarder records its results when the mail arrives and signs when it sends, so its
    header lies below its signature; anything above the signature was added after it —
    possibly by someone replaying a genuinely signed copy — and does not count. Below the
    signature the forwarder's header is the topmost with its authserv-id (it adds its own
    above any copy the sender wrote)."""
    names = ("authentication-results", "x-original-authentication-results")
    signed = False
    for name, value in msg.items():
        key = name.lower()
        if key == "dkim-signature":
            found = _TAG_D.search(str(value)[:_MAX_HEADER_CHARS])
            signed = signed or bool(found and found.group(1).lower().rstrip(".") == fwd.dkim_domain)
            continue
        parsed = read_results(str(value)) if signed and key in names else None
        if parsed is not None and parsed[0] == fwd.authserv_id:
            return parsed[1]
    return None


def _mta_results(raw: bytes, authserv_id: str) -> list[Result]:
    """The results in our trusted MTA's topmost Authentication-Results header."""
    msg = _headers(raw)
    for value in (msg.get_all("Authentication-Results") or []) if msg else []:
        parsed = read_results(str(value))
        if parsed is not None and parsed[0] == authserv_id.lower():
            return parsed[1]
    return []


def mta_signers(authserv_id: str) -> SignedBy:
    """DKIM domains our trusted MTA recorded as passing, in its topmost results header."""
    return lambda raw: frozenset(
        r.domain
        for r in _mta_results(raw, authserv_id)
        if r.method == "dkim" and r.result == "pass"
    )


def _mta_arc_pass(authserv_id: str) -> Callable[[bytes], bool]:
    """Whether our trusted MTA recorded `arc=pass` (it verified the whole chain)."""
    return lambda raw: any(
        r.method == "arc" and r.result == "pass" for r in _mta_results(raw, authserv_id)
    )


def checked_signers(verify: Callable[[bytes], str | None]) -> SignedBy:
    """The domain of the signature our own DKIM check verified (gateway.parse.dkim_check)."""

    def signed_by(raw: bytes) -> frozenset[str]:
        domain = verify(raw)
        return frozenset({domain}) if domain else frozenset()

    return signed_by
