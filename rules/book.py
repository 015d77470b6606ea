"""The rulebook: its validated models, and loading it from TOML text.

This module owns the shape of the rulebook (`Rulebook` and the models under it), every
check made at load time (regexes compile, ids are unique, every priority has its targets,
the time zone exists, times parse, examples are well-formed), and the errors a bad rulebook
produces: a `RulebookError` listing every problem at once, each prefixed with its TOML path.
The format is documented in `rules/default.toml` and `docs/rulebook.md`. It also derives,
in one place (`Rulebook.compiled` and the `compiled()` of the models under it), the plain
form triage runs on (`rules.compiled`), and re-exports that module's enums.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import fields
from datetime import date
from functools import cache
from importlib import resources
from typing import Annotated, Any, Self

from pydantic import (
    Field,
    PositiveInt,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from rules.alert_rules import AlertPolicy, AlertRule, Component, duplicate_ids
from rules.book_extend import extend
from rules.compiled import Action as Action  # noqa: PLC0414  (re-exported)
from rules.compiled import ClockKind as ClockKind  # noqa: PLC0414  (re-exported)
from rules.compiled import (
    CompiledRule,
    CompiledRulebook,
    MailboxDefault,
    PriorityTerms,
    TargetTerms,
)
from rules.compiled import OohClass as OohClass  # noqa: PLC0414  (re-exported)
from rules.compiled import PagePolicy as PagePolicy  # noqa: PLC0414  (re-exported)
from rules.fields import Regex, Text, Word
from rules.hours import HolidayDates, SupportClock
from rules.hours_config import Frozen, Hours
from rules.matching import Matcher
from rules.types import Mailbox, Priority


class RulebookError(ValueError):
    """A rulebook that cannot be used. `errors` lists every problem, each as "path: message"."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("invalid rulebook:\n" + "\n".join(f"  {e}" for e in errors))
        self.errors = errors


class Target(Frozen):
    """A response or update target: minutes (optionally other minutes out of hours), or days."""

    minutes: PositiveInt | None = None
    out_of_hours_minutes: PositiveInt | None = None
    business_days: PositiveInt | None = None

    @model_validator(mode="after")
    def _one_unit(self) -> Self:
        if (self.minutes is None) == (self.business_days is None):
            raise PydanticCustomError("target_unit", "give exactly one of minutes or business_days")
        if self.business_days is not None and self.out_of_hours_minutes is not None:
            raise PydanticCustomError("target_unit", "out_of_hours_minutes only goes with minutes")
        return self

    def compiled(self) -> TargetTerms:
        """The plain form triage reads."""
        return TargetTerms(self.minutes, self.out_of_hours_minutes, self.business_days)


class PriorityPolicy(Frozen):
    """What a priority means and promises: its name, paging, and response/update targets."""

    name: Text
    meaning: Text
    page: PagePolicy
    clock: ClockKind
    respond: Target
    update: Target

    @model_validator(mode="after")
    def _consistent_clock(self) -> Self:
        targets = (self.respond, self.update)
        if self.clock is ClockKind.WALL and any(t.business_days for t in targets):
            raise PydanticCustomError("clock", 'business_days targets need clock = "business"')
        if self.clock is ClockKind.BUSINESS and any(t.out_of_hours_minutes for t in targets):
            raise PydanticCustomError(
                "clock",
                'out_of_hours_minutes needs clock = "wall" (business time is in hours only)',
            )
        return self

    def compiled(self) -> PriorityTerms:
        """The plain form triage reads."""
        return PriorityTerms(
            self.name,
            self.meaning,
            self.page,
            self.clock,
            self.respond.compiled(),
            self.update.compiled(),
        )


class Priorities(Frozen):
    """One `[priority.Pn]` table per priority; all four are required."""

    P1: PriorityPolicy
    P2: PriorityPolicy
    P3: PriorityPolicy
    P4: PriorityPolicy

    def get(self, priority: Priority) -> PriorityPolicy:
        """The policy for `priority`."""
        policy: PriorityPolicy = getattr(self, priority.value)
        return policy


class MailboxPolicy(Frozen):
    """What an unmatched report to a mailbox becomes."""

    priority: Priority
    reason: Text

    def compiled(self) -> MailboxDefault:
        """The plain form triage reads."""
        return MailboxDefault(self.priority, self.reason)


class Mailboxes(Frozen):
    """One `[mailbox.<name>]` table per way in."""

    emergency: MailboxPolicy
    support: MailboxPolicy

    def get(self, mailbox: Mailbox) -> MailboxPolicy:
        """The policy for `mailbox`."""
        policy: MailboxPolicy = getattr(self, mailbox.value)
        return policy


class Example(Frozen):
    """A realistic message a rule is meant to classify, and the priority it should get."""

    subject: str = ""
    body: str = ""
    mailbox: Mailbox = Mailbox.EMERGENCY
    sender: str = ""
    headers: Mapping[str, str] = Field(default_factory=dict)
    expect: Priority

    @model_validator(mode="after")
    def _has_text(self) -> Self:
        if not (self.subject.strip() or self.body.strip()):
            raise PydanticCustomError("example_text", "an example needs a subject or a body")
        return self


class Rule(Frozen):
    """One `[[rule]]`: conditions on a report, the priority it gives, why, and actions."""

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=64)]
    priority: Priority
    reason: Text
    ooh_class: OohClass | None = None
    actions: tuple[Action, ...] = ()
    mailboxes: tuple[Mailbox, ...] = ()
    senders: tuple[Text, ...] = ()
    sender_domains: tuple[Text, ...] = ()
    words: tuple[Word, ...] = ()
    patterns: tuple[Regex, ...] = ()
    also_words: tuple[Word, ...] = ()
    headers: Mapping[Text, Regex] = Field(default_factory=dict)
    unless_words: tuple[Word, ...] = ()
    unless_patterns: tuple[Regex, ...] = ()
    examples: tuple[Example, ...]

    _compiled: CompiledRule = PrivateAttr()

    @field_validator("examples")
    @classmethod
    def _enough_examples(cls, examples: tuple[Example, ...]) -> tuple[Example, ...]:
        if len(examples) < 2:
            message = "a rule needs at least 2 examples, got {count}"
            raise PydanticCustomError("examples", message, {"count": len(examples)})
        return examples

    @model_validator(mode="after")
    def _has_condition(self) -> Self:
        conditions = (self.words, self.patterns, self.senders, self.sender_domains, self.headers)
        if not any(conditions):
            raise PydanticCustomError(
                "no_condition", "a rule needs words, patterns, senders, sender_domains or headers"
            )
        return self

    def model_post_init(self, context: Any, /) -> None:
        """Derive the plain form once (its conditions compile on first use, where triage
        runs: a daemon that triages no mail itself never holds them)."""
        terms = {f.name: getattr(self, f.name) for f in fields(CompiledRule)}
        self._compiled = CompiledRule(**terms | {"headers": tuple(self.headers.items())})

    @property
    def compiled(self) -> CompiledRule:
        """This rule as triage runs it (`rules.compiled`)."""
        return self._compiled

    @property
    def matcher(self) -> Matcher:
        """The compiled conditions, compiled on first use (they were validated field by
        field already)."""
        return self._compiled.matcher


class Rulebook(Frozen):
    """The whole triage policy: hours, priorities, mailbox defaults and rules (in file order)."""

    hours: Hours = Field(default_factory=Hours)
    priorities: Priorities = Field(alias="priority")
    mailboxes: Mailboxes = Field(alias="mailbox")
    rules: tuple[Rule, ...] = Field(default=(), alias="rule")
    # Monitoring alerts (rules.alert_rules): their defaults, rules and the components that
    # match alerts with tenants' reports.
    alerts: AlertPolicy = Field(default_factory=AlertPolicy)
    alert_rules: tuple[AlertRule, ...] = Field(default=(), alias="alert_rule")
    components: tuple[Component, ...] = Field(default=(), alias="component")

    _compiled: CompiledRulebook = PrivateAttr()

    @model_validator(mode="wrap")
    @classmethod
    def _cross_checks(cls, data: Any, handler: Any) -> Rulebook:
        """Add the checks that span rules to the per-field errors, so all come out at once."""
        problems = _duplicate_ids(data)
        try:
            book: Rulebook = handler(data)
        except ValidationError as exc:
            raise _with(exc.errors(), problems) from None
        problems += _ooh_mismatches(book)
        problems += [
            InitErrorDetails(
                type=PydanticCustomError("duplicate_id", "duplicate alert rule id {id}", {"id": i}),
                loc=("alert_rule",),
                input=i,
            )
            for i in duplicate_ids(book.alert_rules)
        ]
        if problems:
            raise _with([], problems)
        return book

    def model_post_init(self, context: Any, /) -> None:
        """Derive the compiled form once, with the support clock (and the context's
        precomputed bank holidays, when load_rulebook was given them)."""
        dates = context.get("bank_holidays") if isinstance(context, dict) else None
        hours = self.hours.compiled()
        made = None
        if dates is not None and hours.bank_holidays.country:
            days, years = dates(hours.bank_holidays.country, hours.bank_holidays.subdivision)
            made = HolidayDates(hours.bank_holidays, days, years)
        self._compiled = CompiledRulebook(
            rules=tuple(rule.compiled for rule in self.rules),
            priorities={p: self.priorities.get(p).compiled() for p in Priority},
            mailboxes={m: self.mailboxes.get(m).compiled() for m in Mailbox},
            clock=SupportClock(hours, made),
        )

    @property
    def compiled(self) -> CompiledRulebook:
        """The plain form triage runs on (`rules.compiled`): what the parse child gets."""
        return self._compiled

    @property
    def clock(self) -> SupportClock:
        """The support clock for this rulebook's hours."""
        return self._compiled.clock


def _with(errors: list[ErrorDetails], extra: list[InitErrorDetails]) -> ValidationError:
    """One ValidationError carrying pydantic's own errors (messages kept) and ours."""
    details = [
        InitErrorDetails(
            type=PydanticCustomError(e["type"], e["msg"]),
            loc=e["loc"],
            input=e["input"],
        )
        for e in errors
    ]
    return ValidationError.from_exception_data("Rulebook", [*details, *extra])


def _duplicate_ids(data: Any) -> list[InitErrorDetails]:
    """Rules that reuse an earlier rule's id (checked on the raw data, before validation)."""
    raw = data.get("rule", data.get("rules", ())) if isinstance(data, Mapping) else ()
    first: dict[str, int] = {}
    problems: list[InitErrorDetails] = []
    for index, rule in enumerate(raw if isinstance(raw, list | tuple) else ()):
        rule_id = rule.get("id") if isinstance(rule, Mapping) else getattr(rule, "id", None)
        if not isinstance(rule_id, str):
            continue
        if rule_id in first:
            message = "duplicate id {id}, first used by rule[{first}]"
            context = {"id": repr(rule_id), "first": first[rule_id]}
            problems.append(
                InitErrorDetails(
                    type=PydanticCustomError("duplicate_id", message, context),
                    loc=("rule", index, "id"),
                    input=rule_id,
                )
            )
        first.setdefault(rule_id, index)
    return problems


def _ooh_mismatches(book: Rulebook) -> list[InitErrorDetails]:
    """Rules that claim an out-of-hours class for a priority that does not page out of hours."""
    problems: list[InitErrorDetails] = []
    for index, rule in enumerate(book.rules):
        policy = book.priorities.get(rule.priority)
        if rule.ooh_class is not None and policy.page is not PagePolicy.ALWAYS:
            message = "{priority} does not page out of hours (page = {page}): remove ooh_class"
            context = {"priority": rule.priority.value, "page": repr(policy.page.value)}
            problems.append(
                InitErrorDetails(
                    type=PydanticCustomError("ooh_class", message, context),
                    loc=("rule", index, "ooh_class"),
                    input=rule.ooh_class.value,
                )
            )
    return problems


# (country, subdivision) -> the bank holidays of a span of years, and that span; using the
# dates raises NotImplementedError for a calendar that does not exist.
BankHolidayDates = Callable[[str, str], tuple[Collection[date], range]]


def load_rulebook(text: str, bank_holidays: BankHolidayDates | None = None) -> Rulebook:
    """Parse and validate rulebook TOML; raises RulebookError listing every problem.

    A file that starts with `extends = "default"` changes the packaged rulebook rather than
    replacing it (`rules.book_extend`). `bank_holidays` checks and makes the calendar's
    dates elsewhere (the daemon asks a helper process, so it never imports `holidays`);
    without it the `holidays` package is used here."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulebookError([f"TOML syntax: {exc}"]) from None
    if "extends" in data or "drop_rules" in data:
        data, problems = extend(tomllib.loads(default_rulebook_text()), data)
        if problems:
            raise RulebookError(problems)
    context = None if bank_holidays is None else {"bank_holidays": bank_holidays}
    try:
        return Rulebook.model_validate(data, context=context)
    except ValidationError as exc:
        raise RulebookError([_describe(e) for e in exc.errors()]) from None


def default_rulebook_text() -> str:
    """The shipped rulebook (`rules/default.toml`), as TOML text."""
    return resources.files("rules").joinpath("default.toml").read_text(encoding="utf-8")


@cache
def default_rulebook() -> Rulebook:
    """The shipped rulebook, loaded (once; a Rulebook is immutable)."""
    return load_rulebook(default_rulebook_text())


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _describe(error: ErrorDetails) -> str:
    """`rule[3].priority: Input should be ...` from one pydantic error."""
    path = ""
    for part in error["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _BARE_KEY.fullmatch(part):
            path += f".{part}" if path else part
        else:
            quoted = '"' + part.replace('"', '\\"') + '"'
            path += f".{quoted}" if path else quoted
    return f"{path}: {error['msg']}" if path else error["msg"]
