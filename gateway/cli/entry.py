"""The `chatops-gateway` command's entry point (and `python -m gateway`'s).

Start-up allocates about 90,000 objects (modules, classes, pydantic schemas) and frees
almost none: the garbage collector, running every 700 allocations, only walks them again
and again (about a tenth of the daemon's time to READY). It is off from here until the
daemon has started (gateway.app turns it back on after READY=1, once what start-up built
is frozen out of later collections); a one-shot command runs without it and exits.

`run` also starts the bank-holiday helper (gateway.config.bank_holidays) for the default
calendar here, before the daemon's imports: it takes about as long as they do, and the
parse child's rulebook carries its dates, so started later it was waited for just before
READY. A rulebook with another calendar starts its own helper when it is loaded.
"""

from __future__ import annotations

import gc
import sys


def main() -> None:
    """Run the command line with garbage collection off during start-up."""
    gc.disable()
    if sys.argv[1:2] == ["run"]:
        from gateway.config.bank_holidays import helper_dates  # noqa: PLC0415  (light)
        from rules.support_hours import HolidayCalendar  # noqa: PLC0415  (light)

        helper_dates(HolidayCalendar.country, HolidayCalendar.subdivision)
    from gateway.cli.commands import main as command  # noqa: PLC0415  (after gc.disable)

    command()
