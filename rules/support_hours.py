"""Support hours as plain values: what `rules.hours.SupportClock` reads.

This module owns the compiled form of the rulebook's `[hours]` section: frozen dataclasses
that pickle small and load without pydantic, so the parse child can run the clock without
the validation models. `rules.hours_config.Hours.compiled()` is the one place they are
made from a validated rulebook; the defaults here (GOV.UK PaaS hours, UK time) are those
of `Hours()` (a test holds the two equal). Making the bank-holiday calendar imports the
`holidays` package, and only then.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time
from typing import TYPE_CHECKING

# `holidays` is imported where a calendar is made (see HolidayCalendar.calendar).
if TYPE_CHECKING:
    import holidays

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Window:
    """A daily window in local wall time, from `start` (inclusive) to `end` (exclusive)."""

    start: time
    end: time

    @property
    def minutes(self) -> int:
        """Length of the window in wall-clock minutes."""
        return (self.end.hour * 60 + self.end.minute) - (self.start.hour * 60 + self.start.minute)


_NINE_TO_FIVE = Window(time(9), time(17))


@dataclass(frozen=True)
class HolidayCalendar:
    """Which public-holiday calendar closes the team; an empty `country` means none."""

    country: str = "GB"
    subdivision: str = "ENG"

    def calendar(self) -> holidays.HolidayBase | None:
        """A fresh calendar object, or None when bank holidays are switched off."""
        if not self.country:
            return None
        import holidays  # noqa: PLC0415  (large: loaded only when a calendar is needed)

        return holidays.country_holidays(self.country, subdiv=self.subdivision or None)


@dataclass(frozen=True)
class WakingWindows:
    """Out-of-hours windows in which on-call is awake, on working and non-working days."""

    working_days: tuple[Window, ...] = ()
    non_working_days: tuple[Window, ...] = (_NINE_TO_FIVE,)


@dataclass(frozen=True)
class ClockHours:
    """Support hours, validated already: zone, working days, in-hours window, bank
    holidays and waking windows (see `rules.hours_config.Hours` for their meaning)."""

    timezone: str = "Europe/London"
    working_days: tuple[str, ...] = WEEKDAYS[:5]
    in_hours: Window = _NINE_TO_FIVE
    bank_holidays: HolidayCalendar = HolidayCalendar()
    waking: WakingWindows = WakingWindows()

    def working_weekdays(self) -> frozenset[int]:
        """Working days as `date.weekday()` numbers (Monday is 0)."""
        return frozenset(WEEKDAYS.index(day) for day in self.working_days)

    def compiled(self) -> ClockHours:
        """Itself (a validated `Hours` gives this form too: SupportClock takes either)."""
        return self
