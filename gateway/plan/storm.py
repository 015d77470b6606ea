"""Storms and loops: rate limits, reports of the same outage, and mail loops.

Pure: what came before a message (counted by `gateway.store.storm_db` in the processing
transaction, so a restart resets nothing) and the open incidents in; a decision out.

- **Count what cannot be forged.** Every header is the sender's choice, so a message counts
  against `limit_key`: the authenticated address when authentication shows the From
  genuine, otherwise the connecting client's address together with the From (mail from
  one client in someone else's name lands in a bucket of that client, never in the
  genuine sender's). Trusted senders (allow-listed, not shown forged) and everyone else
  count apart.
- **Hold** a message that is the Nth with the same content in its bucket within the window
  (a mail loop: an auto-responder that does not say so), or that exceeds the per-sender
  rate of its bucket, or, *only for mail that is not trusted*, the global rate of untrusted
  mail. So a flood can hold unverified mail, but never a trusted sender's report: only
  their own traffic can. A held message is kept in the inbox (state `held`) and recorded;
  it is not answered and does not page until an operator releases it; the incidents room
  is told once, when holding starts.
- **Join** instead of opening, when an unthreaded report has a subject similar to an open
  incident's in the same mailbox within the storm window: from someone who already reported
  it and whose mail is not shown forged (the rule threading follows), it joins as a reply
  (no new acknowledgement); from another trusted sender, as a further reporter
  (acknowledged, told the updates, no second page). Anyone else opens their own incident:
  a forged From must not put words on someone's timeline nor subscribe to their updates.
  Nor does a trusted report join an incident opened by a sender who was not trusted
  (flagged "unverified sender"): joined, it would page nobody, so whoever wrote first, in
  anyone's name, could absorb the page.
  A report about something else opens its own incident, even from the same person:
  folding a second emergency into the first would hide it. An auto-responder that drops
  threading headers and writes its own subject therefore gets one acknowledgement, and its
  repeats are then joined or held.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.domain import Incident, SenderHistory
from gateway.plan.replies import base_subject
from gateway.plan.trust import UNVERIFIED_FLAG
from rules.types import Mailbox

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "cannot",
        "could",
        "do",
        "does",
        "for",
        "from",
        "has",
        "have",
        "hello",
        "hi",
        "is",
        "it",
        "its",
        "not",
        "of",
        "on",
        "or",
        "our",
        "please",
        "re",
        "since",
        "so",
        "that",
        "the",
        "their",
        "there",
        "this",
        "to",
        "us",
        "was",
        "we",
        "were",
        "what",
        "when",
        "with",
        "you",
        "your",
        "again",
        "all",
        "any",
        "still",
        "now",
    }
)
SIMILAR = 0.5  # Jaccard overlap of key terms that counts as the same outage


@dataclass(frozen=True)
class Limits:
    """Rates and windows, from the `[limits]` configuration."""

    per_sender: int = 10
    sender_window_s: float = 600.0
    global_per_minute: int = 300
    loop_threshold: int = 3
    storm_window_s: float = 1800.0


def body_hash(text: str) -> str:
    """The content of a message for loop detection: case and spacing do not count."""
    return hashlib.sha256(" ".join(text.lower().split()).encode()).hexdigest()[:32]


def key_terms(subject: str) -> frozenset[str]:
    """The words of a subject that say what is wrong."""
    words = _WORD.findall(base_subject(subject).lower())
    return frozenset(w for w in words if len(w) > 1 and w not in _STOP and not w.isdigit())


def similar(subject: str, title: str) -> bool:
    """Whether two subjects describe the same problem (same key terms, mostly)."""
    a, b = key_terms(subject), key_terms(title)
    if not a or not b:
        return False
    return len(a & b) / len(a | b) >= SIMILAR


def count_cap(limits: Limits) -> int:
    """How far the store need count earlier messages: one past every threshold they are
    compared with, so a storm does not make each message count all the others."""
    return max(limits.per_sender, limits.loop_threshold, limits.global_per_minute) + 1


TRUSTED_PREFIX, UNTRUSTED_PREFIX = "t:", "u:"


def limit_key(sender: str, client: str | None, *, authentic: bool | None, trusted: bool) -> str:
    """Whose traffic a message counts as: the authenticated address, or (when the From is
    not shown genuine) the connecting client with the From; trusted and untrusted apart."""
    identity = sender if authentic is True else f"{client or '-'} {sender}"
    return (TRUSTED_PREFIX if trusted else UNTRUSTED_PREFIX) + identity


def hold_reason(
    history: SenderHistory, limits: Limits, *, trusted: bool = False
) -> tuple[str, bool] | None:
    """Why a message is held, and whether it is the first held for that reason (then the
    incidents room is told); None when it may be processed. `history` counts the message's
    own bucket (`limit_key`); the global rate (`history.everyone`: untrusted mail from
    anyone) never holds a `trusted` sender's mail."""
    if history.same_content + 1 >= limits.loop_threshold:
        return (
            f"mail loop: the same message from the same sender {history.same_content + 1} times",
            history.same_content + 1 == limits.loop_threshold,
        )
    if history.from_sender >= limits.per_sender:
        # Under a flood of untrusted mail the global notice speaks for every bucket: one
        # notice each would let a flood of senders flood the incidents room instead.
        flooded = not trusted and history.everyone >= limits.global_per_minute
        return (
            f"rate limit: more than {limits.per_sender} messages from this sender in "
            f"{limits.sender_window_s:g} s",
            history.from_sender == limits.per_sender and not flooded,
        )
    if not trusted and history.everyone >= limits.global_per_minute:
        return (
            f"rate limit: more than {limits.global_per_minute} unverified messages a minute",
            history.everyone == limits.global_per_minute,
        )
    return None


@dataclass(frozen=True)
class Join:
    """An open incident a new report belongs to, and how it joins."""

    incident: Incident
    same_reporter: bool  # True: like a reply; False: another reporter of the same outage


def find_join(
    incidents: Sequence[Incident],
    mailbox: Mailbox,
    sender: str,
    subject: str,
    now: datetime,
    limits: Limits,
    *,
    authentic: bool,
    trusted: bool,
) -> Join | None:
    """The open incident this unthreaded report should join, if any (newest first).

    `authentic`: the mail is not shown forged (enough to join as one of the reporters, as
    for threading); `trusted`: the sender is also allow-listed (needed to join as a new
    reporter, who then receives the incident's updates)."""
    if limits.storm_window_s <= 0:  # joining is turned off
        return None
    since = now - timedelta(seconds=limits.storm_window_s)
    recent = [
        i
        for i in incidents
        if i.mailbox == mailbox and i.created_at >= since and i.merged_into is None
    ]
    for incident in recent:
        if not similar(subject, incident.title):
            continue  # a different problem is a new report, even from the same person
        if trusted and UNVERIFIED_FLAG in incident.flags:
            continue  # opened by someone not trusted, perhaps in this sender's name: joined,
            # the trusted report would page nobody (a forger could open it first)
        if authentic and any(r.address == sender for r in incident.reporters):
            return Join(incident, same_reporter=True)
        if trusted:  # a stranger never joins someone else's incident (they would get updates)
            return Join(incident, same_reporter=False)
    return None
