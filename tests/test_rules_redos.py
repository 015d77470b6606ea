"""Rulebook patterns cannot backtrack catastrophically: they run on RE2 (linear time), and
what RE2 cannot run is refused with a clear error when the rulebook is loaded."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.cli.commands import main
from rules.book import RulebookError, default_rulebook_text, load_rulebook
from rules.engine import triage
from rules.expressions import compile_pattern
from rules.types import Mailbox, Priority, Report

# Classic catastrophic patterns and a text that makes a backtracking engine try every way
# to split it (2^40 and more); each is valid RE2 and must simply not match, at once.
EVIL = [
    (r"^(\w+\s?)+$", "a" * 40 + "!"),
    (r"(a+)+$", "a" * 40 + "!"),
    (r"(a|aa)+$", "a" * 80 + "!"),
    (r"(x+x+)+y", "y " + "x" * 40),
    (r"^(([a-z])+.)+[A-Z]([a-z])+$", "a" * 40 + "!"),
    (r"(\s*\w+\s*)+:", ": " + "word " * 40 + "!"),
]

RULE = """
[[rule]]
id = "evil"
priority = "P2"
reason = "a pattern under test"
mailboxes = ["support"]
patterns = [{pattern}]
examples = [
  {{ subject = {text}, body = {text}, mailbox = "support", expect = "P4" }},
  {{ subject = "fine?", body = "nothing here?", mailbox = "support", expect = "P4" }},
]
"""
MONDAY = datetime(2026, 11, 23, 10, tzinfo=UTC)


def book_with(pattern: str, text: str) -> str:
    return default_rulebook_text() + RULE.format(pattern=json.dumps(pattern), text=json.dumps(text))


@pytest.mark.parametrize(("pattern", "text"), EVIL)
def test_catastrophic_pattern_triages_the_hostile_text_at_once(pattern: str, text: str) -> None:
    """The hostile subject and body get the mailbox default, not a runaway search."""
    book = load_rulebook(book_with(pattern, text))
    report = Report(
        mailbox=Mailbox.SUPPORT, sender="a@t.example", subject=text, body="\n".join([text] * 50)
    )
    decision = triage(report, MONDAY, book)
    assert decision.priority is Priority.P4 and decision.rule is None


def test_rules_test_with_a_catastrophic_pattern_finishes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rules test` on the issue's pattern and a hostile example ends and reports the result."""
    path = tmp_path / "rules.toml"
    path.write_text(book_with(r"^(\w+\s?)+$", "a" * 60 + "!"), encoding="utf-8")
    with pytest.raises(SystemExit) as exit_:
        main(["rules", "test", str(path)])
    out = capsys.readouterr().out
    # The pattern also matches other rules' one-word-run subjects (their examples fail);
    # what matters is that the run ends, with the hostile example judged.
    assert exit_.value.code in (0, 1) and "examples give their expected priority" in out
    assert "rule 'evil' example" not in out


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        (r"(\w+)\s+\1", "invalid escape sequence"),
        (r"(?<=our )app", "look-around"),
        (r"(?>a|ab)c", "look-around"),
        (r"(?x) cf \s+ push", "invalid perl operator"),
        (r"x{,3}y", "{0,n}"),
    ],
)
def test_patterns_re2_cannot_run_are_refused_with_their_path(pattern: str, problem: str) -> None:
    """Back-references, look-around, atomic groups, verbose mode and `{,n}`: a load error
    naming the rule and the pattern, never a pattern silently read another way."""
    with pytest.raises(RulebookError) as caught:
        load_rulebook(book_with(pattern, "x"))
    text = "\n".join(caught.value.errors)
    assert "patterns[0]" in text and problem in text, text


def test_patterns_stay_case_insensitive_and_find_the_leftmost_match() -> None:
    """RE2 patterns keep the rulebook's semantics: case-insensitive search anywhere."""
    regex = compile_pattern(r"\bunder\s+attack\b")
    found = regex.search("We are UNDER   Attack since 9, under attack")
    assert found is not None and found.span() == (7, 21)
    assert compile_pattern(r"(?-i:Down)time").search("downtime") is None
    with pytest.raises(ValueError, match="matches empty text"):
        compile_pattern(r"(a|b)*")
