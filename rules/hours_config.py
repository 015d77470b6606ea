"""The `[hours]` section of the rulebook: when the team is in hours, and when on-call is awake.

This module owns the validated shape of support hours (time zone, working days, the in-hours
window, the bank-holiday calendar and the out-of-hours waking windows) and its defaults,
which are the GOV.UK PaaS hours, and their plain form for the clock (`Hours.compiled()`,
values of `rules.support_hours`). The arithmetic on these hours lives in `rules.hours`.
"""

from __future__ import annotations

import re
from datetime import time
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from rules.support_hours import ClockHours, HolidayCalendar, WakingWindows, Window

# `holidays` is imported where a calendar is made: the parse child gets precomputed dates
# (rules.hours) and never loads it (it is large: every country's calendar).
if TYPE_CHECKING:
    import holidays

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

_HHMM = re.compile(r"(?P<h>[01]\d|2[0-3]):(?P<m>[0-5]\d)")


class Frozen(BaseModel):
    """Base of every rulebook model: immutable, and unknown keys are errors (typos fail loudly).

    Validators are built on first validation (`defer_build`), not at import: a process that
    imports these models without validating a rulebook does not pay for them. (The parse
    child imports none of this: it is handed the plain form, `rules.support_hours`.)"""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, defer_build=True)


def _parse_hhmm(value: Any) -> Any:
    """Accept "HH:MM" (24-hour) or a TOML local time with whole minutes."""
    if isinstance(value, time):
        if value.tzinfo is not None or value.second or value.microsecond:
            raise PydanticCustomError("time_format", "expected a time as HH:MM without seconds")
        return value
    if isinstance(value, str) and (m := _HHMM.fullmatch(value.strip())):
        return time(int(m["h"]), int(m["m"]))
    raise PydanticCustomError(
        "time_format", 'expected a time as "HH:MM" (24-hour), got {got}', {"got": repr(value)}
    )


def _check_timezone(name: str) -> str:
    """The name of an IANA time zone this system knows."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PydanticCustomError(
            "timezone", "unknown time zone {name}", {"name": repr(name)}
        ) from None
    return name


def _lower(value: Any) -> Any:
    """Weekday names are case-insensitive ("Mon" and "mon" are the same day)."""
    return value.strip().lower() if isinstance(value, str) else value


ClockTime = Annotated[time, BeforeValidator(_parse_hhmm)]
TimeZoneName = Annotated[str, AfterValidator(_check_timezone)]


class TimeWindow(Frozen):
    """A daily window in local wall time, from `start` (inclusive) to `end` (exclusive).

    Windows stay within one day: `start` must be before `end`.
    """

    start: ClockTime
    end: ClockTime

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.start >= self.end:
            raise PydanticCustomError(
                "window_order",
                "start {start} must be before end {end} (windows cannot cross midnight)",
                {"start": f"{self.start:%H:%M}", "end": f"{self.end:%H:%M}"},
            )
        return self

    @property
    def minutes(self) -> int:
        """Length of the window in wall-clock minutes."""
        return self.compiled().minutes

    def compiled(self) -> Window:
        """The plain form the clock reads."""
        return Window(self.start, self.end)


class BankHolidays(Frozen):
    """Which public-holiday calendar closes the team (a `holidays` country and subdivision).

    An empty `country` means no bank holidays at all.
    """

    country: str = HolidayCalendar.country  # the default calendar, named in one place
    subdivision: str = HolidayCalendar.subdivision

    @model_validator(mode="after")
    def _known(self, info: ValidationInfo) -> Self:
        """The calendar exists: asked of the validation context's `bank_holidays` (dates
        made elsewhere, see rules.book.load_rulebook), else of `holidays` here. The
        default calendar is known to exist (a rulebook without [hours] need not load it)."""
        if not self.country or (self.country, self.subdivision) == (
            HolidayCalendar.country,
            HolidayCalendar.subdivision,
        ):
            return self
        context = info.context if isinstance(info.context, dict) else {}
        try:
            dates = context.get("bank_holidays")
            if dates is not None:
                days, _ = dates(self.country, self.subdivision)
                len(days)  # the answer, waited for: they may still be being made
            else:
                import holidays  # noqa: PLC0415  (see the imports)

                holidays.country_holidays(self.country, subdiv=self.subdivision or None)
        except NotImplementedError:
            raise PydanticCustomError(
                "holiday_calendar",
                "no bank-holiday calendar for country {country} subdivision {subdivision}",
                {"country": repr(self.country), "subdivision": repr(self.subdivision)},
            ) from None
        return self

    def calendar(self) -> holidays.HolidayBase | None:
        """A fresh calendar object, or None when bank holidays are switched off."""
        return self.compiled().calendar()

    def compiled(self) -> HolidayCalendar:
        """The plain form the clock reads."""
        return HolidayCalendar(self.country, self.subdivision)


def _nine_to_five() -> tuple[TimeWindow, ...]:
    return (TimeWindow(start=time(9), end=time(17)),)


class Waking(Frozen):
    """Out-of-hours windows in which on-call is awake ("waking"); the rest is "overnight".

    `working_days` lists windows on working days (outside in-hours; in-hours wins where they
    overlap); `non_working_days` lists windows on weekends and bank holidays.
    """

    working_days: tuple[TimeWindow, ...] = ()
    non_working_days: tuple[TimeWindow, ...] = Field(default_factory=_nine_to_five)

    def compiled(self) -> WakingWindows:
        """The plain form the clock reads."""
        return WakingWindows(
            tuple(w.compiled() for w in self.working_days),
            tuple(w.compiled() for w in self.non_working_days),
        )


class Hours(Frozen):
    """Support hours; the defaults are GOV.UK PaaS: 09:00–17:00 Mon–Fri, UK time."""

    timezone: TimeZoneName = "Europe/London"
    working_days: tuple[Annotated[Weekday, BeforeValidator(_lower)], ...] = Field(
        default=("mon", "tue", "wed", "thu", "fri"), min_length=1
    )
    in_hours: TimeWindow = Field(default_factory=lambda: _nine_to_five()[0])
    bank_holidays: BankHolidays = Field(default_factory=BankHolidays)
    waking: Waking = Field(default_factory=Waking)

    @field_validator("working_days")
    @classmethod
    def _distinct_days(cls, days: tuple[Weekday, ...]) -> tuple[Weekday, ...]:
        if len(set(days)) != len(days):
            raise PydanticCustomError("duplicate_day", "a day is listed twice")
        return days

    def working_weekdays(self) -> frozenset[int]:
        """Working days as `date.weekday()` numbers (Monday is 0)."""
        return self.compiled().working_weekdays()

    def compiled(self) -> ClockHours:
        """The plain form the clock reads (`rules.support_hours`): what the parse child gets."""
        return ClockHours(
            timezone=self.timezone,
            working_days=tuple(self.working_days),
            in_hours=self.in_hours.compiled(),
            bank_holidays=self.bank_holidays.compiled(),
            waking=self.waking.compiled(),
        )
