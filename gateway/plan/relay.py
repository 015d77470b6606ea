"""What the gateway says, and to whom, as outbox specs: pages, the incidents-room
announcement, notices in threads, and the same words to each reporter on the channel they
used (an email reply in their thread, or a reply in their chat thread)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateway.domain import Channel, Incident, OutboxKind, OutboxSpec, Reporter
from gateway.plan.answer_to import usable_address
from gateway.plan.replies import Sender, local_time, one_line, render, zone_name
from rules.book import Rulebook
from rules.types import Mailbox, Priority, TriageDecision

_SEVERITY = {
    Priority.P1: "critical",
    Priority.P2: "error",
    Priority.P3: "warning",
    Priority.P4: "info",
}


@dataclass(frozen=True)
class ChatSettings:
    """Which rooms are ours and who may run commands."""

    bot_user_id: str
    incidents_room: str
    report_rooms: dict[str, str]  # room id -> mailbox kind ("emergency" / "support")
    engineers: frozenset[str]
    min_power_level: int | None
    # trust = "verified-only" with encryption: act only on commands from trusted devices
    # (gateway.plan.e2ee), and on reports from trusted devices in these report rooms.
    verified_only: bool = False
    verified_report_rooms: frozenset[str] = frozenset()


def chat_to_incident(
    body: str, purpose: str, incidents_room: str, reply_to: str | None = None
) -> OutboxSpec:
    """A notice in the incident's own thread in the incidents room (root found at delivery)."""
    return OutboxSpec(
        OutboxKind.CHAT_SEND,
        {
            "room_id": incidents_room,
            "incident_thread": True,
            "thread_root": None,
            "reply_to": reply_to,
            "body": body,
            "purpose": purpose,
            "to": "the incidents room",
        },
    )


def chat_reply(
    room_id: str,
    thread_root: str | None,
    body: str,
    purpose: str,
    reply_to: str | None = None,
    to: str = "the room",
) -> OutboxSpec:
    """A notice in a given room, in a thread when `thread_root` is set."""
    return OutboxSpec(
        OutboxKind.CHAT_SEND,
        {
            "room_id": room_id,
            "incident_thread": False,
            "thread_root": thread_root,
            "reply_to": reply_to or thread_root,
            "body": body,
            "purpose": purpose,
            "to": to,
        },
    )


def to_reporters(
    incident: Incident,
    body: str,
    purpose: str,
    key: str,
    sender: Sender,
    now: datetime,
    automatic: bool = True,
) -> list[OutboxSpec]:
    """One message per reporter, on their own channel and in their own thread; `automatic`
    False when the body is an engineer's own words (gateway.plan.replies.render)."""
    specs = []
    for index, reporter in enumerate(incident.reporters):
        if reporter.channel is Channel.EMAIL and not usable_address(reporter.address):
            continue  # a list, system or odd address (gateway.plan.answer_to) is never mailed
        if reporter.channel is Channel.EMAIL:
            specs.append(
                _email(incident, reporter, body, purpose, f"{key}.{index}", sender, now, automatic)
            )
        elif reporter.room_id is not None:
            specs.append(
                chat_reply(
                    reporter.room_id, reporter.thread_root, body, purpose, to=reporter.address
                )
            )
    return specs


def _email(
    incident: Incident,
    reporter: Reporter,
    body: str,
    purpose: str,
    key: str,
    sender: Sender,
    now: datetime,
    automatic: bool = True,
) -> OutboxSpec:
    message_id = sender.message_id(incident.id, f"{purpose}.{key}")
    ids = list(reporter.message_ids)
    out = render(
        sender=sender,
        to=reporter.address,
        subject=f"Re: [{incident.ref}] {one_line(incident.title, 150)}",
        body=body + f"\n\n{sender.name}\n",
        message_id=message_id,
        in_reply_to=ids[-1] if ids else None,
        references=ids,
        now=now,
        automatic=automatic,
    )
    return OutboxSpec(
        OutboxKind.MAIL_SEND,
        {
            "purpose": purpose,
            "message_id": out.message_id,
            "mail_from": out.mail_from,
            "rcpt_to": out.rcpt_to,
            "data": out.data.decode("ascii", "surrogateescape"),
        },
    )


def page_spec(
    ref: str, title: str, decision: TriageDecision, sender: str, mailbox: Mailbox, source: str
) -> OutboxSpec:
    """A page; the incident reference is the dedup key, so retries never page twice."""
    if decision.priority is None:
        raise RuntimeError("priority is set here")
    return OutboxSpec(
        OutboxKind.PAGE_TRIGGER,
        {
            "dedup_key": ref,
            "summary": f"[{ref}] {decision.priority}: {title}",
            "severity": _SEVERITY[decision.priority],
            "source": source,
            "details": {
                "reference": ref,
                "priority": decision.priority,
                "reporter": sender,
                "mailbox": mailbox,
                "rule": decision.rule,
                "reasons": list(decision.reasons),
            },
        },
    )


def announcement(
    ref: str, title: str, decision: TriageDecision, reporter: str, channel: str, book: Rulebook
) -> str:
    """The incidents-room post that roots each incident's thread."""
    if decision.priority is None:
        raise RuntimeError("priority is set here")
    level = book.priorities.get(decision.priority)
    tz = book.hours.timezone
    lines = [
        f"{ref} · {decision.priority} {level.name}: {title}",
        f"What it means: {level.meaning}",
        f"Reported by {reporter} ({channel})",
        f"Why {decision.priority}: " + "; ".join(decision.reasons[:2]),
        f"Paged: {'yes' if decision.page else 'no'}",
    ]
    if decision.respond_by:
        lines.append(f"Respond by {local_time(decision.respond_by, tz)} ({zone_name(tz)})")
    lines.append("Reply in this thread with !ack, !update <text>, !resolve <text> or !help.")
    return "\n".join(lines)
