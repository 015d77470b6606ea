"""A rulebook that extends the packaged default and changes only what differs, and how the
`[rules] file` of a configuration is found."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli.commands import main
from rules.book import RulebookError, default_rulebook, load_rulebook
from rules.types import Priority
from tests.conftest import email_bytes

DEFAULT = default_rulebook()


def test_extending_changes_only_the_targets_given() -> None:
    """Only P1's respond target changes; its name, paging, update target, the other
    priorities, the hours and every rule stay the packaged ones."""
    book = load_rulebook('extends = "default"\n\n[priority.P1]\nrespond = { minutes = 15 }\n')
    p1, default_p1 = book.priorities.get(Priority.P1), DEFAULT.priorities.get(Priority.P1)
    assert p1.respond.minutes == 15 and p1.respond.out_of_hours_minutes is None
    assert (p1.name, p1.page, p1.update) == (default_p1.name, default_p1.page, default_p1.update)
    assert book.priorities.get(Priority.P2) == DEFAULT.priorities.get(Priority.P2)
    assert book.hours == DEFAULT.hours
    assert [r.id for r in book.rules] == [r.id for r in DEFAULT.rules]


def test_extending_changes_hours_key_by_key() -> None:
    """`[hours] timezone` and the bank-holiday calendar alone: the working days, in-hours
    window and waking hours stay the default's; the calendar table is replaced whole."""
    book = load_rulebook(
        'extends = "default"\n[hours]\ntimezone = "Europe/Dublin"\n'
        '[hours.bank_holidays]\ncountry = "IE"\nsubdivision = ""\n'
    )
    assert book.hours.timezone == "Europe/Dublin"
    assert book.hours.in_hours == DEFAULT.hours.in_hours
    assert book.hours.working_days == DEFAULT.hours.working_days
    assert book.hours.waking == DEFAULT.hours.waking
    assert book.hours.bank_holidays.country == "IE"


def test_rules_are_replaced_by_id_added_and_dropped() -> None:
    """A rule with a default id replaces it in place; a new id is added after the defaults;
    drop_rules removes default rules."""
    first, second = DEFAULT.rules[0].id, DEFAULT.rules[1].id
    text = f'''extends = "default"
drop_rules = ["{second}"]

[[rule]]
id = "{first}"
priority = "P2"
reason = "our own wording"
words = ["on fire"]
examples = [{{ subject = "on fire", expect = "P2" }}, {{ body = "all on fire", expect = "P2" }}]

[[rule]]
id = "our-own"
priority = "P3"
reason = "a local rule"
words = ["flaky widget"]
examples = [{{ subject = "flaky widget", expect = "P3" }},
            {{ body = "the flaky widget again", expect = "P3" }}]
'''
    book = load_rulebook(text)
    ids = [r.id for r in book.rules]
    assert ids[0] == first and book.rules[0].reason == "our own wording"
    assert second not in ids and ids[-1] == "our-own"
    assert len(ids) == len(DEFAULT.rules)  # one dropped, one added


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('extends = "strict"\n', 'extends: only "default" can be extended'),
        ('extends = "default"\ndrop_rules = ["no-such-rule"]\n', "has no rule 'no-such-rule'"),
        ('drop_rules = ["x"]\n', 'drop_rules: needs extends = "default"'),
        (
            'extends = "default"\n[priority.P1]\nrespond = { minutes = 0 }\n',
            "priority.P1.respond.minutes",
        ),
        (
            'extends = "default"\n[priority.P1]\nrespond = { minutes = 10, business_days = 1 }\n',
            "priority.P1.respond",
        ),
    ],
)
def test_extending_errors_name_what_is_wrong(text: str, problem: str) -> None:
    """An unknown base, a dropped id the default lacks, or a bad override is a RulebookError
    naming its path."""
    with pytest.raises(RulebookError) as error:
        load_rulebook(text)
    assert any(problem in e for e in error.value.errors), error.value.errors


def test_rules_file_is_found_next_to_the_config_whatever_the_working_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`[rules] file = "rules.toml"` is read from the config file's folder (not the working
    folder), and the extending rulebook's 15-minute P1 target is what triage promises."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "rules.toml").write_text(
        'extends = "default"\n[priority.P1]\nrespond = { minutes = 15 }\n'
    )
    (etc / "gateway.toml").write_text('[rules]\nfile = "rules.toml"\n')
    eml = tmp_path / "m.eml"
    eml.write_bytes(email_bytes())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "triage",
                "--json",
                "--at",
                "2026-11-23T10:00:00+00:00",
                "--config",
                str(etc / "gateway.toml"),
                str(eml),
            ]
        )
    out, _ = capsys.readouterr()
    assert exit_.value.code in (0, None)
    assert json.loads(out)["respond_by"] == "2026-11-23T10:15:00+00:00"


def test_a_missing_rules_file_names_the_resolved_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config with a rules file that is not there exits 3 naming the path it tried."""
    (tmp_path / "gateway.toml").write_text('[rules]\nfile = "missing.toml"\n')
    with pytest.raises(SystemExit) as exit_:
        main(["check-config", str(tmp_path / "gateway.toml")])
    _, err = capsys.readouterr()
    assert exit_.value.code == 3 and str(tmp_path / "missing.toml") in err
