"""Plan outcomes: one place reads the kind from the outcome's leading words."""

from __future__ import annotations

import pytest

from gateway.domain import Outcome, Plan
from gateway.run.metrics import outcome_of


@pytest.mark.parametrize(
    ("outcome", "kind"),
    [
        ("opened INC-4 (P1, paged)", Outcome.OPENED),
        ("joined INC-4", Outcome.JOINED),
        ("held: 5 messages from a@x in 60 s", Outcome.HELD),
        ("ignored: automatic reply", Outcome.IGNORED),
        ("unreadable: no body", Outcome.UNREADABLE),
        ("unreadable: processing failed: KeyError", Outcome.PLANNING_FAILED),
        ("already processed", Outcome.ALREADY_PROCESSED),
        ("statuspage opened for INC-4", Outcome.COMMAND),
        ("usage: !ack INC-n", Outcome.COMMAND),
    ],
)
def test_the_kind_of_an_outcome(outcome: str, kind: Outcome) -> None:
    """Each outcome text is read as its kind, the most specific prefix first."""
    assert Plan(outcome=outcome).kind() is kind


def test_failed_planning_counts_as_unreadable_in_metrics() -> None:
    """The triage metric labels a planning failure unreadable, and a hold a command."""
    failed = Plan(outcome="unreadable: processing failed: KeyError")
    assert outcome_of(failed) == "unreadable"
    assert outcome_of(Plan(outcome="held: loop")) == "command"
