"""Loading the rulebook: the shipped default, custom hours, and errors that name their path."""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from rules.book import (
    ClockKind,
    OohClass,
    PagePolicy,
    Rulebook,
    RulebookError,
    default_rulebook,
    default_rulebook_text,
    load_rulebook,
)
from rules.types import Mailbox, Period, Priority

LONDON = ZoneInfo("Europe/London")
# The shipped hours, priorities and mailbox tables, without the comment header or any rules.
BASE = "[hours]" + default_rulebook_text().split("\n[hours]", 1)[1].split("\n[[rule]]", 1)[0]

GOOD_RULE = """
[[rule]]
id = "down"
priority = "P1"
reason = "it is down"
words = ["down"]
examples = [{ subject = "site down", expect = "P1" }, { subject = "all down", expect = "P1" }]
"""


def errors_of(text: str) -> list[str]:
    """The errors a rulebook text produces (failing the test if it loads)."""
    with pytest.raises(RulebookError) as caught:
        load_rulebook(text)
    return caught.value.errors


def test_default_rulebook_loads_with_the_manual_values() -> None:
    """The shipped rulebook has the GOV.UK PaaS targets, paging and mailbox defaults."""
    book = default_rulebook()
    p1, p2, p4 = (book.priorities.get(p) for p in (Priority.P1, Priority.P2, Priority.P4))
    assert (p1.name, p1.page, p1.clock) == ("Critical incident", PagePolicy.ALWAYS, ClockKind.WALL)
    assert (p1.respond.minutes, p1.respond.out_of_hours_minutes, p1.update.minutes) == (20, 40, 60)
    assert (p2.page, p2.clock, p2.respond.minutes, p2.update.minutes) == (
        PagePolicy.IN_HOURS, ClockKind.BUSINESS, 30, 120,
    )  # fmt: skip
    assert (p4.respond.business_days, p4.update.business_days) == (1, 2)
    assert book.mailboxes.get(Mailbox.EMERGENCY).priority is Priority.P1
    assert book.mailboxes.get(Mailbox.SUPPORT).priority is Priority.P4
    assert book.hours.timezone == "Europe/London"


def test_default_rulebook_covers_the_four_out_of_hours_classes() -> None:
    """Each thing supported out of hours has at least one P1 rule."""
    book = default_rulebook()
    classes = {r.ooh_class for r in book.rules if r.priority is Priority.P1}
    assert classes == set(OohClass)


def test_default_rulebook_documents_its_format() -> None:
    """The shipped TOML starts with a comment header describing the format."""
    header = default_rulebook_text().split("\n[hours]", 1)[0]
    for key in ("[hours]", "[priority.P1]", "[mailbox.emergency]", "[[rule]]", "unless_words"):
        assert key in header


def test_minimal_rulebook_gets_default_hours() -> None:
    """Without an [hours] section the GOV.UK PaaS hours apply."""
    text = BASE.split("[hours]", 1)[0] + BASE.split("# Priorities", 1)[1].split("\n", 1)[1]
    book = load_rulebook(text + GOOD_RULE)
    assert book.hours.in_hours.start == time(9, 0)
    assert book.hours.working_days == ("mon", "tue", "wed", "thu", "fri")


def test_moj_hours_are_expressible() -> None:
    """A 10:00–17:00 team with weekday and weekend on-call windows loads and works."""
    hours = """
[hours]
timezone = "Europe/London"
working_days = ["Mon", "Tue", "Wed", "Thu", "Fri"]
in_hours = { start = "10:00", end = "17:00" }
[hours.waking]
working_days = [{ start = "07:00", end = "10:00" }, { start = "17:00", end = "22:00" }]
non_working_days = [{ start = 07:00:00, end = 22:00:00 }]
"""
    rest = BASE.split("# Priorities", 1)[1].split("\n", 1)[1]
    book = load_rulebook(hours + rest + GOOD_RULE)
    clock = book.clock
    assert clock.period_at(datetime(2026, 1, 12, 9, 30, tzinfo=LONDON)) is Period.OOH_WAKING
    assert clock.period_at(datetime(2026, 1, 12, 10, 0, tzinfo=LONDON)) is Period.IN_HOURS
    assert clock.period_at(datetime(2026, 1, 17, 21, 0, tzinfo=LONDON)) is Period.OOH_WAKING
    assert clock.period_at(datetime(2026, 1, 17, 23, 0, tzinfo=LONDON)) is Period.OOH_OVERNIGHT


def test_many_errors_are_reported_at_once_with_paths() -> None:
    """A bad regex, unknown priority, duplicate id, missing SLA and bad time zone: all reported."""
    text = (
        BASE.replace('timezone = "Europe/London"', 'timezone = "Europe/Londn"').replace(
            "[priority.P3]", "[priority.P3-typo]"
        )
        + GOOD_RULE
        + GOOD_RULE.replace('"P1"', '"P7"', 1).replace(
            'words = ["down"]', "patterns = ['(unclosed']"
        )
    )
    errors = errors_of(text)
    assert len(errors) == 6
    assert "priority.P3-typo: Extra inputs are not permitted" in errors
    assert "hours.timezone: unknown time zone 'Europe/Londn'" in errors
    assert "priority.P3: Field required" in errors
    assert "rule[1].priority: Input should be 'P1', 'P2', 'P3' or 'P4'" in errors
    assert any(e.startswith("rule[1].patterns[0]: invalid regular expression: ") for e in errors)
    assert "rule[1].id: duplicate id 'down', first used by rule[0]" in errors


def test_toml_syntax_error_gives_line_and_column() -> None:
    """Broken TOML becomes a RulebookError that says where."""
    errors = errors_of('[hours]\ntimezone = "Europe/London\n')
    assert len(errors) == 1
    assert errors[0].startswith("TOML syntax: ")
    assert "line 2" in errors[0]


def test_rulebook_error_is_a_value_error() -> None:
    """RulebookError is a ValueError whose message lists every error."""
    with pytest.raises(ValueError, match="unknown time zone"):
        load_rulebook(BASE.replace("Europe/London", "Mars/Olympus") + GOOD_RULE)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('start = "09:00"', 'start = "9am"'), 'hours.in_hours.start: expected a time as "HH:MM"'),
        (
            ('end = "17:00" }\n', 'end = "08:00" }\n'),
            "hours.in_hours: start 09:00 must be before end 08:00",
        ),
        (('"fri"]', '"fri", "fri"]'), "hours.working_days: a day is listed twice"),
        (
            ('subdivision = "ENG"', 'subdivision = "XYZ"'),
            "hours.bank_holidays: no bank-holiday calendar",
        ),
        (('page = "in_hours"', 'page = "sometimes"'), "priority.P2.page: Input should be 'always'"),
        (
            ("respond = { minutes = 30 }", "respond = { minutes = 30, business_days = 1 }"),
            "priority.P2.respond: give exactly one of minutes or business_days",
        ),
        (
            ("respond = { minutes = 30 }", "respond = { minutes = 30, out_of_hours_minutes = 60 }"),
            'priority.P2: out_of_hours_minutes needs clock = "wall"',
        ),
        (
            ("respond = { minutes = 120 }", "respond = { minutes = -5 }"),
            "priority.P3.respond.minutes: Input should be greater than 0",
        ),
        (
            ('priority = "P4"\nreason', 'priority = "P9"\nreason'),
            "mailbox.support.priority: Input should be",
        ),
    ],
)
def test_bad_sections_name_their_path(change: tuple[str, str], expected: str) -> None:
    """Each invalid value in hours, priorities or mailboxes is reported under its TOML path."""
    old, new = change
    assert old in BASE
    errors = errors_of(BASE.replace(old, new, 1) + GOOD_RULE)
    assert any(e.startswith(expected) for e in errors), errors


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('words = ["down"]', "words = []"), "rule[0]: a rule needs words, patterns"),
        (('words = ["down"]', 'words = ["--"]'), "rule[0].words[0]: a word must contain"),
        (
            ('words = ["down"]', "patterns = ['.*']"),
            "rule[0].patterns[0]: this regular expression matches empty",
        ),
        (
            ('words = ["down"]', "headers = { X-Foo = '[' }"),
            "rule[0].headers.X-Foo: invalid regular expression",
        ),
        (('words = ["down"]', 'word = ["down"]'), "rule[0].word: Extra inputs are not permitted"),
        (('id = "down"', 'id = "Down Rule"'), "rule[0].id: String should match pattern"),
        (
            ('reason = "it is down"', 'reason = "x"\nooh_class = "tea_time"'),
            "rule[0].ooh_class: Input should be",
        ),
        (
            ('{ subject = "all down", expect = "P1" }', ""),
            "rule[0].examples: a rule needs at least 2 examples",
        ),
        (
            ('{ subject = "all down", expect = "P1" }', '{ body = " ", expect = "P1" }'),
            "rule[0].examples[1]: an example needs a subject or a body",
        ),
        (
            ('{ subject = "all down", expect = "P1" }', '{ subject = "x", expect = "P0" }'),
            "rule[0].examples[1].expect: Input should be",
        ),
        (
            (
                '{ subject = "all down", expect = "P1" }',
                '{ subject = "x", mailbox = "other", expect = "P1" }',
            ),
            "rule[0].examples[1].mailbox: Input should be 'emergency' or 'support'",
        ),
    ],
)
def test_bad_rules_name_their_path(change: tuple[str, str], expected: str) -> None:
    """Each invalid rule field or example is reported under its TOML path."""
    old, new = change
    assert old in GOOD_RULE
    errors = errors_of(BASE + GOOD_RULE.replace(old, new, 1))
    assert any(e.startswith(expected) for e in errors), errors


def test_ooh_class_needs_a_priority_that_pages_out_of_hours() -> None:
    """An out-of-hours class on a P2 rule is a contradiction and is rejected."""
    rule = GOOD_RULE.replace('"P1"', '"P2"').replace("words", 'ooh_class = "live_app_p1"\nwords', 1)
    errors = errors_of(BASE + rule)
    assert errors == [
        "rule[0].ooh_class: P2 does not page out of hours (page = 'in_hours'): remove ooh_class"
    ]


def test_rulebook_is_frozen() -> None:
    """A loaded rulebook cannot be changed in place."""
    book = load_rulebook(BASE + GOOD_RULE)
    with pytest.raises(ValidationError):
        book.rules = ()


def test_rulebook_can_be_built_in_python() -> None:
    """Rulebook accepts field names as well as TOML keys, with the same checks."""
    base = default_rulebook()
    examples = [{"subject": "x", "expect": "P3"}, {"subject": "x x", "expect": "P3"}]
    rule = {"id": "x", "priority": "P3", "reason": "r", "words": ["x"], "examples": examples}
    fields = {"priorities": base.priorities, "mailboxes": base.mailboxes}
    book = Rulebook.model_validate({**fields, "rules": [rule]})
    assert book.rules[0].id == "x"
    with pytest.raises(ValidationError, match="duplicate id"):
        Rulebook.model_validate({**fields, "rules": [rule, rule]})


def test_error_messages_keep_the_input_verbatim() -> None:
    """Input quoted in an error message is shown as written, braces and all."""
    errors = errors_of(BASE.replace('start = "09:00"', 'start = "{9}"', 1) + GOOD_RULE)
    assert errors == ["hours.in_hours.start: expected a time as \"HH:MM\" (24-hour), got '{9}'"]
