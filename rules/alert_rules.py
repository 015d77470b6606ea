"""The rulebook's tables for monitoring alerts: `[alerts]`, `[[alert_rule]]` and `[[component]]`.

This module owns their shape and load-time checks: which alert fields a rule may test
(source kind, alert or check name, severity, labels), what a resolved alert does to its
incident (`on_resolved`), and the components that let an alert and a tenant's report be
recognised as the same problem (tenants' words for a component, and the labels or check
names that monitoring uses for it). Matching itself is in `rules.alerts`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Self

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from rules.fields import Regex, Text, Word
from rules.hours_config import Frozen
from rules.types import Priority

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=64)]


class AlertSource(StrEnum):
    """The kinds of monitoring the gateway takes alerts from."""

    ALERTMANAGER = "alertmanager"
    GRAFANA = "grafana"
    PINGDOM = "pingdom"
    GENERIC = "generic"


class ResolvePolicy(StrEnum):
    """What happens when every alert of an incident has resolved."""

    RESOLVE = "resolve"  # the incident resolves, reporters are told, the page resolved
    ASK = "ask"  # it goes on the timeline and the engineers are asked to !resolve


class AlertExample(Frozen):
    """A realistic alert a rule is meant to classify, and the priority it should get."""

    source: AlertSource = AlertSource.GENERIC
    name: Text
    severity: str = ""
    labels: Mapping[str, str] = Field(default_factory=dict)
    summary: str = ""
    expect: Priority


class AlertRule(Frozen):
    """One `[[alert_rule]]`: conditions on an alert, the priority it gives, and why."""

    id: Name
    priority: Priority
    reason: Text
    sources: tuple[AlertSource, ...] = ()
    names: tuple[Regex, ...] = ()
    severities: tuple[Text, ...] = ()
    labels: Mapping[Text, Regex] = Field(default_factory=dict)
    unless_labels: Mapping[Text, Regex] = Field(default_factory=dict)
    on_resolved: ResolvePolicy | None = None
    examples: tuple[AlertExample, ...]

    @field_validator("examples")
    @classmethod
    def _enough_examples(cls, examples: tuple[AlertExample, ...]) -> tuple[AlertExample, ...]:
        if len(examples) < 2:
            message = "a rule needs at least 2 examples, got {count}"
            raise PydanticCustomError("examples", message, {"count": len(examples)})
        return examples

    @field_validator("severities")
    @classmethod
    def _lower(cls, severities: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(s.lower() for s in severities)

    @model_validator(mode="after")
    def _has_condition(self) -> Self:
        if not (self.sources or self.names or self.severities or self.labels):
            raise PydanticCustomError(
                "no_condition", "an alert rule needs sources, names, severities or labels"
            )
        return self


class Component(Frozen):
    """One `[[component]]`: a part of the platform, as tenants and as monitoring name it.

    A report names it when one of `words` matches its subject or text; an alert concerns it
    when one of `labels` matches (label name → regex) or its name matches one of `names`.
    """

    name: Name
    words: tuple[Word, ...] = ()
    labels: Mapping[Text, Regex] = Field(default_factory=dict)
    names: tuple[Regex, ...] = ()

    @model_validator(mode="after")
    def _both_sides(self) -> Self:
        if not self.words or not (self.labels or self.names):
            raise PydanticCustomError(
                "component",
                "a component needs words (for reports) and labels or names (for alerts)",
            )
        return self


class AlertPolicy(Frozen):
    """`[alerts]`: what an alert that matches no `[[alert_rule]]` becomes, and defaults."""

    severity: Mapping[str, Priority] = Field(
        default_factory=lambda: {
            "critical": Priority.P2,
            "page": Priority.P2,
            "high": Priority.P2,
            "error": Priority.P3,
            "warning": Priority.P3,
            "info": Priority.P4,
            "low": Priority.P4,
        }
    )
    default_priority: Priority = Priority.P3
    on_resolved: ResolvePolicy = ResolvePolicy.ASK
    # A tenant report naming a component joins an open alert incident for it (and an alert
    # joins an open report about its component). Off: they stay separate incidents.
    join_reports: bool = True

    @field_validator("severity")
    @classmethod
    def _lower(cls, severity: Mapping[str, Priority]) -> Mapping[str, Priority]:
        return {k.lower(): v for k, v in severity.items()}


def duplicate_ids(rules: tuple[AlertRule, ...]) -> list[str]:
    """Ids used by more than one `[[alert_rule]]`."""
    seen: set[str] = set()
    twice: set[str] = set()
    for rule in rules:
        (twice if rule.id in seen else seen).add(rule.id)
    return sorted(twice)
