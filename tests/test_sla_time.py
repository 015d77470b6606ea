"""Properties of the business-time arithmetic behind the SLA clocks: monotonic, additive,
never landing outside support hours, right across BST/GMT changes, bank holidays, weekends,
reports at exactly 09:00 or 17:00, and very long gaps."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from rules.book import default_rulebook
from rules.engine import next_update_due, respond_due
from rules.hours import SupportClock
from rules.hours_config import Hours, TimeWindow
from rules.sla import business_minutes_between, closing_before, last_closing, last_opening
from rules.types import Priority

LONDON = ZoneInfo("Europe/London")
GOVUK = SupportClock()
MOJ = SupportClock(Hours(in_hours=TimeWindow(start=time(10), end=time(17))))
CLOCKS = st.sampled_from([GOVUK, MOJ])
# Days that stress the calendar: DST changes, Easter, Christmas and New Year bank holidays.
SPECIAL_DAYS = [
    date(2026, 3, 29),
    date(2026, 10, 25),
    date(2027, 3, 28),
    date(2026, 4, 3),
    date(2026, 4, 6),
    date(2026, 12, 24),
    date(2026, 12, 25),
    date(2026, 12, 28),
    date(2027, 1, 1),
    date(2026, 5, 4),
    date(2026, 8, 31),
]
PROPS = settings(max_examples=150, deadline=None)


@st.composite
def instants(draw: st.DrawFn) -> datetime:
    """Any instant 2025–2028, often on a special day, often at exactly 09:00/10:00/17:00."""
    if draw(st.booleans()):
        day = draw(st.sampled_from(SPECIAL_DAYS)) + timedelta(days=draw(st.integers(-2, 2)))
    else:
        day = draw(st.dates(date(2025, 1, 1), date(2028, 12, 31)))
    if draw(st.booleans()):
        wall = draw(st.sampled_from([time(9), time(10), time(17), time(16, 59), time(8, 59)]))
    else:
        wall = time(draw(st.integers(0, 23)), draw(st.integers(0, 59)))
    return datetime.combine(day, wall, tzinfo=LONDON).astimezone(UTC)


MINUTES = st.integers(0, 480 * 30) | st.integers(0, 480 * 400)  # up to a year and more


def closes_at(clock: SupportClock, instant: datetime) -> bool:
    window = clock.in_hours_window(clock.local(instant).date())
    return window is not None and window[1] == instant


@PROPS
@given(CLOCKS, instants(), MINUTES, MINUTES)
def test_monotonic_in_minutes(clock: SupportClock, start: datetime, a: int, b: int) -> None:
    """More business minutes never give an earlier deadline."""
    lo, hi = sorted((a, b))
    assert clock.add_business_minutes(start, lo) <= clock.add_business_minutes(start, hi)


@PROPS
@given(CLOCKS, instants(), instants(), MINUTES)
def test_monotonic_in_start(clock: SupportClock, s1: datetime, s2: datetime, m: int) -> None:
    """A later report never gets an earlier deadline."""
    early, late = sorted((s1, s2))
    assert clock.add_business_minutes(early, m) <= clock.add_business_minutes(late, m)


@PROPS
@given(CLOCKS, instants(), st.integers(0, 480 * 20), st.integers(1, 480 * 20))
def test_additive(clock: SupportClock, start: datetime, a: int, b: int) -> None:
    """a minutes then b more is a+b minutes (b > 0: adding 0 at 17:00 means next morning)."""
    stepped = clock.add_business_minutes(clock.add_business_minutes(start, a), b)
    assert stepped == clock.add_business_minutes(start, a + b)


@PROPS
@given(CLOCKS, instants(), st.integers(1, 480 * 400))
def test_lands_in_business_hours(clock: SupportClock, start: datetime, m: int) -> None:
    """A deadline is inside support hours, or exactly at a working day's close."""
    due = clock.add_business_minutes(start, m)
    assert clock.is_in_hours(due) or closes_at(clock, due)
    assert due > start


@PROPS
@given(CLOCKS, instants(), MINUTES)
def test_measure_inverts_add(clock: SupportClock, start: datetime, m: int) -> None:
    """Business time between a start and its deadline is exactly the minutes added."""
    due = clock.add_business_minutes(start, m)
    assert business_minutes_between(clock, start, due) == m


@PROPS
@given(CLOCKS, instants(), instants(), instants())
def test_measure_is_additive(clock: SupportClock, a: datetime, b: datetime, c: datetime) -> None:
    """Business time from a to c is a→b plus b→c for a ≤ b ≤ c, and never exceeds wall time."""
    a, b, c = sorted((a, b, c))
    total = business_minutes_between(clock, a, c)
    assert total == business_minutes_between(clock, a, b) + business_minutes_between(clock, b, c)
    assert total <= (c - a).total_seconds() / 60


@PROPS
@given(CLOCKS, instants())
def test_openings_and_closings(clock: SupportClock, now: datetime) -> None:
    """The last opening and closing are at or before now, and nothing opened in between."""
    opening, closing = last_opening(clock, now), last_closing(clock, now)
    assert opening is not None and closing is not None
    assert opening <= now and closing <= now
    assert clock.local(opening).time() == clock.hours.in_hours.start
    assert clock.local(closing).time() == clock.hours.in_hours.end
    assert business_minutes_between(clock, opening, now) <= clock.hours.in_hours.minutes
    before = closing_before(clock, opening)
    assert before is not None and before < opening
    assert business_minutes_between(clock, before, opening) == 0


def at(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm), tzinfo=LONDON).astimezone(UTC)


def local(instant: datetime) -> tuple[date, time]:
    value = instant.astimezone(LONDON)
    return value.date(), value.time()


def test_boundaries_at_nine_and_five() -> None:
    """A P2 at exactly 09:00 is due 09:30; at exactly 17:00, 09:30 the next working day."""
    book = default_rulebook()
    monday = date(2026, 11, 23)
    assert local(respond_due(Priority.P2, at(monday, 9), book)) == (monday, time(9, 30))
    assert local(respond_due(Priority.P2, at(monday, 17), book)) == (
        date(2026, 11, 24),
        time(9, 30),
    )
    assert local(respond_due(Priority.P2, at(monday, 16, 59), book)) == (
        date(2026, 11, 24),
        time(9, 29),
    )


def test_weekend_bank_holiday_and_dst() -> None:
    """P4 on the Thursday before Easter (Good Friday and Easter Monday off, BST starts on the
    Sunday) is answered on the Tuesday at the same local time; its update two days later."""
    book = default_rulebook()
    thursday = date(2026, 4, 2)
    reported = at(thursday, 11)
    assert local(respond_due(Priority.P4, reported, book)) == (date(2026, 4, 7), time(11))
    assert local(next_update_due(Priority.P4, reported, book)) == (date(2026, 4, 8), time(11))


def test_wall_clock_targets_ignore_hours() -> None:
    """P1 targets run in wall time: 20 minutes in hours, 40 out of hours, across a DST change."""
    book = default_rulebook()
    assert respond_due(Priority.P1, at(date(2026, 11, 23), 10), book) == at(
        date(2026, 11, 23), 10, 20
    )
    # 00:50 GMT on the night BST starts: 40 minutes later is 02:30 BST (01:30 UTC).
    night = datetime(2026, 3, 29, 0, 50, tzinfo=UTC)
    assert respond_due(Priority.P1, night, book) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_very_long_gap_counts_working_days() -> None:
    """A whole year of business time counts 480 minutes per working day: 2027 has 261
    weekdays and 8 England-and-Wales bank holidays on weekdays, so 253 working days."""
    start, end = at(date(2027, 1, 1), 0), at(date(2028, 1, 1), 0)
    assert business_minutes_between(GOVUK, start, end) == 253 * 480
