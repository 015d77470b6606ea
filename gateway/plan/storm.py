"""Storms and loops: rate limits, reports of the same outage, and mail loops.

Pure: what came before a message (counted by `gateway.store.storm_db` in the processing
transaction, so a restart resets nothing) and the open incidents in; a decision out.

- **Hold** a message that is the Nth with the same content from the same sender within the
  window (a mail loop: an auto-responder that does not say so), or that exceeds the
  per-sender or the global rate. A held message is kept in the inbox and recorded; it is
  never answered and never pages; the incidents room is told once, when holding starts.
- **Join** instead of opening, when an unthreaded report has a subject similar to an open
  incident's in the same mailbox within the storm window: from someone who already reported
  it, it joins as a reply (no new acknowledgement); from another known sender, as a further
  reporter (acknowledged, told the updates, no second page). A report about something else
  opens its own incident, even from the same person: folding a second emergency into the
  first would hide it. An auto-responder that drops threading headers and writes its own
  subject therefore gets one acknowledgement, and its repeats are then joined or held.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.domain import Incident, SenderHistory
from gateway.plan.replies import base_subject
from rules.types import Mailbox

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset({"a", "an", "and", "are", "as", "at", "be", "been", "but", "by", "can",
    "cannot", "could", "do", "does", "for", "from", "has", "have", "hello", "hi", "is", "it",
    "its", "not", "of", "on", "or", "our", "please", "re", "since", "so", "that", "the", "their",
    "there", "this", "to", "us", "was", "we", "were", "what", "when", "with", "you", "your",
    "again", "all", "any", "still", "now"})
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


def hold_reason(history: SenderHistory, limits: Limits) -> tuple[str, bool] | None:
    """Why a message is held, and whether it is the first held for that reason (then the
    incidents room is told); None when it may be processed."""
    if history.same_content + 1 >= limits.loop_threshold:
        return ("mail loop: the same message from the same sender "
                f"{history.same_content + 1} times", history.same_content + 1
                == limits.loop_threshold)
    if history.from_sender >= limits.per_sender:
        return (f"rate limit: more than {limits.per_sender} messages from this sender in "
                f"{limits.sender_window_s:g} s", history.from_sender == limits.per_sender)
    if history.everyone >= limits.global_per_minute:
        return (f"rate limit: more than {limits.global_per_minute} messages a minute",
                history.everyone == limits.global_per_minute)
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
    known: bool,
    now: datetime,
    limits: Limits,
) -> Join | None:
    """The open incident this unthreaded report should join, if any (newest first)."""
    if limits.storm_window_s <= 0:  # joining is turned off
        return None
    since = now - timedelta(seconds=limits.storm_window_s)
    recent = [i for i in incidents if i.mailbox == mailbox and i.created_at >= since
              and i.merged_into is None]
    for incident in recent:
        if not similar(subject, incident.title):
            continue  # a different problem is a new report, even from the same person
        if any(r.address == sender for r in incident.reporters):
            return Join(incident, same_reporter=True)
        if known:  # a stranger never joins someone else's incident (they would get updates)
            return Join(incident, same_reporter=False)
    return None
