"""The rulebook as triage runs it: plain values, no pydantic.

This module owns the compiled form of a validated rulebook (`CompiledRulebook`): each
rule's conditions as written (compiled into a `Matcher` on first use, where triage runs),
each priority's paging policy and targets, the mailbox defaults and the support clock. It
is made in one place, `rules.book.Rulebook.compiled`, from the validated configuration,
which stays the source of truth; it is what the daemon hands the parse child, so that the
child unpickles frozen dataclasses and enums and never imports pydantic (nor `holidays`:
the clock carries precomputed dates, see rules.hours). It also owns the policy's enums,
which `rules.book` re-exports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Any, Protocol

from rules.hours import SupportClock
from rules.matching import Matcher
from rules.types import Mailbox, Priority


class PagePolicy(StrEnum):
    """When a priority pages the on-call engineer."""

    ALWAYS = "always"
    IN_HOURS = "in_hours"
    NEVER = "never"


class ClockKind(StrEnum):
    """How a priority's targets are counted: wall-clock time, or in-hours time only."""

    WALL = "wall"
    BUSINESS = "business"


class OohClass(StrEnum):
    """The four things supported out of hours (from the support manual)."""

    APPS_NOT_SERVED = "apps_not_served"
    SECURITY_BREACH = "security_breach"
    API_DOWN_EMERGENCY_FIX = "api_down_emergency_fix"
    LIVE_APP_P1 = "live_app_p1"

    @property
    def description(self) -> str:
        """The class in the manual's words."""
        return _OOH_DESCRIPTIONS[self]


_OOH_DESCRIPTIONS = {
    OohClass.APPS_NOT_SERVED: "apps no longer being served due to a platform issue",
    OohClass.SECURITY_BREACH: "a serious security breach on the platform",
    OohClass.API_DOWN_EMERGENCY_FIX: "an emergency fix blocked because the platform API is down",
    OohClass.LIVE_APP_P1: "a live production app with a P1 issue that needs the platform team",
}


class Action(StrEnum):
    """Something a rule asks for besides its priority."""

    SECURITY_ESCALATION = "security_escalation"  # tell the security contacts at once


@dataclass(frozen=True)
class TargetTerms:
    """A response or update target: minutes (optionally other minutes out of hours), or
    business days; exactly one of `minutes` and `business_days` is set."""

    minutes: int | None = None
    out_of_hours_minutes: int | None = None
    business_days: int | None = None


@dataclass(frozen=True)
class PriorityTerms:
    """What a priority means and promises: its name, paging, and response/update targets."""

    name: str
    meaning: str
    page: PagePolicy
    clock: ClockKind
    respond: TargetTerms
    update: TargetTerms


@dataclass(frozen=True)
class MailboxDefault:
    """What an unmatched report to a mailbox becomes, and why."""

    priority: Priority
    reason: str


@dataclass(frozen=True)
class CompiledRule:
    """One rule as triage runs it: its id, priority, reason, out-of-hours class, actions,
    and its conditions as written (validated already). `matcher` compiles them on first use
    and is kept; it never crosses a pipe (the receiver compiles its own)."""

    id: str
    priority: Priority
    reason: str
    ooh_class: OohClass | None = None
    actions: tuple[Action, ...] = ()
    mailboxes: tuple[Mailbox, ...] = ()
    senders: tuple[str, ...] = ()
    sender_domains: tuple[str, ...] = ()
    words: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    also_words: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    unless_words: tuple[str, ...] = ()
    unless_patterns: tuple[str, ...] = ()

    @cached_property
    def matcher(self) -> Matcher:
        """The compiled conditions (compiled once, on first use)."""
        return Matcher.build(
            mailboxes=self.mailboxes,
            senders=self.senders,
            sender_domains=self.sender_domains,
            words=self.words,
            patterns=self.patterns,
            also_words=self.also_words,
            headers=dict(self.headers),
            unless_words=self.unless_words,
            unless_patterns=self.unless_patterns,
        )

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the compiled conditions (smaller; compiled again on arrival)."""
        state = dict(self.__dict__)
        state.pop("matcher", None)
        return state


@dataclass(frozen=True, eq=False)
class CompiledRulebook:
    """The whole triage policy, plain: rules in file order, each priority's terms, each
    mailbox's default, and the support clock."""

    rules: tuple[CompiledRule, ...]
    priorities: Mapping[Priority, PriorityTerms]
    mailboxes: Mapping[Mailbox, MailboxDefault]
    clock: SupportClock

    @property
    def compiled(self) -> CompiledRulebook:
        """Itself: a compiled rulebook is a `TriageBook` as the validated one is."""
        return self

    def warm(self) -> None:
        """Compile every rule's conditions now (so the first report is not charged)."""
        for rule in self.rules:
            rule.matcher  # noqa: B018  (compiled on first use)


class TriageBook(Protocol):
    """A rulebook in either form triage takes: validated (`rules.book.Rulebook`, in the
    daemon) or compiled (`CompiledRulebook`, in the parse child). Both give the compiled
    form, which is the only one the decision logic (rules.engine) reads."""

    @property
    def compiled(self) -> CompiledRulebook:
        """The compiled form."""
        ...
