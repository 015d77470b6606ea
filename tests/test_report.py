"""The incident report draft and the clocks `incidents show` displays, from a timeline."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.cli.commands import main
from gateway.domain import Status, TimelineEvent
from gateway.plan.report import clock_lines, clocks, render_report
from rules.book import default_rulebook
from rules.types import Priority
from tests.conftest import IN_HOURS
from tests.test_scheduler import incident, open_p1

BOOK = default_rulebook()


def timeline() -> tuple[TimelineEvent, ...]:
    t = IN_HOURS
    return (
        TimelineEvent(t, "reported", "alice@tenant.example", "Reported by email"),
        TimelineEvent(t, "triaged", "rules", "P1: P1 by rule 'apps-5xx'"),
        TimelineEvent(t + timedelta(minutes=25), "command.ack", "@eng:x", "!ack"),
        TimelineEvent(t + timedelta(minutes=30), "command.sev", "@eng:x", "!sev P2 one app"),
        TimelineEvent(t + timedelta(minutes=40), "command.update", "@eng:x", "!update Fixing"),
        TimelineEvent(
            t + timedelta(minutes=41),
            "replied",
            "gateway",
            "Update emailed to alice@tenant.example",
        ),
        TimelineEvent(
            t + timedelta(minutes=50),
            "command.note",
            "@eng:x",
            "!note add an alert on *router* 5xx",
        ),
        TimelineEvent(t + timedelta(minutes=90), "command.resolve", "@eng:x", "!resolve done"),
    )


def test_clocks_judge_each_promise() -> None:
    """Acknowledged after respond-by: the response missed; the update sent before its due
    time: met; a resolved incident has no running clock."""
    inc = replace(incident(), timeline=timeline(), status=Status.RESOLVED)
    verdicts = clocks(inc, BOOK, IN_HOURS + timedelta(hours=3))
    assert [(v.name, v.state) for v in verdicts] == [("response", "missed"), ("update 1", "met")]
    lines = clock_lines(inc, BOOK, IN_HOURS + timedelta(hours=3))
    assert lines[0] == (
        "response due Mon 23 Nov 10:20: missed (acknowledged Mon 23 Nov 10:25, 5 min late)"
    )


def test_open_incident_shows_the_running_clock() -> None:
    """An open incident ends with the next update promise, running or overdue."""
    inc = incident()
    assert clock_lines(inc, BOOK, IN_HOURS + timedelta(minutes=30))[-1] == (
        "update 1 due Mon 23 Nov 11:00: running (30 min left)"
    )
    assert clock_lines(inc, BOOK, IN_HOURS + timedelta(minutes=90))[-1] == (
        "update 1 due Mon 23 Nov 11:00: overdue by 30 min"
    )


def test_report_sections() -> None:
    """The draft has every section; follow-ups come from !note lines, Markdown neutralised."""
    inc = replace(incident(), timeline=timeline(), status=Status.RESOLVED)
    text = render_report(inc, BOOK, IN_HOURS + timedelta(hours=3))
    for heading in (
        "## Summary",
        "## Priority history",
        "## Impact as reported",
        "## Timeline",
        "## Actions",
        "## Reporters notified",
        "## SLA",
        "## Follow-ups",
    ):
        assert heading in text
    assert "- Mon 23 Nov 10:30: P2 (@eng:x: one app)" in text
    assert "- [ ] add an alert on \\*router\\* 5xx (@eng:x, Mon 23 Nov 10:50)" in text
    assert "- Mon 23 Nov 10:41: Update emailed to alice@tenant.example" in text
    assert "response due Mon 23 Nov 10:20: missed" in text
    assert "NOT FOR PUBLICATION" not in text


def test_security_incident_is_not_for_publication() -> None:
    """An incident triaged by the security rule is marked not for publication."""
    inc = replace(incident(Priority.P1), rule="security-breach")
    assert "NOT FOR PUBLICATION" in render_report(inc, BOOK, IN_HOURS)


def test_cli_show_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`incidents show` lists the clocks; `incidents report` writes the Markdown draft;
    an unknown reference exits 2."""
    open_p1(tmp_path / "gateway.sqlite3")
    config = tmp_path / "gateway.toml"
    config.write_text(f'[state]\ndir = "{tmp_path}"\n')
    with pytest.raises(SystemExit) as shown:
        main(["incidents", "show", "INC-1", "--config", str(config)])
    assert shown.value.code == 0
    assert "clocks:\n    response due Mon 23 Nov 10:20:" in capsys.readouterr().out
    out = tmp_path / "INC-1.md"
    with pytest.raises(SystemExit) as written:
        main(["incidents", "report", "INC-1", "--output", str(out), "--config", str(config)])
    assert written.value.code == 0
    assert out.read_text().startswith("# INC-1: Our site is down\n")
    with pytest.raises(SystemExit) as unknown:
        main(["incidents", "report", "INC-9", "--config", str(config)])
    assert unknown.value.code == 2
