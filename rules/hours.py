"""Support-hours arithmetic: which period an instant falls in, and business-time deadlines.

This module owns `SupportClock`. It never reads the clock: every method takes the instant
it works on. All inputs must be timezone-aware (naive datetimes raise ValueError); every
datetime it returns is in UTC. Windows are defined in local wall time of the configured zone
and converted through `zoneinfo` day by day, so deadlines stay right across BST/GMT changes.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from rules.support_hours import ClockHours, HolidayCalendar, Window
from rules.types import Period

_ONE_DAY = timedelta(days=1)
# Years of bank holidays a pickled clock carries (before and after the current one): the
# parse child triages with them and never imports `holidays`; a day outside falls back to
# the full calendar.
_YEARS_BEFORE, _YEARS_AFTER = 1, 4


def holiday_years(now: datetime) -> range:
    """The years whose bank holidays are precomputed around `now`."""
    return range(now.year - _YEARS_BEFORE, now.year + _YEARS_AFTER + 1)


class HoursSource(Protocol):
    """Support hours in either form: plain (`ClockHours`) or validated (`Hours`)."""

    def compiled(self) -> ClockHours:
        """The plain form the clock reads."""
        ...


class HolidayDates(Collection[date]):
    """Bank holidays as precomputed dates for a span of years; the full calendar (the
    `holidays` package, imported then) for a day outside them."""

    def __init__(self, source: HolidayCalendar, days: Collection[date], years: range) -> None:
        self._source, self._days, self._years = source, days, years
        self._calendar: Container[date] | None = None

    def __iter__(self) -> Iterator[date]:
        return iter(self._days)

    def __len__(self) -> int:
        return len(self._days)

    def __contains__(self, day: object) -> bool:
        if not isinstance(day, date):
            return False
        if isinstance(day, datetime):
            day = day.date()
        if day.year in self._years:
            return day in self._days
        if self._calendar is None:
            calendar = self._source.calendar()  # an empty one is falsy: no `or`
            self._calendar = frozenset() if calendar is None else calendar
        return day in self._calendar


def _require_aware(value: datetime, name: str) -> datetime:
    """`value` in UTC; ValueError if it is naive (a naive time has no place on the clock)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got naive {value!r}")
    return value.astimezone(UTC)


class SupportClock:
    """Support hours as arithmetic (defaults: GOV.UK PaaS hours, Europe/London).

    - In hours: the `in_hours` window on working days that are not bank holidays.
    - Out of hours, waking: the waking windows (by default 09:00–17:00 on non-working days).
    - Out of hours, overnight: everything else.

    A business minute is a minute in hours; a business day is as many business minutes as one
    in-hours day holds (480 for 09:00–17:00), so one business day from Tue 10:00 is
    Wed 10:00, and from Fri 16:00 is Mon 16:00.
    """

    def __init__(
        self, hours: HoursSource | None = None, bank_holidays: HolidayDates | None = None
    ) -> None:
        """`hours`: plain or validated (the defaults when None). `bank_holidays`:
        precomputed dates for their calendar (else it is made here)."""
        self.hours = hours.compiled() if hours is not None else ClockHours()
        self.tz = ZoneInfo(self.hours.timezone)
        self._weekdays = self.hours.working_weekdays()
        self._holidays: Collection[date] | None = (
            bank_holidays if bank_holidays is not None else self.hours.bank_holidays.calendar()
        )
        self.business_day = timedelta(minutes=self.hours.in_hours.minutes)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled with the bank holidays as dates (HolidayDates), not the calendar object."""
        state = dict(self.__dict__)
        if self._holidays is not None and not isinstance(self._holidays, HolidayDates):
            years = holiday_years(datetime.now(UTC))
            calendar = self._holidays
            for year in years:
                _ = date(year, 1, 1) in calendar  # a `holidays` calendar fills a year when asked
            days = frozenset(day for day in calendar if day.year in years)
            state["_holidays"] = HolidayDates(self.hours.bank_holidays, days, years)
        return state

    def local(self, instant: datetime) -> datetime:
        """The instant in the support team's local time."""
        return _require_aware(instant, "instant").astimezone(self.tz)

    def is_working_day(self, day: date) -> bool:
        """True for a configured working weekday that is not a bank holiday."""
        if day.weekday() not in self._weekdays:
            return False
        return not self.is_bank_holiday(day)

    def is_bank_holiday(self, day: date) -> bool:
        """Whether `day` is a bank holiday of the configured calendar (dates still being
        made by their helper process are waited for: gateway.config.bank_holidays)."""
        return self._holidays is not None and day in self._holidays

    def period_at(self, now: datetime) -> Period:
        """The support period `now` falls in."""
        utc = _require_aware(now, "now")
        day = utc.astimezone(self.tz).date()
        working = self.is_working_day(day)
        if working and self._contains(day, self.hours.in_hours, utc):
            return Period.IN_HOURS
        waking = self.hours.waking
        windows = waking.working_days if working else waking.non_working_days
        if any(self._contains(day, window, utc) for window in windows):
            return Period.OOH_WAKING
        return Period.OOH_OVERNIGHT

    def is_in_hours(self, now: datetime) -> bool:
        """True when `now` is within support hours."""
        return self.period_at(now) is Period.IN_HOURS

    def next_in_hours_start(self, now: datetime) -> datetime:
        """When in-hours work can next start: `now` itself (in UTC) if it is in hours."""
        utc = _require_aware(now, "now")
        start, _ = next(self._open_windows_from(utc))
        return max(start, utc)

    def add_business_minutes(self, start: datetime, minutes: int) -> datetime:
        """The instant `minutes` in-hours minutes after `start`, in UTC.

        Only in-hours minutes count; a start out of hours begins counting at the next
        in-hours start. A deadline that uses up a day exactly lands on that day's in-hours
        end (e.g. 17:00), not on the next morning; adding 0 minutes out of hours gives the
        next in-hours start.
        """
        if minutes < 0:
            raise ValueError(f"minutes must not be negative, got {minutes}")
        utc = _require_aware(start, "start")
        remaining = timedelta(minutes=minutes)
        for window_start, window_end in self._open_windows_from(utc):
            cursor = max(window_start, utc)
            available = window_end - cursor
            if remaining <= available:
                return cursor + remaining
            remaining -= available
        raise AssertionError("unreachable: working days recur every week")  # pragma: no cover

    def add_business_days(self, start: datetime, days: int) -> datetime:
        """`days` business days after `start`, in UTC (see the class docstring)."""
        if days < 0:
            raise ValueError(f"days must not be negative, got {days}")
        minutes = days * self.hours.in_hours.minutes
        return self.add_business_minutes(start, minutes)

    def in_hours_window(self, day: date) -> tuple[datetime, datetime] | None:
        """The in-hours window of `day` as UTC instants, or None on a day off."""
        if not self.is_working_day(day):
            return None
        start, end = self._window(day, self.hours.in_hours)
        return (start, end) if start < end else None

    def _window(self, day: date, window: Window) -> tuple[datetime, datetime]:
        """A local wall-time window on `day`, as UTC instants."""
        start = datetime.combine(day, window.start, tzinfo=self.tz).astimezone(UTC)
        end = datetime.combine(day, window.end, tzinfo=self.tz).astimezone(UTC)
        return start, end

    def _contains(self, day: date, window: Window, utc: datetime) -> bool:
        start, end = self._window(day, window)
        return start <= utc < end

    def _open_windows_from(self, utc: datetime) -> Iterator[tuple[datetime, datetime]]:
        """In-hours windows (UTC) that end after `utc`, in order, without end."""
        day = utc.astimezone(self.tz).date()
        while True:
            if self.is_working_day(day):
                start, end = self._window(day, self.hours.in_hours)
                # A window whose ends fall in a DST gap can collapse; it has no minutes.
                if end > utc and start < end:
                    yield start, end
            day += _ONE_DAY
