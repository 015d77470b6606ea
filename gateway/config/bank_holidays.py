"""Bank-holiday dates made in a short-lived helper process, so the daemon never imports
`holidays`.

The `holidays` package defines every country's calendar in one package (importing one
imports them all): about 17 MB of resident memory and 60 ms of start-up that the daemon
would keep for its whole life to answer "is this day a bank holiday". `run` instead asks
`python -m gateway.config.bank_holidays COUNTRY SUBDIVISION FIRST LAST` for the dates of
the years around now (rules.hours.holiday_years) and holds only those (rules.hours
.HolidayDates; a day outside them loads the calendar in-process then). The helper runs
while the daemon goes on starting: its answer is waited for when first used. It also
answers whether the calendar exists at all, so an unknown one still refuses the start
(validation waits for that answer; the default calendar is known to exist).

If the helper cannot answer (it crashed, timed out, or its output is unreadable), the
dates are made in-process as before: slower and larger, never wrong. `check-config` and
the other commands validate in-process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Collection, Iterator
from datetime import UTC, date, datetime
from functools import cache
from typing import Any

# The helper process imports only this module and `holidays`: the daemon's side of it
# (logging, the rulebook's year span) is imported where it runs.

_TIMEOUT_S = 60.0  # a loaded host can be slow to start an interpreter; in-process after
_UNKNOWN = 3  # the helper's exit status for a calendar that does not exist


@cache
def helper_dates(country: str, subdivision: str) -> tuple[Collection[date], range]:
    """The bank holidays of `country`/`subdivision` for the years around now, and those
    years. The helper process starts now and the dates are waited for on first use, so it
    runs while the daemon goes on starting; using them raises NotImplementedError when no
    such calendar exists (rulebook validation asks at once)."""
    from rules.hours import holiday_years  # noqa: PLC0415  (see the imports)

    years = holiday_years(datetime.now(UTC))
    return _Answer(country, subdivision, years), years


class _Answer(Collection[date]):
    """The helper's dates, waited for (once, under a lock) when first used."""

    def __init__(self, country: str, subdivision: str, years: range) -> None:
        self._country, self._subdivision, self._years = country, subdivision, years
        self._lock = threading.Lock()
        self._days: frozenset[date] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        command = [sys.executable, "-m", "gateway.config.bank_holidays", country, subdivision]
        command += [str(years.start), str(years.stop - 1)]
        try:
            self._proc = subprocess.Popen(  # noqa: S603  (our interpreter, rulebook's words)
                command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
        except OSError as exc:
            _warn(error=type(exc).__name__)

    def days(self) -> frozenset[date]:
        """The dates (waits for the helper the first time)."""
        with self._lock:
            if self._days is None:
                self._days = self._wait()
            return self._days

    def _wait(self) -> frozenset[date]:
        proc = self._proc
        if proc is not None:
            try:
                out, _ = proc.communicate(timeout=_TIMEOUT_S)
                if proc.returncode == _UNKNOWN:
                    raise NotImplementedError(f"no calendar {self._country} {self._subdivision}")
                if proc.returncode == 0:
                    return frozenset(date.fromisoformat(d) for d in json.loads(out))
                _warn(status=proc.returncode)
            except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
                proc.kill()
                proc.wait()
                _warn(error=type(exc).__name__)
        return in_process(self._country, self._subdivision, self._years)

    def __contains__(self, day: object) -> bool:
        return day in self.days()

    def __iter__(self) -> Iterator[date]:
        return iter(self.days())

    def __len__(self) -> int:
        return len(self.days())

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (to the parse child) as the plain set of dates."""
        return (frozenset, (tuple(self.days()),))


def _warn(**why: Any) -> None:
    import structlog  # noqa: PLC0415  (see the imports)

    structlog.get_logger("gateway.config.bank_holidays").warning("holidays.helper_failed", **why)


def in_process(country: str, subdivision: str, years: range) -> frozenset[date]:
    """The same dates, made here (imports `holidays`); NotImplementedError if unknown."""
    import holidays  # noqa: PLC0415  (the point of this module is not to need it)

    calendar = holidays.country_holidays(country, subdiv=subdivision or None, years=years)
    return frozenset(day for day in calendar if day.year in years)


def main(argv: list[str]) -> int:
    """Print the dates as a JSON list; exit 3 when the calendar does not exist."""
    country, subdivision, first, last = argv[1:5]
    try:
        days = in_process(country, subdivision, range(int(first), int(last) + 1))
    except NotImplementedError:
        return _UNKNOWN
    print(json.dumps(sorted(d.isoformat() for d in days)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
