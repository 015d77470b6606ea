"""Mail that reached us through a mailing list or a group (Google Groups, Mailman, others).

Owns two questions, answered from the parsed header map (pure, no I/O):

- **Is this list mail, and which addresses belong to the list?** The posting address
  (List-Post `mailto:`, Google's `Mailing-list: list ADDR`, `X-Original-To`-free: only
  what list software writes), its `Sender:`, the List-Id, and the bounce address the
  envelope carries (`group+bnc…@`, `list-bounces@`). None of those may ever receive mail
  from us.
- **Who wrote it?** When the list rewrote the From to its own address because the author's
  domain publishes a strict DMARC policy (Google Groups: `"'Ana' via Group"
  <group@…>`; Mailman 3 `munge_from`: `"Ana via Group" <list@…>`), the author is in the
  headers the list software writes for that purpose: Google Groups writes
  `X-Original-From` and `X-Original-Sender` (and usually `Reply-To`); Mailman 3 moves the
  original From to `Reply-To`, or to `Cc` when Reply-To points at the list.

These headers are written by whoever sent the mail as much as by the list: what they say is
who the mail claims to be from. Whether that claim holds is `gateway.plan.trust` /
`gateway.plan.forwarder`'s question, and where answers may go is `gateway.plan.answer_to`'s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import getaddresses

from gateway.parse.automail import safe_parseaddr

__all__ = ["ListInfo", "list_info", "listish_local_part"]

_MAX_CHARS = 4096
_MAILTO = re.compile(r"<\s*mailto:([^>?\s]+)", re.IGNORECASE)
_LIST_ID = re.compile(r"<([^<>\s]{1,255})>\s*$")
_MAILING_LIST = re.compile(r"\blist\s+([^\s;,]+@[^\s;,]+)", re.IGNORECASE)
# "'Ana Smith' via Emergency" (Google Groups), "Ana Smith via Emergency" (Mailman 3).
_VIA = re.compile(r"\svia\s+\S", re.IGNORECASE)
# Headers only list software writes (RFC 2369, RFC 2919, Google Groups, Mailman, ezmlm, fml).
_LIST_HEADERS = (
    "list-id",
    "list-post",
    "mailing-list",
    "x-google-group-id",
    "x-mailman-version",
    "list-unsubscribe",
    "x-mailing-list",
    "x-ml-name",
    "x-mlserver",
)


@dataclass(frozen=True)
class ListInfo:
    """What the headers say about the list a message came through."""

    list_id: str | None  # the RFC 2919 identifier, lowercased ("emergency.paas.example")
    addresses: frozenset[str]  # the list's own addresses: never a recipient of ours
    from_is_list: bool  # the From was rewritten to the list (DMARC mitigation)
    author: tuple[str, str] | None  # (address, display name) of the original author
    author_header: str | None  # which header named the author


def _bare(value: str) -> str:
    return safe_parseaddr(value)[1].strip().lower()


def listish_local_part(address: str) -> bool:
    """A list's bounce, owner or command address, by the conventions of list software:
    Google Groups `group+bnc…`/`+owners`/`+unsubscribe`, Mailman `-bounces`/`-owner`/
    `-request`, Majordomo `owner-…`, ezmlm `-return-…`. (Not `-admin`: team mailboxes
    such as `cloud-admin@` are people's.)"""
    local = address.rpartition("@")[0].lower()
    if not local:
        return False
    base, _, tag = local.partition("+")
    return (
        tag.startswith(("bnc", "owner", "unsubscribe", "help", "subscribe"))
        or base.startswith("owner-")
        or base.endswith(("-bounces", "-owner", "-request"))
        or re.search(r"-return-\d", base) is not None
    )


def list_info(headers: Mapping[str, str], envelope_sender: str | None) -> ListInfo | None:
    """The list a message came through, or None when nothing says it came through one."""
    if not any(name in headers for name in _LIST_HEADERS):
        return None
    addresses = _list_addresses(headers, envelope_sender)
    from_value = headers.get("from", "")[:_MAX_CHARS]
    from_addr = _bare(from_value)
    display = safe_parseaddr(from_value)[0]
    found = _LIST_ID.search(headers.get("list-id", "")[:_MAX_CHARS])
    list_id = found.group(1).lower() if found else None
    # Google Groups and Mailman 3 derive the List-Id from the posting address:
    # emergency@paas.example posts with List-Id <emergency.paas.example>.
    from_is_list = bool(from_addr) and (
        from_addr in addresses
        or from_addr.replace("@", ".", 1) == list_id
        or (bool(_VIA.search(f" {display}")) and _has_author(headers))
    )
    if from_is_list and from_addr:
        addresses = addresses | {from_addr}
    author, which = _author(headers, addresses) if from_is_list else (None, None)
    return ListInfo(
        list_id=list_id,
        addresses=frozenset(a for a in addresses if a),
        from_is_list=from_is_list,
        author=author,
        author_header=which,
    )


def _list_addresses(headers: Mapping[str, str], envelope_sender: str | None) -> set[str]:
    found = {
        m.group(1).strip().lower()
        for m in _MAILTO.finditer(headers.get("list-post", "")[:_MAX_CHARS])
    }
    mailing = _MAILING_LIST.search(headers.get("mailing-list", "")[:_MAX_CHARS])
    if mailing:
        found.add(mailing.group(1).lower())
    for name in ("sender", "x-spam-checked-in-group", "errors-to"):
        if name in headers:
            found.add(_bare(headers[name][:_MAX_CHARS]))
    # The envelope of list mail is the list's bounce address, never the author's.
    bounce = (
        envelope_sender if envelope_sender is not None else _bare(headers.get("return-path", ""))
    )
    if bounce:
        found.add(bounce.strip("<>").lower())
    return {a for a in found if "@" in a}


def _addresses(value: str) -> list[tuple[str, str]]:
    try:
        return getaddresses([value])
    except Exception:  # getaddresses on garbage: this header names nobody
        return []


def _has_author(headers: Mapping[str, str]) -> bool:
    return any(name in headers for name in ("x-original-from", "x-original-sender", "reply-to"))


def _author(
    headers: Mapping[str, str], addresses: set[str]
) -> tuple[tuple[str, str] | None, str | None]:
    """The first author header that names an address that is not the list's own."""
    for name in ("x-original-from", "x-original-sender", "reply-to", "cc"):
        value = headers.get(name, "")[:_MAX_CHARS]
        if not value:
            continue
        people = [
            (a.strip().lower(), n.strip())
            for n, a in _addresses(value)
            if "@" in a and a.strip().lower() not in addresses
        ]
        if name == "cc" and (
            len(people) != 1 or _bare(headers.get("reply-to", "")) not in addresses
        ):
            continue  # Mailman moves the author to Cc only when Reply-To is the list
        if people:
            return (people[0][0], people[0][1]), name
    return None, None
