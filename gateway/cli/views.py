"""What the operator CLI shows: incidents, the outbox, and a triage explanation, as JSON-ready
dicts and as plain text. Reads the state through the read port (gateway.read_ports) on a
connection of its own, read-only and without a lease, on SQLite or PostgreSQL alike, so it
works while the daemons run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

from gateway.cli.printable import printable
from gateway.config.model import Config
from gateway.deliver.deadletter import retry_note
from gateway.domain import Incident
from gateway.parse.mail import UnparseableMessage, parse_mail
from gateway.plan.pipeline import report_for
from gateway.plan.report import clock_lines, clocks, render_report
from gateway.read_ports import StateOperator, StateReader, StateUnavailable
from gateway.store import factory
from rules.book import Rulebook
from rules.engine import triage
from rules.types import Mailbox

R = TypeVar("R", bound=StateReader)


class UsageError(Exception):
    """Bad input from the command line: the CLI exits 2 with the message."""


@contextmanager
def open_readonly(config: Config) -> Iterator[StateReader]:
    """The state's read port on the configured backend (read-only; no lease); UsageError
    when there is no state yet or the database does not answer."""
    with _state(factory.open_reader, config) as reader:
        yield reader


@contextmanager
def open_for_operator(config: Config) -> Iterator[StateOperator]:
    """The same, able to retry a dead entry or release held mail."""
    with _state(factory.open_operator, config) as operator:
        yield operator


@contextmanager
def _state(open_: Callable[[Config], R], config: Config) -> Iterator[R]:
    try:
        port = open_(config)
    except StateUnavailable as exc:
        raise UsageError(str(exc)) from None
    try:
        yield port
    except StateUnavailable as exc:
        raise UsageError(str(exc)) from None
    finally:
        port.close()


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def incident_dict(incident: Incident) -> dict[str, Any]:
    """The JSON shape of an incident."""
    return {
        "reference": incident.ref,
        "priority": incident.priority.value,
        "status": incident.status.value,
        "title": incident.title,
        "mailbox": incident.mailbox.value,
        "created_at": _iso(incident.created_at),
        "rule": incident.rule,
        "reasons": list(incident.reasons),
        "period": incident.period.value if incident.period else None,
        "respond_by": _iso(incident.respond_by),
        "next_update_by": _iso(incident.next_update_by),
        "flags": list(incident.flags),
        "reporters": [
            {"channel": r.channel.value, "address": r.address, "message_ids": list(r.message_ids)}
            for r in incident.reporters
        ],
        "pages_sent": incident.pages_sent,
        "timeline": [
            {"at": _iso(e.at), "kind": e.kind, "actor": e.actor, "text": e.text}
            for e in incident.timeline
        ],
    }


def _ref_id(ref: str) -> int | None:
    number = ref.upper().removeprefix("INC-")
    return int(number) if number.isdigit() else None


def list_incidents(reader: StateReader) -> list[dict[str, Any]]:
    """Every incident (without timelines), newest first."""
    out = []
    for incident in reader.incidents():
        item = incident_dict(incident)
        del item["timeline"]
        out.append(item)
    return out


def show_incident(
    reader: StateReader, ref: str, book: Rulebook | None = None, now: datetime | None = None
) -> dict[str, Any] | None:
    """One incident with its timeline (and its SLA clocks at `now`, given the rulebook)."""
    incident = _load(reader, ref)
    if incident is None:
        return None
    item = incident_dict(incident)
    if book is not None and now is not None:
        item["clocks"] = [
            {
                "name": c.name,
                "due": _iso(c.due),
                "state": c.state,
                "done_at": _iso(c.done_at),
                "how": c.how or None,
            }
            for c in clocks(incident, book, now)
        ]
        item["clock_lines"] = clock_lines(incident, book, now)
    return item


def _load(reader: StateReader, ref: str) -> Incident | None:
    number = _ref_id(ref)
    return reader.incident(number) if number is not None else None


def incident_report(reader: StateReader, ref: str, book: Rulebook, now: datetime) -> str | None:
    """The Markdown incident report draft, or None for an unknown reference."""
    incident = _load(reader, ref)
    return None if incident is None else printable(render_report(incident, book, now))


def incidents_table(items: list[dict[str, Any]]) -> str:
    """A compact table for humans."""
    if not items:
        return "No incidents."
    lines = [f"{'REF':<9} {'PRI':<3} {'STATUS':<12} {'PAGES':>5}  TITLE"]
    for i in items:
        lines.append(
            f"{i['reference']:<9} {i['priority']:<3} {i['status']:<12} "
            f"{i['pages_sent']:>5}  {i['title']}"
        )
    return printable("\n".join(lines))


def incident_text(item: dict[str, Any]) -> str:
    """One incident for humans."""
    lines = [
        f"{item['reference']}  {item['priority']}  {item['status']}  {item['title']}",
        f"  rule: {item['rule']}    period: {item['period']}",
        f"  respond by: {item['respond_by']}    next update by: {item['next_update_by']}",
        f"  pages sent: {item['pages_sent']}",
        "  reasons: " + "; ".join(item["reasons"]),
        "  reporters: " + ", ".join(f"{r['address']} ({r['channel']})" for r in item["reporters"]),
    ]
    lines += ["  clocks:", *(f"    {line}" for line in item.get("clock_lines", []))]
    lines.append("  timeline:")
    lines += [f"    {e['at']}  {e['kind']:<18} {e['actor']}: {e['text']}" for e in item["timeline"]]
    return printable("\n".join(lines))


def outbox_list(reader: StateReader, state: str | None) -> list[dict[str, Any]]:
    """Outbox entries (kinds, states, attempts, errors), never their payloads."""
    return reader.outbox(state)


def outbox_table(rows: list[dict[str, Any]]) -> str:
    """Outbox entries for humans: one line each, the last error shortened."""
    if not rows:
        return "No outbox entries."
    lines = [
        f"{'ID':>6} {'KIND':<18} {'INC':>5} {'STATE':<8} {'TRIES':>5}  {'NEXT ATTEMPT':<25}"
        "  LAST ERROR"
    ]
    for r in rows:
        inc = "" if r["incident_id"] is None else f"{r['incident_id']}"
        error = (r["last_error"] or "").replace("\n", " ")
        error = error if len(error) <= 60 else error[:59] + "…"
        lines.append(
            f"{r['id']:>6} {r['kind']:<18} {inc:>5} {r['state']:<8} {r['attempts']:>5}  "
            f"{r['next_attempt_at'] or '':<25}  {error}"
        )
    return "\n".join(lines)


def retry_outbox(config: Config, outbox_id: int, now: datetime) -> None:
    """Send a dead outbox entry back for delivery (the running daemon polls for it); raises
    UsageError naming the problem when the entry is unknown or not dead."""
    with open_for_operator(config) as operator:
        state = operator.retry_dead(outbox_id, now, retry_note)
    if state == "unknown":
        raise UsageError(f"no outbox entry {outbox_id}")
    if state is not None:
        raise UsageError(
            f"outbox entry {outbox_id} is {state}, not dead: only dead entries can be retried"
        )


def triage_json(raw: bytes, mailbox: str, at: datetime, book: Rulebook) -> dict[str, Any]:
    """The decision for one message, explained, without touching any state."""
    try:
        mail = parse_mail(raw, None)
    except UnparseableMessage as exc:
        raise UsageError(f"unreadable message: {exc}") from None
    decision = triage(report_for(Mailbox(mailbox), None, mail), at, book)
    return {
        "priority": decision.priority.value if decision.priority else None,
        "page": decision.page,
        "ticket": decision.ticket,
        "reply": decision.reply,
        "rule": decision.rule,
        "reasons": list(decision.reasons),
        "period": decision.period.value,
        "respond_by": _iso(decision.respond_by),
        "next_update_by": _iso(decision.next_update_by),
        "ignored": decision.ignored,
    }


def triage_text(result: dict[str, Any]) -> str:
    """The same for humans."""
    if result["ignored"]:
        return printable(f"ignored: {result['ignored']}")
    acts = [name for name in ("page", "ticket", "reply") if result[name]]
    return printable(
        "\n".join(
            [
                f"{result['priority']} by rule {result['rule']} ({result['period']}): "
                f"{', '.join(acts)}",
                *[f"  - {r}" for r in result["reasons"]],
                f"  respond by {result['respond_by']}; next update by {result['next_update_by']}",
            ]
        )
    )
