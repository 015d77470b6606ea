"""The incident's SLA clocks and the incident report draft, both read from its timeline.

Pure: an Incident (with timeline), the rulebook and `now` in; clock verdicts and Markdown
out. The report follows the support process: summary, priority history, impact as
reported (the reporters' own words), the timeline with times, actions, reporters notified
and when, escalation contacts notified (kept apart), each SLA promise met or missed, and
follow-ups (the `!note` lines). Security incidents are marked not for
publication.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime

from gateway.domain import Incident, Status, TimelineEvent
from rules.book import OohClass, Rulebook
from rules.engine import label, next_update_due
from rules.sla import ClockVerdict, response_clock, update_clocks
from rules.types import Priority

_PRIORITY = re.compile(r"^(P[1-4])\b")
_ACTIONS = (
    "command.ack",
    "command.sev",
    "command.title",
    "command.lead",
    "command.comms",
    "command.resolve",
    "command.reopen",
    "command.notincident",
    "command.merge",
    "paged",
    "ticketed",
    "reopened",
)


def update_sends(incident: Incident) -> list[tuple[datetime, str]]:
    """When reporters were given an update (by an engineer, or a holding reply)."""
    how = {"command.update": "update", "sla.holding": "holding reply"}
    return [(e.at, how[e.kind]) for e in incident.timeline if e.kind in how]


def clocks(incident: Incident, book: Rulebook, now: datetime) -> list[ClockVerdict]:
    """The response promise (if any) and every update promise, judged at `now`."""
    found = []
    if incident.respond_by is not None:
        acked = next((e.at for e in incident.timeline if e.kind == "command.ack"), None)
        found.append(response_clock(incident.respond_by, acked, now))
    first = next_update_due(incident.priority, incident.created_at, book)
    found += update_clocks(
        incident.priority,
        first,
        update_sends(incident),
        book,
        now,
        still_open=incident.status is not Status.RESOLVED,
    )
    return found


def clock_lines(incident: Incident, book: Rulebook, now: datetime) -> list[str]:
    """One line per promise, in the team's local time."""
    when = _when(book)
    return [verdict.describe(when) for verdict in clocks(incident, book, now)]


def is_security(incident: Incident, book: Rulebook) -> bool:
    """A security incident: triaged by a security rule, or flagged as one."""
    if "security" in incident.flags:
        return True
    rule = next((r for r in book.rules if r.id == incident.rule), None)
    return rule is not None and (
        rule.ooh_class is OohClass.SECURITY_BREACH or "security" in rule.id
    )


def priority_history(incident: Incident) -> list[tuple[datetime, str, str]]:
    """(when, priority, why) from triage and each !sev."""
    history = []
    for e in incident.timeline:
        if e.kind == "triaged" and (m := _PRIORITY.match(e.text)):
            history.append((e.at, m.group(1), "triage by the rulebook"))
        elif e.kind == "command.sev":
            parts = e.text.split(maxsplit=2)
            if len(parts) >= 2 and parts[1].upper() in Priority.__members__:
                why = parts[2] if len(parts) > 2 else ""
                history.append((e.at, parts[1].upper(), f"{e.actor}: {why}".strip()))
    return history


def render_report(incident: Incident, book: Rulebook, now: datetime) -> str:
    """The incident report draft, in Markdown."""
    when = _when(book)
    out = [f"# {incident.ref}: {incident.title}", ""]
    if is_security(incident, book):
        out += [
            "> **NOT FOR PUBLICATION**: security incident. Share only with the cyber "
            "security team and those handling it.",
            "",
        ]
    out += [
        "*Draft generated from the incident timeline; edit before review.*",
        "",
        "## Summary",
        "",
        f"- Priority: {incident.priority} ({book.priorities.get(incident.priority).name})",
        f"- Status: {incident.status}",
        f"- Reported: {when(incident.created_at)} ({incident.mailbox} mailbox)",
        f"- Lead: {incident.lead or 'not named'}; comms: {incident.comms or 'not named'}",
        f"- Reporters: {len(incident.reporters)}",
        "",
        "## Priority history",
        "",
    ]
    out += [f"- {when(at)}: {p} ({why})" for at, p, why in priority_history(incident)] or [
        f"- {incident.priority} throughout"
    ]
    out += ["", "## Impact as reported", ""]
    out += [
        f"- {when(e.at)} {e.actor}: {_quote(_as_reported(e))}"
        for e in incident.timeline
        if e.kind in ("reported", "reporter.replied")
    ]
    out += ["", "## Timeline", ""]
    out += [f"- {when(e.at)} · {e.kind} · {e.actor}: {_quote(e.text)}" for e in incident.timeline]
    out += ["", "## Actions", ""]
    out += [
        f"- {when(e.at)} {e.actor}: {_quote(e.text)}"
        for e in incident.timeline
        if e.kind in _ACTIONS or e.kind.startswith("sla.escalate")
    ] or ["- none recorded"]
    out += ["", "## Reporters notified", ""]
    out += [
        f"- {when(e.at)}: {_quote(e.text)}"
        for e in incident.timeline
        if e.kind == "replied" and not _to_contacts(e)
    ] or ["- none recorded"]
    out += ["", "## Escalation contacts notified", ""]
    out += [f"- {when(e.at)}: {_quote(e.text)}" for e in incident.timeline if _to_contacts(e)] or [
        "- none recorded"
    ]
    out += ["", "## SLA", ""]
    out += [f"- {line}" for line in clock_lines(incident, book, now)]
    out += ["", "## Follow-ups", "", "*From `!note` lines; each still needs an owner.*", ""]
    out += [
        f"- [ ] {_note(e)} ({e.actor}, {when(e.at)})"
        for e in incident.timeline
        if e.kind == "command.note"
    ] or ["- none noted"]
    return "\n".join(out) + "\n"


def _as_reported(event: TimelineEvent) -> str:
    """What the reporter wrote: the subject and text of an emailed report (kept with the
    event since reports carry it), the body of a chat report, the text of a reply."""
    if event.kind == "reported" and isinstance(event.data.get("text"), str):
        subject = str(event.data.get("subject") or "").strip()
        text = event.data["text"].strip()
        return f"{subject} — {text}" if subject and text else subject or text or event.text
    return event.text.removeprefix("Reported in chat: ")


def _to_contacts(event: TimelineEvent) -> bool:
    """A notice to escalation or security contacts rather than to reporters. The worker words
    these "<Purpose> emailed to …", "<Purpose> posted to …" and "Escalation page sent via …"."""
    if event.kind == "paged":
        return event.text.startswith("Escalation")
    return event.kind == "replied" and event.text.startswith(("Escalation", "Security"))


def _note(event: TimelineEvent) -> str:
    return _quote(event.text.removeprefix("!note").strip())


def _quote(text: str) -> str:
    """One line, with Markdown that could restructure the report neutralised."""
    flat = " ".join(text.split())
    return re.sub(r"([\\`*_\[\]<>#|])", r"\\\1", flat)[:1000]


def _when(book: Rulebook) -> Callable[[datetime], str]:
    clock = book.clock
    return lambda at: label(clock, at)
