"""The values that cross the boundary between the triage policy and the rest of the daemon."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Priority(StrEnum):
    """Severity from the support process's table; P1 is the most severe."""

    P1 = "P1"
    P2 = "P2"
    P3 = "P3"
    P4 = "P4"

    @property
    def rank(self) -> int:
        """1 for P1 … 4 for P4: lower is more severe."""
        return int(self.value[1])


class Period(StrEnum):
    """Which support period an instant falls in."""

    IN_HOURS = "in_hours"
    OOH_WAKING = "ooh_waking"
    OOH_OVERNIGHT = "ooh_overnight"


class Mailbox(StrEnum):
    """Which way in a report arrived: the emergency address or the support address."""

    EMERGENCY = "emergency"
    SUPPORT = "support"


@dataclass(frozen=True)
class Report:
    """A candidate issue as the rules see it, whatever channel it came on.

    `body` is the new text only (quoted history and signatures already stripped).
    `automatic` is set (to the reason) when the message is automatic mail that must
    never be answered nor page.
    """

    mailbox: Mailbox
    sender: str
    subject: str
    body: str
    headers: Mapping[str, str] = field(default_factory=dict)
    automatic: str | None = None


@dataclass(frozen=True)
class TriageDecision:
    """What to do with a report, and why."""

    priority: Priority | None
    page: bool
    ticket: bool
    reply: bool
    rule: str | None
    reasons: tuple[str, ...]
    period: Period
    respond_by: datetime | None
    next_update_by: datetime | None
    ignored: str | None = None
