"""The daemon's counters, and the Prometheus text exposition format (version 0.0.4).

Counters live in one process-wide registry, incremented with one call where things happen
(intake accepts and rejects, triage outcomes, deliveries, reconnects). Gauges that describe
stored state (outbox depth and age) are not kept here: they are read from the store when
scraped and passed to `render`. Names are stable.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gateway.domain import OutboxKind, Plan


@dataclass
class Counter:
    """A monotonically increasing count, optionally split by labels."""

    name: str
    help: str
    labels: tuple[str, ...] = ()
    _values: dict[tuple[str, ...], float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add `amount` to the series with these label values."""
        key = tuple(str(labels.get(name, "")) for name in self.labels)
        with self._lock:  # the inbox worker counts from its worker thread
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        """The current count of one series (0 if never incremented)."""
        key = tuple(str(labels.get(name, "")) for name in self.labels)
        return self._values.get(key, 0.0)

    def samples(self) -> list[tuple[dict[str, str], float]]:
        """Every series; a label-less counter always has its one series."""
        with self._lock:
            items = sorted(self._values.items())
        if not self.labels and not items:
            items = [((), 0.0)]
        return [(dict(zip(self.labels, key, strict=True)), v) for key, v in items]


class Registry:
    """The counters, in the order they are exposed."""

    def __init__(self) -> None:
        self.counters: dict[str, Counter] = {}

    def counter(self, name: str, help_text: str, labels: Iterable[str] = ()) -> Counter:
        """Create (or return the existing) counter called `name`."""
        if name not in self.counters:
            self.counters[name] = Counter(name, help_text, tuple(labels))
        return self.counters[name]


REGISTRY = Registry()
ACCEPTED = REGISTRY.counter("chatops_messages_accepted_total",
                            "Messages committed to the inbox, by channel.", ["channel"])
REJECTED = REGISTRY.counter("chatops_messages_rejected_total",
                            "Messages or recipients refused at intake, by reason.", ["reason"])
TRIAGED = REGISTRY.counter("chatops_triage_total",
                           "Processed messages by outcome (P1..P4 for a new incident, or "
                           "joined, ignored, unreadable, held, command).", ["outcome"])
PAGES = REGISTRY.counter("chatops_pages_sent_total",
                         "Pager events delivered, by action.", ["action"])
REPLIES = REGISTRY.counter("chatops_replies_sent_total",
                           "Messages to reporters and rooms delivered, by channel.", ["channel"])
TICKETS = REGISTRY.counter("chatops_tickets_opened_total", "Tickets opened.")
DELIVERY_FAILURES = REGISTRY.counter("chatops_outbox_failures_total",
                                     "Failed delivery attempts, by kind and result "
                                     "(retry or dead).", ["kind", "result"])
SLA_REMINDERS = REGISTRY.counter("chatops_sla_reminders_total",
                                 "SLA reminders fired (warnings, overdue notices, escalations, "
                                 "handover reminders, digests), by kind.", ["kind"])
SLA_BREACHES = REGISTRY.counter("chatops_sla_breaches_total",
                                "Respond-by (respond) or update-by (update) times that passed "
                                "unmet.", ["kind"])
RECONNECTS = REGISTRY.counter("chatops_reconnects_total",
                              "Connection retries after a failure, by component.", ["component"])
RELOADS = REGISTRY.counter("chatops_reloads_total",
                           "Configuration reloads, by result (ok or rejected).", ["result"])
UNDECRYPTABLE = REGISTRY.counter("chatops_matrix_undecryptable_total",
                                 "Encrypted Matrix events the bot could not decrypt on arrival.")

_PAGE_ACTIONS = {OutboxKind.PAGE_TRIGGER: "trigger", OutboxKind.PAGE_ACKNOWLEDGE: "acknowledge",
                 OutboxKind.PAGE_RESOLVE: "resolve"}
_REPLY_CHANNELS = {OutboxKind.MAIL_SEND: "email", OutboxKind.CHAT_SEND: "matrix",
                   OutboxKind.CHAT_ANNOUNCE: "matrix"}


def delivered(kind: OutboxKind) -> None:
    """Count one delivered outbox entry under the counter its kind belongs to."""
    if kind in _PAGE_ACTIONS:
        PAGES.inc(action=_PAGE_ACTIONS[kind])
    elif kind in _REPLY_CHANNELS:
        REPLIES.inc(channel=_REPLY_CHANNELS[kind])
    elif kind is OutboxKind.TICKET_CREATE:
        TICKETS.inc()


def outcome_of(plan: Plan) -> str:
    """The triage outcome label of a processed message's plan."""
    if plan.held:
        return "held"
    if plan.new_incident is not None:
        return str(plan.new_incident.priority)
    for prefix in ("joined", "ignored", "unreadable"):
        if plan.outcome.startswith(prefix):
            return prefix
    return "command"


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


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _series(name: str, labels: Mapping[str, str], value: float) -> str:
    text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    number = repr(float(value)) if value != int(value) else str(int(value))
    return f"{name}{{{text}}} {number}" if text else f"{name} {number}"


def render(gauges: Iterable[tuple[str, str, Mapping[str, str], float]] = (),
           registry: Registry = REGISTRY) -> str:
    """The exposition text: every counter, then the gauges given as
    (name, help, labels, value) — series of one gauge name must be adjacent."""
    lines: list[str] = []
    for c in registry.counters.values():
        lines += [f"# HELP {c.name} {c.help}", f"# TYPE {c.name} counter"]
        lines += [_series(c.name, labels, v) for labels, v in c.samples()]
    seen: set[str] = set()
    for name, help_text, labels, value in gauges:
        if name not in seen:
            seen.add(name)
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        lines.append(_series(name, labels, value))
    return "\n".join(lines) + "\n"
