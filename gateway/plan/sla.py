"""The SLA planner: given the open incidents and the instant, which reminders, escalations,
holding replies, handover reminders and out-of-hours digests are due, each as a Plan, and
when each incident must be looked at again (the items themselves: gateway.plan.sla_items).

Pure, like the pipeline: incidents, the rulebook and `now` in; `Due` items out. Every item
has a key (subject, kind, due_at) that the store records in the same transaction that
applies its Plan, so each fires at most once however often (or late) the planner runs.
Items due long ago are not replayed one by one: a warning is only due before its deadline,
and daily reminders (handover at close, the digest) only for the latest occurrence.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

from gateway.domain import Due, Incident
from gateway.plan.sla_items import (
    DIGEST,
    Candidate,
    Ctx,
    EscalationTarget,
    SlaSettings,
    digest_candidate,
    digest_window,
    is_open,
    of_incident,
)
from rules.book import Rulebook

__all__ = [
    "DIGEST",
    "EscalationTarget",
    "SlaSettings",
    "digest_items",
    "digest_window",
    "due_now",
    "incident_items",
    "next_digest",
    "next_due",
    "next_due_by_incident",
]


def due_now(
    incidents: Sequence[Incident], now: datetime, book: Rulebook, settings: SlaSettings
) -> list[Due]:
    """Everything due at `now` (already-fired items are filtered by the store's key)."""
    ctx = Ctx(book, settings, now)
    return [_due(c) for c in _candidates(incidents, ctx) if _is_due(c, now)]


def incident_items(
    incidents: Sequence[Incident], now: datetime, book: Rulebook, settings: SlaSettings
) -> list[Due]:
    """What is due at `now` for these incidents, the digest aside (the scheduler's round
    over the incidents its index says are due; already-fired items are filtered by the
    store's key)."""
    ctx = Ctx(book, settings, now)
    return [_due(c) for i in incidents for c in of_incident(i, ctx) if _is_due(c, now)]


def digest_items(
    waiting: Sequence[Incident], now: datetime, book: Rulebook, settings: SlaSettings
) -> list[Due]:
    """The digest due at `now`, if any, listing `waiting` (the open incidents created in
    the window `digest_window` gives; others are left out as `due_now` leaves them)."""
    digest = digest_candidate(waiting, Ctx(book, settings, now))
    return [_due(digest)] if digest is not None and _is_due(digest, now) else []


def next_digest(now: datetime, book: Rulebook, settings: SlaSettings) -> datetime | None:
    """The next opening after `now` at which a digest falls due (None: digests off)."""
    return _next_opening(book, now) if settings.digest else None


def next_due_by_incident(
    incidents: Sequence[Incident],
    fired: Mapping[int, Collection[tuple[str, datetime]]],
    now: datetime,
    book: Rulebook,
    settings: SlaSettings,
) -> dict[int, datetime | None]:
    """For each incident, the earliest instant at which the scheduler must look at it
    again, given `fired` (incident id: the (kind, due_at) of its items already fired):
    its soonest item not fired yet and still worth sending at `now` (a warning only
    before its deadline), or the next end of support hours for a handover priority.
    None: nothing more is ever due (resolved, merged away).

    Planned at `now` right after firing what was due then, every time is after `now`.
    An incident is due again exactly when `due_now` would have something new for it:
    a warning that lapses unsent is followed at its deadline by the overdue item, and
    the handover at close is always the latest close."""
    ctx = Ctx(book, settings, now)
    closing = _next_closing(book, now) if settings.handover_at_close else None
    out: dict[int, datetime | None] = {}
    for incident in incidents:
        done = fired.get(incident.id, ())
        times = [
            c.due_at
            for c in of_incident(incident, ctx)
            if (c.kind, c.due_at) not in done and (c.until is None or now < c.until)
        ]
        if (
            closing is not None
            and is_open(incident)
            and incident.priority in settings.handover
            and closing > incident.created_at
        ):
            times.append(closing)
        out[incident.id] = min(times, default=None)
    return out


def _is_due(c: Candidate, now: datetime) -> bool:
    return c.due_at <= now and (c.until is None or now < c.until)


def _due(c: Candidate) -> Due:
    text, plan = c.build()
    return Due(c.subject, c.incident_id, c.kind, c.due_at, plan, text)


def _next_closing(book: Rulebook, now: datetime) -> datetime | None:
    """The first end of support hours after `now`."""
    clock = book.clock
    opening = clock.next_in_hours_start(now)
    window = clock.in_hours_window(clock.local(opening).date())
    return window[1] if window is not None and window[1] > now else None


def next_due(
    incidents: Sequence[Incident], now: datetime, book: Rulebook, settings: SlaSettings
) -> datetime | None:
    """The earliest instant after `now` at which something falls due."""
    ctx = Ctx(book, settings, now)
    future = [c.due_at for c in _candidates(incidents, ctx) if c.due_at > now]
    if settings.digest:
        future.append(_next_opening(book, now))
    if settings.handover_at_close and any(i.priority in settings.handover for i in incidents):
        closing = _next_closing(book, now)
        if closing is not None:
            future.append(closing)
    return min(future, default=None)


def _next_opening(book: Rulebook, now: datetime) -> datetime:
    clock = book.clock
    start = clock.next_in_hours_start(now)
    if start > now:
        return start
    window = clock.in_hours_window(clock.local(now).date())
    end = window[1] if window else now
    return clock.next_in_hours_start(end)


def _candidates(incidents: Sequence[Incident], ctx: Ctx) -> list[Candidate]:
    found = [c for incident in incidents for c in of_incident(incident, ctx)]
    digest = digest_candidate(incidents, ctx)
    return found + ([digest] if digest else [])
