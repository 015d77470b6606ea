"""SLA clocks as arithmetic: business time between two instants, the in-hours openings and
closings around an instant, and whether an incident kept each promise it made.

This module owns the verdicts of the two clocks the support process promises per priority:
*respond by* (counted from the report) and *next update by* (counted from the last update
sent to reporters). Deadlines themselves come from `rules.engine` (`respond_due`,
`next_update_due`) and business-time addition from `rules.hours.SupportClock`; here they
are only compared. Pure: instants in, instants and verdicts out; the clock is never read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rules.book import Rulebook
from rules.engine import next_update_due
from rules.hours import SupportClock
from rules.types import Priority

_ONE_DAY = timedelta(days=1)
# Far enough back to cross any run of weekends and bank holidays (Christmas and New Year).
_LOOKBACK_DAYS = 31


def business_minutes_between(clock: SupportClock, start: datetime, end: datetime) -> float:
    """In-hours minutes from `start` to `end` (0 when `end` is not after `start`)."""
    start_utc, end_utc = start.astimezone(UTC), end.astimezone(UTC)
    if end_utc <= start_utc:
        return 0.0
    total = timedelta()
    day = clock.local(start_utc).date()
    last = clock.local(end_utc).date()
    while day <= last:
        window = clock.in_hours_window(day)
        if window is not None:
            lo, hi = max(window[0], start_utc), min(window[1], end_utc)
            if hi > lo:
                total += hi - lo
        day += _ONE_DAY
    return total.total_seconds() / 60


def _windows_back(clock: SupportClock, now: datetime) -> list[tuple[datetime, datetime]]:
    """In-hours windows that started at or before `now`, latest first."""
    day = clock.local(now).date()
    found = []
    for _ in range(_LOOKBACK_DAYS):
        window = clock.in_hours_window(day)
        if window is not None and window[0] <= now:
            found.append(window)
        day -= _ONE_DAY
    return found


def last_opening(clock: SupportClock, now: datetime) -> datetime | None:
    """The latest start of an in-hours period at or before `now`."""
    windows = _windows_back(clock, now.astimezone(UTC))
    return windows[0][0] if windows else None


def last_closing(clock: SupportClock, now: datetime) -> datetime | None:
    """The latest end of an in-hours period (17:00 by default) at or before `now`."""
    utc = now.astimezone(UTC)
    ends = [end for _, end in _windows_back(clock, utc) if end <= utc]
    return ends[0] if ends else None


def closing_before(clock: SupportClock, instant: datetime) -> datetime | None:
    """The latest in-hours end strictly before `instant` (where an out-of-hours stretch began)."""
    return last_closing(clock, instant.astimezone(UTC) - timedelta(microseconds=1))


@dataclass(frozen=True)
class ClockVerdict:
    """One promise: what was due when, whether and how it was kept, judged at `now`."""

    name: str
    due: datetime
    done_at: datetime | None
    how: str
    now: datetime

    @property
    def state(self) -> str:
        """ "met", "missed" (done late), "overdue" (not done, past due) or "running"."""
        if self.done_at is not None:
            return "met" if self.done_at <= self.due else "missed"
        return "overdue" if self.now > self.due else "running"

    def describe(self, when: Callable[[datetime], str]) -> str:
        """One line for people; `when` is a formatter for instants."""
        due = f"{self.name} due {when(self.due)}"
        if self.done_at is not None:
            late = "" if self.state == "met" else f", {_late(self.due, self.done_at)} late"
            return f"{due}: {self.state} ({self.how} {when(self.done_at)}{late})"
        if self.state == "overdue":
            return f"{due}: overdue by {_late(self.due, self.now)}"
        return f"{due}: running ({_late(self.now, self.due)} left)"


def _late(due: datetime, done: datetime) -> str:
    minutes = int((done - due).total_seconds() // 60)
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest} min" if hours else f"{rest} min"


def response_clock(
    respond_by: datetime, acknowledged_at: datetime | None, now: datetime
) -> ClockVerdict:
    """The respond-by promise: kept when an engineer acknowledged by then."""
    return ClockVerdict("response", respond_by, acknowledged_at, "acknowledged", now)


def update_clocks(
    priority: Priority,
    first_due: datetime,
    sends: Sequence[tuple[datetime, str]],
    book: Rulebook,
    now: datetime,
    *,
    still_open: bool,
) -> list[ClockVerdict]:
    """Every update promise in order: each update sent (`(at, how)`, oldest first) keeps
    the promise that was running and starts the next one; an open incident ends with the
    promise now running."""
    verdicts = []
    due = first_due
    for number, (at, how) in enumerate(sorted(sends), start=1):
        verdicts.append(ClockVerdict(f"update {number}", due, at, how, now))
        due = next_update_due(priority, at, book)
    if still_open:
        verdicts.append(ClockVerdict(f"update {len(sends) + 1}", due, None, "", now))
    return verdicts
