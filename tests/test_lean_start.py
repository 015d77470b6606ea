"""What start-up and the parse child load: the daemon imports no optional library it is not
configured for before READY, the status endpoint's port is taken before its HTTP server is
loaded (clients wait, never refused), and neither the daemon (bank holidays from a helper
process) nor the parse child (precomputed dates, rules compiled there) imports `holidays`
(bench/ready_time.py and bench/rss_incidents.py measure the time and memory this saves)."""

from __future__ import annotations

import asyncio
import json
import pickle
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.http_status import StatusServer
from gateway.config.bank_holidays import helper_dates, in_process
from gateway.parse.child import MailJob, prepare
from rules.book import RulebookError, default_rulebook, default_rulebook_text, load_rulebook
from rules.hours import SupportClock
from rules.hours_config import Hours
from rules.types import Mailbox

ROOT = Path(__file__).resolve().parent.parent

# Libraries a daemon with the embedded defaults needs neither to start nor to be READY.
OPTIONAL = (
    "aiohttp",
    "aiosmtplib",
    "nio",
    "aioimaplib",
    "psycopg",
    "dkim",
    "dns",
    "gateway.parse.alert_payloads",
    "holidays.countries",
)


def _modules_after(code: str, stdin: bytes = b"") -> dict[str, Any]:
    """Run `code` in a fresh interpreter from the source tree; it prints a JSON object."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=stdin,
        capture_output=True,
        cwd=ROOT,
        check=True,
        timeout=60,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_importing_the_command_line_loads_no_optional_library() -> None:
    """`import gateway.cli.commands` (every command's code) loads none of the libraries that
    only a configured link or the first message of a kind needs."""
    found = _modules_after(
        "import json, sys, gateway.cli.commands\n"
        f"print(json.dumps({{'loaded': [m for m in {OPTIONAL!r} if m in sys.modules]}}))"
    )
    assert found["loaded"] == []


def test_parse_child_triages_without_importing_holidays() -> None:
    """The rulebook as the sandbox sends it (pickled) triages a report on a bank holiday in
    a fresh interpreter exactly as in this process, and that interpreter never imports
    `holidays`, aiohttp, asyncio or structlog."""
    book = default_rulebook()
    christmas = datetime(datetime.now(UTC).year, 12, 25, 10, tzinfo=UTC)
    raw = (
        b"From: ops@tenant.example\r\nTo: emergency@localhost\r\nSubject: site down\r\n\r\n"
        b"Our site is down, every request returns a 500 error.\r\n"
    )
    job = MailJob(raw, "ops@tenant.example", Mailbox.EMERGENCY)
    here = prepare(job, christmas, book)
    assert here.decision is not None
    code = (
        "import json, pickle, sys\n"
        "from gateway.parse import child\n"
        "book, job, now = pickle.loads(sys.stdin.buffer.read())\n"
        "child.warm(book)\n"
        "d = child.prepare(job, now, book).decision\n"
        "libs = ('holidays', 'aiohttp', 'asyncio', 'structlog')\n"
        "print(json.dumps({'priority': d.priority.value, 'period': d.period.value,\n"
        "    'loaded': [m for m in libs if m in sys.modules]}))"
    )
    there = _modules_after(code, pickle.dumps((book.compiled, job, christmas)))
    assert there == {
        "priority": here.decision.priority.value,
        "period": here.decision.period.value,
        "loaded": [],
    }
    assert there["period"] != "in_hours"  # Christmas Day is a bank holiday


def test_pickled_clock_keeps_every_bank_holiday() -> None:
    """A support clock that crossed the pipe (bank holidays as precomputed dates near now,
    the full calendar beyond) agrees with the original on every day of 25 years, for a
    calendar with a subdivision, another country, and bank holidays switched off."""
    for bank_holidays in (
        {"country": "GB", "subdivision": "ENG"},
        {"country": "US", "subdivision": "CA"},
        {"country": ""},
    ):
        clock = SupportClock(Hours.model_validate({"bank_holidays": bank_holidays}))
        copy = pickle.loads(pickle.dumps(clock))
        day, end, differ = date(2015, 1, 1), date(2040, 1, 1), []
        while day < end:
            if clock.is_working_day(day) != copy.is_working_day(day):
                differ.append(day)
            day += timedelta(days=1)
        assert differ == [], bank_holidays


def test_rule_conditions_compile_on_first_use_and_triage_the_same() -> None:
    """The rulebook's compiled form pickles without compiled conditions, whether they were
    compiled here or not (the daemon never sends what the child compiles itself), and
    compiled after the pipe, they triage every report as before."""
    fresh = load_rulebook(default_rulebook_text())
    compiled = load_rulebook(default_rulebook_text())
    for rule in compiled.rules:
        assert rule.matcher is rule.matcher  # compiled once, then kept
    assert len(pickle.dumps(fresh.compiled)) == len(pickle.dumps(compiled.compiled))
    copy = pickle.loads(pickle.dumps(fresh.compiled))
    assert all("matcher" not in vars(rule) for rule in copy.rules)
    now = datetime(2026, 3, 4, 11, tzinfo=UTC)
    for subject, body in (
        ("site down", "Our site is down, every request returns a 500 error."),
        ("question", "How do I rotate my database credentials?"),
        ("security", "We think an access key of ours leaked publicly."),
    ):
        raw = f"From: a@tenant.example\r\nSubject: {subject}\r\n\r\n{body}\r\n".encode()
        job = MailJob(raw, "a@tenant.example", Mailbox.EMERGENCY)
        assert prepare(job, now, copy).decision == prepare(job, now, compiled).decision


async def _report() -> dict[str, Any]:
    return {"healthy": True}


async def _metrics() -> str:
    return "up 1\n"


async def test_status_port_is_taken_before_serving_and_early_clients_are_answered() -> None:
    """`bind` takes the port without loading the HTTP server; a client that connects and
    asks before `serve` is not refused and gets its 200 once serving starts."""
    server = StatusServer(_report, _metrics, host="127.0.0.1", port=0)
    server.bind()
    try:
        assert server.port
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        early = asyncio.create_task(reader.read())
        await asyncio.sleep(0.05)
        assert not early.done()  # waiting in the backlog, not refused
        await server.serve()
        answer = await asyncio.wait_for(early, 30)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200")
        assert b'"healthy": true' in answer
    finally:
        await server.stop()


async def test_status_port_bound_but_never_served_is_released() -> None:
    """Stopping a status endpoint that was bound but never served frees its port."""
    server = StatusServer(_report, _metrics, host="127.0.0.1", port=0)
    server.bind()
    port = server.port
    await server.stop()
    again = StatusServer(_report, _metrics, host="127.0.0.1", port=port or 0)
    again.bind()
    assert again.port == port
    await again.stop()


def test_run_path_rulebook_never_imports_holidays() -> None:
    """The rulebook as `run` loads it (bank holidays from the helper process) knows
    Christmas Day is a bank holiday, and the daemon's interpreter never imported `holidays`."""
    found = _modules_after(
        "import json, sys\n"
        "from datetime import date\n"
        "from gateway.cli.commands import load_rules\n"
        "from gateway.config.bank_holidays import helper_dates\n"
        "book = load_rules(None, helper_dates)\n"
        "y = date.today().year\n"
        "print(json.dumps({'christmas_off': not book.clock.is_working_day(date(y, 12, 25)),\n"
        "    'loaded': 'holidays' in sys.modules}))"
    )
    assert found == {"christmas_off": True, "loaded": False}


def test_helper_dates_match_the_calendar_and_refuse_an_unknown_one() -> None:
    """The helper process's dates are the `holidays` calendar's for the years around now,
    and a calendar that does not exist refuses the rulebook as in-process validation does."""
    days, years = helper_dates("US", "CA")
    assert frozenset(days) == in_process("US", "CA", years)
    assert date(years.start, 12, 25) in days
    unknown = default_rulebook_text().replace('subdivision = "ENG"', 'subdivision = "XXX"')
    errors = []
    for dates in (None, helper_dates):
        with pytest.raises(RulebookError) as caught:
            load_rulebook(unknown, dates)
        errors.append(caught.value.errors)
    assert errors[0] == errors[1]
    assert any("no bank-holiday calendar" in e for e in errors[0])


def test_clock_from_helper_dates_agrees_with_the_calendar() -> None:
    """A rulebook loaded with the helper's dates has a clock that agrees with the
    in-process calendar on every day of 25 years (beyond the dates: the calendar itself)."""
    text = default_rulebook_text().replace('country = "GB"', 'country = "DE"')
    text = text.replace('subdivision = "ENG"', 'subdivision = "BY"')
    made, here = load_rulebook(text, helper_dates).clock, load_rulebook(text).clock
    day, differ = date(2015, 1, 1), []
    while day < date(2040, 1, 1):
        if made.is_working_day(day) != here.is_working_day(day):
            differ.append(day)
        day += timedelta(days=1)
    assert differ == []
