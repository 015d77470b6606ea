"""Support hours: periods, bank holidays, business-time arithmetic, DST, configurable hours."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.hours import SupportClock
from rules.hours_config import Hours
from rules.types import Period

LONDON = ZoneInfo("Europe/London")
CLOCK = SupportClock()


def london(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A London wall-clock instant."""
    return datetime(year, month, day, hour, minute, tzinfo=LONDON)


# Mondays in winter (GMT) and summer (BST).
GMT_MONDAY = (2026, 1, 12)
BST_MONDAY = (2026, 7, 13)


@pytest.mark.parametrize("monday", [GMT_MONDAY, BST_MONDAY], ids=["GMT", "BST"])
@pytest.mark.parametrize(
    ("hour", "minute", "period"),
    [
        (8, 59, Period.OOH_OVERNIGHT),
        (9, 0, Period.IN_HOURS),
        (16, 59, Period.IN_HOURS),
        (17, 0, Period.OOH_OVERNIGHT),
        (0, 0, Period.OOH_OVERNIGHT),
    ],
)
def test_weekday_boundaries(
    monday: tuple[int, int, int], hour: int, minute: int, period: Period
) -> None:
    """On a Monday, 09:00 up to (not including) 17:00 London time is in hours, else overnight."""
    assert CLOCK.period_at(london(*monday, hour, minute)) is period


@pytest.mark.parametrize(
    ("instant", "period"),
    [
        (london(2026, 1, 17, 10, 0), Period.OOH_WAKING),  # Saturday
        (london(2026, 7, 18, 10, 0), Period.OOH_WAKING),  # Saturday in BST
        (london(2026, 1, 17, 8, 59), Period.OOH_OVERNIGHT),
        (london(2026, 1, 17, 17, 0), Period.OOH_OVERNIGHT),
        (london(2026, 1, 18, 3, 0), Period.OOH_OVERNIGHT),  # Sunday 03:00
        (london(2026, 12, 25, 10, 0), Period.OOH_WAKING),  # Christmas Day, a Friday
        (london(2026, 8, 31, 10, 0), Period.OOH_WAKING),  # Late Summer Bank Holiday, a Monday
        (london(2026, 12, 28, 10, 0), Period.OOH_WAKING),  # Boxing Day (substitute day)
        (london(2026, 12, 29, 10, 0), Period.IN_HOURS),
    ],
)
def test_weekends_and_bank_holidays(instant: datetime, period: Period) -> None:
    """Weekends and England-and-Wales bank holidays are waking 09:00–17:00, overnight otherwise."""
    assert CLOCK.period_at(instant) is period


def test_period_uses_local_time_not_utc() -> None:
    """08:30 UTC is 09:30 BST (in hours) in summer but 08:30 GMT (overnight) in winter."""
    assert CLOCK.period_at(datetime(2026, 7, 13, 8, 30, tzinfo=UTC)) is Period.IN_HOURS
    assert CLOCK.period_at(datetime(2026, 1, 12, 8, 30, tzinfo=UTC)) is Period.OOH_OVERNIGHT


def test_is_in_hours_matches_period() -> None:
    """is_in_hours is True exactly for the in-hours period."""
    assert CLOCK.is_in_hours(london(2026, 1, 12, 9, 0))
    assert not CLOCK.is_in_hours(london(2026, 1, 17, 10, 0))


def test_next_in_hours_start_is_now_when_in_hours() -> None:
    """In hours, work can start now; the answer is the same instant, in UTC."""
    now = london(2026, 1, 13, 11, 15)
    start = CLOCK.next_in_hours_start(now)
    assert start == now
    assert start.tzinfo is UTC


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (london(2026, 1, 16, 17, 0), london(2026, 1, 19, 9, 0)),  # Friday close → Monday
        (london(2026, 1, 13, 6, 0), london(2026, 1, 13, 9, 0)),  # early morning → same day
        (london(2026, 12, 24, 17, 0), london(2026, 12, 29, 9, 0)),  # past Christmas closures
        (london(2026, 3, 28, 12, 0), london(2026, 3, 30, 9, 0)),  # over the clocks going forward
    ],
)
def test_next_in_hours_start(now: datetime, expected: datetime) -> None:
    """Out of hours, the next in-hours start skips nights, weekends and bank holidays."""
    assert CLOCK.next_in_hours_start(now) == expected


@pytest.mark.parametrize(
    ("start", "minutes", "expected"),
    [
        (london(2025, 11, 22, 3, 0), 30, london(2025, 11, 24, 9, 30)),  # Sat 03:00
        (london(2026, 1, 13, 10, 0), 30, london(2026, 1, 13, 10, 30)),
        (london(2026, 1, 13, 16, 30), 60, london(2026, 1, 14, 9, 30)),
        (london(2026, 1, 13, 16, 0), 60, london(2026, 1, 13, 17, 0)),  # lands on the close
        (london(2026, 1, 13, 20, 0), 0, london(2026, 1, 14, 9, 0)),  # 0 minutes out of hours
        (london(2026, 1, 13, 12, 0), 0, london(2026, 1, 13, 12, 0)),
        (london(2026, 1, 16, 16, 0), 120, london(2026, 1, 19, 10, 0)),  # over a weekend
    ],
)
def test_add_business_minutes(start: datetime, minutes: int, expected: datetime) -> None:
    """Only in-hours minutes count; out-of-hours starts begin at the next in-hours start."""
    result = CLOCK.add_business_minutes(start, minutes)
    assert result == expected
    assert result.tzinfo is UTC


@pytest.mark.parametrize(
    ("start", "days", "expected"),
    [
        (london(2026, 1, 13, 10, 0), 1, london(2026, 1, 14, 10, 0)),  # Tue → Wed
        (london(2026, 1, 16, 16, 0), 1, london(2026, 1, 19, 16, 0)),  # Fri → Mon
        (london(2026, 1, 16, 16, 0), 2, london(2026, 1, 20, 16, 0)),
        (london(2026, 8, 28, 10, 0), 1, london(2026, 9, 1, 10, 0)),  # over a bank holiday
        (london(2026, 3, 27, 10, 0), 1, london(2026, 3, 30, 10, 0)),  # GMT → BST
        (london(2026, 10, 23, 10, 0), 1, london(2026, 10, 26, 10, 0)),  # BST → GMT
        (london(2026, 1, 17, 3, 0), 1, london(2026, 1, 19, 17, 0)),  # Saturday night
        (london(2026, 1, 13, 10, 0), 0, london(2026, 1, 13, 10, 0)),
    ],
)
def test_add_business_days(start: datetime, days: int, expected: datetime) -> None:
    """A business day is one in-hours day of business minutes, skipping closures, across DST."""
    assert CLOCK.add_business_days(start, days) == expected


def test_negative_amounts_are_rejected() -> None:
    """Negative minutes or days are a programming error."""
    with pytest.raises(ValueError, match="negative"):
        CLOCK.add_business_minutes(london(2026, 1, 13, 10, 0), -1)
    with pytest.raises(ValueError, match="negative"):
        CLOCK.add_business_days(london(2026, 1, 13, 10, 0), -1)


@pytest.mark.parametrize(
    "call",
    [
        CLOCK.period_at,
        CLOCK.is_in_hours,
        CLOCK.next_in_hours_start,
        lambda now: CLOCK.add_business_minutes(now, 10),
        lambda now: CLOCK.add_business_days(now, 1),
    ],
    ids=["period_at", "is_in_hours", "next_in_hours_start", "add_minutes", "add_days"],
)
def test_naive_datetimes_are_rejected(call: object) -> None:
    """Every method refuses a naive datetime with ValueError."""
    assert callable(call)
    with pytest.raises(ValueError, match="timezone-aware"):
        call(datetime(2026, 1, 13, 10, 0))


MOJ = SupportClock(
    Hours.model_validate(
        {
            "in_hours": {"start": "10:00", "end": "17:00"},
            "waking": {
                "working_days": [
                    {"start": "07:00", "end": "10:00"},
                    {"start": "17:00", "end": "22:00"},
                ],
                "non_working_days": [{"start": "07:00", "end": "22:00"}],
            },
        }
    )
)


@pytest.mark.parametrize(
    ("instant", "period"),
    [
        (london(2026, 1, 12, 6, 59), Period.OOH_OVERNIGHT),
        (london(2026, 1, 12, 7, 0), Period.OOH_WAKING),
        (london(2026, 1, 12, 9, 30), Period.OOH_WAKING),
        (london(2026, 1, 12, 10, 0), Period.IN_HOURS),
        (london(2026, 1, 12, 17, 0), Period.OOH_WAKING),
        (london(2026, 1, 12, 22, 0), Period.OOH_OVERNIGHT),
        (london(2026, 1, 17, 7, 30), Period.OOH_WAKING),
        (london(2026, 1, 17, 21, 59), Period.OOH_WAKING),
    ],
)
def test_moj_style_hours(instant: datetime, period: Period) -> None:
    """10–17 in hours, on-call 07–10 and 17–22 on weekdays and 07–22 at weekends, is expressible."""
    assert MOJ.period_at(instant) is period


def test_moj_business_day_is_seven_hours() -> None:
    """With 10:00–17:00 hours, a business day is 420 minutes and work starts at 10:00."""
    assert MOJ.business_day == timedelta(minutes=420)
    assert MOJ.add_business_days(london(2026, 1, 13, 10, 30), 1) == london(2026, 1, 14, 10, 30)
    assert MOJ.add_business_minutes(london(2026, 1, 12, 9, 30), 30) == london(2026, 1, 12, 10, 30)


def test_bank_holidays_can_be_switched_off() -> None:
    """With no bank-holiday calendar, Christmas Day on a weekday is an ordinary working day."""
    clock = SupportClock(Hours.model_validate({"bank_holidays": {"country": ""}}))
    assert clock.period_at(london(2026, 12, 25, 10, 0)) is Period.IN_HOURS


def test_other_time_zone() -> None:
    """Hours are local to the configured zone, whatever zone the input instant is in."""
    clock = SupportClock(
        Hours.model_validate(
            {"timezone": "America/New_York", "bank_holidays": {"country": "US", "subdivision": ""}}
        )
    )
    assert clock.period_at(datetime(2026, 1, 13, 14, 0, tzinfo=UTC)) is Period.IN_HOURS  # 09:00
    assert clock.period_at(datetime(2026, 1, 13, 13, 59, tzinfo=UTC)) is Period.OOH_OVERNIGHT


# --- properties -------------------------------------------------------------------------

ZONES = st.sampled_from([UTC, LONDON, ZoneInfo("America/New_York"), ZoneInfo("Australia/Sydney")])
INSTANTS = st.datetimes(
    min_value=datetime(2024, 1, 1),
    max_value=datetime(2030, 12, 31),
    timezones=ZONES,
    allow_imaginary=False,
)
# The oracle below lists bank holidays by hand for these years only.
INSTANTS_TO_2026 = st.datetimes(
    min_value=datetime(2024, 1, 2),
    max_value=datetime(2026, 12, 30),
    timezones=ZONES,
    allow_imaginary=False,
)
MINUTES = st.integers(min_value=0, max_value=5000)
PROPERTY = settings(deadline=None, max_examples=200, database=None)


def _at_in_hours_end(instant: datetime) -> bool:
    """True when the instant is exactly 17:00 London time on a working day."""
    local = instant.astimezone(LONDON)
    return local.time() == time(17, 0) and CLOCK.is_working_day(local.date())


def _oracle_period(instant: datetime) -> Period:
    """The manual's definition, written independently of SupportClock."""
    local = instant.astimezone(LONDON)
    working = local.weekday() < 5 and local.date() not in _BANK_HOLIDAYS
    if 9 <= local.hour < 17:
        return Period.IN_HOURS if working else Period.OOH_WAKING
    return Period.OOH_OVERNIGHT


_BANK_HOLIDAYS = {
    date(2024, 1, 1), date(2024, 3, 29), date(2024, 4, 1), date(2024, 5, 6), date(2024, 5, 27),
    date(2024, 8, 26), date(2024, 12, 25), date(2024, 12, 26),
    date(2025, 1, 1), date(2025, 4, 18), date(2025, 4, 21), date(2025, 5, 5), date(2025, 5, 26),
    date(2025, 8, 25), date(2025, 12, 25), date(2025, 12, 26),
    date(2026, 1, 1), date(2026, 4, 3), date(2026, 4, 6), date(2026, 5, 4), date(2026, 5, 25),
    date(2026, 8, 31), date(2026, 12, 25), date(2026, 12, 28),
}  # fmt: skip


@PROPERTY
@given(start=INSTANTS, minutes=MINUTES)
def test_property_result_in_hours_or_at_close(start: datetime, minutes: int) -> None:
    """add_business_minutes lands in hours or exactly on an in-hours close, never before start."""
    result = CLOCK.add_business_minutes(start, minutes)
    assert CLOCK.is_in_hours(result) or _at_in_hours_end(result)
    assert result >= start
    assert result - start >= timedelta(minutes=minutes)


@PROPERTY
@given(start=INSTANTS, a=MINUTES, b=MINUTES)
def test_property_monotonic(start: datetime, a: int, b: int) -> None:
    """More business minutes never give an earlier deadline."""
    low, high = sorted((a, b))
    assert CLOCK.add_business_minutes(start, low) <= CLOCK.add_business_minutes(start, high)


@PROPERTY
@given(start=INSTANTS, a=MINUTES, b=MINUTES)
def test_property_additive(start: datetime, a: int, b: int) -> None:
    """add(add(s, a), b) == add(s, a + b), except that adding 0 at a close moves to the next start.

    When add(s, a) lands exactly on an in-hours close (e.g. 17:00) that instant is out of
    hours, so add(it, 0) is the next in-hours start while add(s, a + 0) is the close itself.
    For b > 0 both sides continue from the next in-hours start and agree.
    """
    middle = CLOCK.add_business_minutes(start, a)
    twice = CLOCK.add_business_minutes(middle, b)
    if b > 0 or CLOCK.is_in_hours(middle):
        assert twice == CLOCK.add_business_minutes(start, a + b)
    else:
        assert twice == CLOCK.next_in_hours_start(middle)


@PROPERTY
@given(start=INSTANTS, days=st.integers(min_value=0, max_value=15))
def test_property_days_are_minutes(start: datetime, days: int) -> None:
    """A business day is exactly one in-hours day (480 minutes) of business minutes."""
    expected = CLOCK.add_business_minutes(start, days * 480)
    assert CLOCK.add_business_days(start, days) == expected


@PROPERTY
@given(now=INSTANTS)
def test_property_next_start(now: datetime) -> None:
    """The next in-hours start is in hours, not before now, and equals adding 0 minutes."""
    start = CLOCK.next_in_hours_start(now)
    assert CLOCK.is_in_hours(start)
    assert start >= now
    assert start == CLOCK.add_business_minutes(now, 0)


@PROPERTY
@given(now=INSTANTS_TO_2026)
def test_property_period_matches_manual(now: datetime) -> None:
    """period_at agrees with the manual's definition and with is_in_hours."""
    period = CLOCK.period_at(now)
    assert period is _oracle_period(now)
    assert CLOCK.is_in_hours(now) == (period is Period.IN_HOURS)
