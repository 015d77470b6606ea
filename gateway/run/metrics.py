"""The daemon's metrics: counters and histograms in prometheus_client, exposed as text.

Counters and histograms live in one process-wide registry, changed with one call where
things happen (intake accepts and rejects, triage outcomes, deliveries, reconnects). Gauges
that describe stored state (outbox depth and age, component states) are not kept here: they
are read from the store when scraped and passed to `render`. The registry also carries the
`process_*` metrics and `chatops_build_info`. Names are stable; a wrong label name raises.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.domain import OutboxKind, Outcome, Plan

# `_created` series double every counter for no use here (Prometheus tracks resets itself).
disable_created_metrics()  # type: ignore[no-untyped-call]


class LabelledCounter:
    """A counter incremented with label values as keywords: `inc(channel="smtp")`."""

    def __init__(self, counter: Counter, labels: tuple[str, ...]) -> None:
        self._counter = counter
        self._labels = labels

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add `amount` to the series with these label values (unknown labels raise)."""
        if self._labels:
            self._counter.labels(**labels).inc(amount)
        elif labels:
            raise ValueError(f"{self._counter._name} takes no labels, got {sorted(labels)}")
        else:
            self._counter.inc(amount)

    def value(self, **labels: str) -> float:
        """The current count of one series (0 if never incremented)."""
        wanted = {name: str(labels.get(name, "")) for name in self._labels}
        for metric in self._counter.collect():
            for s in metric.samples:
                if s.name.endswith("_total") and s.labels == wanted:
                    return float(s.value)
        return 0.0


class Registry:
    """The registry the daemon exposes, and the counters in it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)

    def counter(self, name: str, help_text: str, labels: Iterable[str] = ()) -> LabelledCounter:
        """A counter called `name` (which ends in `_total`)."""
        names = tuple(labels)
        return LabelledCounter(Counter(name, help_text, names, registry=self.registry), names)

    def histogram(
        self,
        name: str,
        help_text: str,
        labels: Iterable[str] = (),
        buckets: tuple[float, ...] = Histogram.DEFAULT_BUCKETS,
    ) -> Histogram:
        """A histogram called `name` (in seconds, so the name ends in `_seconds`)."""
        return Histogram(name, help_text, tuple(labels), registry=self.registry, buckets=buckets)


REGISTRY = Registry()
ProcessCollector(registry=REGISTRY.registry)  # process_cpu_seconds_total, resident memory, fds


def _version() -> str:
    try:
        return metadata.version("chatops-gateway")
    except metadata.PackageNotFoundError:  # a source tree that is not installed
        return "unknown"


Info("chatops_build", "The running version.", registry=REGISTRY.registry).info(
    {"version": _version()}
)

ACCEPTED = REGISTRY.counter(
    "chatops_messages_accepted_total", "Messages committed to the inbox, by channel.", ["channel"]
)
REJECTED = REGISTRY.counter(
    "chatops_messages_rejected_total",
    "Messages or recipients refused at intake, by reason.",
    ["reason"],
)
TRIAGED = REGISTRY.counter(
    "chatops_triage_total",
    "Processed messages by outcome (P1..P4 for a new incident, or "
    "joined, ignored, unreadable, held, command).",
    ["outcome"],
)
PAGES = REGISTRY.counter(
    "chatops_pages_sent_total", "Pager events delivered, by action.", ["action"]
)
REPLIES = REGISTRY.counter(
    "chatops_replies_sent_total",
    "Messages to reporters and rooms delivered, by channel.",
    ["channel"],
)
TICKETS = REGISTRY.counter("chatops_tickets_opened_total", "Tickets opened.")
DELIVERY_FAILURES = REGISTRY.counter(
    "chatops_outbox_failures_total",
    "Failed delivery attempts, by kind and result (retry or dead).",
    ["kind", "result"],
)
SLA_REMINDERS = REGISTRY.counter(
    "chatops_sla_reminders_total",
    "SLA reminders fired (warnings, overdue notices, escalations, "
    "handover reminders, digests), by kind.",
    ["kind"],
)
SLA_BREACHES = REGISTRY.counter(
    "chatops_sla_breaches_total",
    "Respond-by (respond) or update-by (update) times that passed unmet.",
    ["kind"],
)
RECONNECTS = REGISTRY.counter(
    "chatops_reconnects_total", "Connection retries after a failure, by component.", ["component"]
)
RELOADS = REGISTRY.counter(
    "chatops_reloads_total", "Configuration reloads, by result (ok or rejected).", ["result"]
)
UNDECRYPTABLE = REGISTRY.counter(
    "chatops_matrix_undecryptable_total",
    "Encrypted Matrix events the bot could not decrypt on arrival.",
)

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
INTAKE_TO_PAGE = REGISTRY.histogram(
    "chatops_intake_to_page_seconds",
    "From a report's acceptance (250, or the IMAP commit) to its page's delivery.",
    buckets=_LATENCY_BUCKETS,
)
ATTEMPT_SECONDS = REGISTRY.histogram(
    "chatops_outbox_attempt_duration_seconds",
    "One delivery attempt (a page, mail, chat message, ticket call), by kind.",
    ["kind"],
    buckets=_LATENCY_BUCKETS,
)
BATCH_SECONDS = REGISTRY.histogram(
    "chatops_triage_batch_duration_seconds",
    "Parsing, triage and planning of one batch of accepted messages.",
    buckets=_LATENCY_BUCKETS,
)

_PAGE_ACTIONS = {
    OutboxKind.PAGE_TRIGGER: "trigger",
    OutboxKind.PAGE_ACKNOWLEDGE: "acknowledge",
    OutboxKind.PAGE_RESOLVE: "resolve",
}
_REPLY_CHANNELS = {
    OutboxKind.MAIL_SEND: "email",
    OutboxKind.CHAT_SEND: "matrix",
    OutboxKind.CHAT_ANNOUNCE: "matrix",
}
# Pages planned but not delivered yet: dedup key -> when their report was accepted. Bounded,
# in memory only: a restart loses a few observations, never a page.
_PAGES_WAITING: OrderedDict[str, datetime] = OrderedDict()
_PAGES_WAITING_MAX = 10_000


def delivered(kind: OutboxKind, payload: Mapping[str, Any] | None = None) -> None:
    """Count one delivered outbox entry under the counter its kind belongs to."""
    if kind in _PAGE_ACTIONS:
        PAGES.inc(action=_PAGE_ACTIONS[kind])
        accepted = _PAGES_WAITING.pop(str((payload or {}).get("dedup_key")), None)
        if kind is OutboxKind.PAGE_TRIGGER and accepted is not None:
            INTAKE_TO_PAGE.observe(max(0.0, (datetime.now(UTC) - accepted).total_seconds()))
    elif kind in _REPLY_CHANNELS:
        REPLIES.inc(channel=_REPLY_CHANNELS[kind])
    elif kind is OutboxKind.TICKET_CREATE:
        TICKETS.inc()


def pages_planned(plans: Iterable[tuple[datetime, Plan]]) -> None:
    """Remember when the report behind each planned page was accepted (received_at, plan)."""
    for received_at, plan in plans:
        for spec in plan.outbox:
            if spec.kind is OutboxKind.PAGE_TRIGGER:
                _PAGES_WAITING[str(spec.payload.get("dedup_key"))] = received_at
    while len(_PAGES_WAITING) > _PAGES_WAITING_MAX:
        _PAGES_WAITING.popitem(last=False)


@asynccontextmanager
async def attempt_timer(kind: OutboxKind) -> AsyncIterator[None]:
    """Observe how long one delivery attempt of this kind takes, however it ends."""
    started = time.perf_counter()
    try:
        yield
    finally:
        ATTEMPT_SECONDS.labels(kind=str(kind)).observe(time.perf_counter() - started)


def outcome_of(plan: Plan) -> str:
    """The triage outcome label of a processed message's plan."""
    if plan.held:
        return Outcome.HELD.value
    if plan.new_incident is not None:
        return str(plan.new_incident.priority)
    kind = plan.kind()
    if kind is Outcome.PLANNING_FAILED:
        return Outcome.UNREADABLE.value
    return kind.value if kind in _TRIAGE_LABELS else Outcome.COMMAND.value


_TRIAGE_LABELS = frozenset({Outcome.JOINED, Outcome.IGNORED, Outcome.UNREADABLE})


def triaged(plans: Iterable[Plan]) -> None:
    """Count a processed batch's outcomes."""
    for plan in plans:
        TRIAGED.inc(outcome=outcome_of(plan))


_BREACHES = {"respond.overdue": "respond", "update.overdue": "update"}


def sla_fired(kinds: Iterable[str]) -> None:
    """Count SLA items the store has just recorded as fired (each is recorded once, so a
    scheduler pass that finds nothing new counts nothing). Escalation steps share one label."""
    for kind in kinds:
        SLA_REMINDERS.inc(kind="escalate" if kind.startswith("escalate.") else kind)
        if kind in _BREACHES:
            SLA_BREACHES.inc(kind=_BREACHES[kind])


Gauge = tuple[str, str, Mapping[str, str], float]


class _Scrape(Collector):
    """One scrape: the registry's metrics, then the stored state's gauges."""

    def __init__(self, registry: CollectorRegistry, gauges: Iterable[Gauge]) -> None:
        self._registry = registry
        self._gauges = list(gauges)

    def collect(self) -> Iterator[Any]:
        yield from self._registry.collect()
        families: dict[str, GaugeMetricFamily] = {}
        for name, help_text, labels, value in self._gauges:
            family = families.get(name)
            if family is None:
                family = families[name] = GaugeMetricFamily(name, help_text, labels=list(labels))
            family.add_metric(list(labels.values()), value)
        yield from families.values()


def render(gauges: Iterable[Gauge] = (), registry: Registry = REGISTRY) -> str:
    """The exposition text: every counter and histogram, the process metrics, then the
    gauges given as (name, help, labels, value)."""
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(_Scrape(registry.registry, gauges))
    return generate_latest(scrape).decode("utf-8")
