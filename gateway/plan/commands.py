"""Engineers' commands in the incidents room: parsing, authorisation, and the Plan each makes.

Pure: the chat message, the incident it concerns and the clock in; a Plan out. Whatever a
command changes, says to reporters or answers in the room goes through that Plan, so it is
applied exactly once however often the event is seen.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from gateway.domain import (
    ChatMessage,
    Incident,
    OutboxKind,
    OutboxSpec,
    Plan,
    PlanContext,
    Status,
    TimelineEvent,
    dumps,
)
from gateway.plan.command_table import HELP, USAGE
from gateway.plan.e2ee import untrusted_device_reason
from gateway.plan.relay import ChatSettings, chat_reply, page_spec, to_reporters
from gateway.plan.replies import Sender, local_time, zone_name
from gateway.plan.trust import UNVERIFIED_FLAG
from rules.book import Rulebook
from rules.engine import next_update_due, pages_at
from rules.types import Priority, TriageDecision

PAGED_ON_REQUEST = "paged on request"
_REF = re.compile(r"^INC-(\d{1,12})$", re.IGNORECASE)


@dataclass(frozen=True)
class Command:
    """A parsed command: its name, the incident it names (if any) and the rest of the text."""

    name: str
    ref: int | None
    text: str


@dataclass(frozen=True)
class CommandEnv:
    """Everything a command needs besides the message and the incident."""

    chat: ChatSettings
    book: Rulebook
    sender: Sender
    pager_source: str
    key: str  # unique per command event: makes Message-IDs and notices stable
    now: datetime


def parse_command(body: str) -> Command | None:
    """'!update INC-4 back to normal' → Command('update', 4, 'back to normal'); None if no '!'."""
    text = body.strip()
    if not text.startswith("!") or len(text) < 2:
        return None
    head, _, rest = text[1:].partition(" ")
    rest = rest.strip()
    first, _, after = rest.partition(" ")
    # !merge INC-7 names the incident to fold in, not the one the command acts on.
    match = _REF.match(first) if head.lower() != "merge" else None
    ref = int(match.group(1)) if match else None
    return Command(head.lower(), ref, after.strip() if match else rest)


def authorised(msg: ChatMessage, chat: ChatSettings) -> bool:
    """Allow-listed engineers, or anyone at or above the configured power level."""
    if msg.sender in chat.engineers:
        return True
    return chat.min_power_level is not None and msg.sender_power >= chat.min_power_level


def plan_command(msg: ChatMessage, command: Command, ctx: PlanContext, env: CommandEnv) -> Plan:
    """The Plan for one command from the incidents room."""
    early = _answer_only(msg, command, ctx, env)
    if early is not None:
        outcome, text = early
        return Plan(outcome=outcome, outbox=(_answerer(msg, env)(text),))
    handler, incident = _HANDLERS[command.name], ctx.thread
    if incident is None:
        raise RuntimeError("incident is set here")
    plan = handler(msg, command, incident, ctx, env)
    if plan.incident_id is None:  # a refusal or a usage answer
        return plan
    event = TimelineEvent(
        env.now, f"command.{command.name}", msg.sender, f"!{command.name} {command.text}".strip()
    )
    return replace(plan, timeline=(event, *plan.timeline))


def _answer_only(  # noqa: PLR0911  (one guard per kind of answer reads best)
    msg: ChatMessage, command: Command, ctx: PlanContext, env: CommandEnv
) -> tuple[str, str] | None:
    """(outcome, answer) for commands that change nothing: refusals, help, usage, status."""
    if not authorised(msg, env.chat):
        return "refused: not authorised", "Sorry, only the support engineers can run commands."
    untrusted = untrusted_device_reason(msg.device, "commands") if env.chat.verified_only else None
    if untrusted is not None:
        return "refused: device not trusted", untrusted
    if command.name == "help":
        return "help", HELP
    if command.name == "status":
        return "status", _status(ctx.open_incidents(), env)
    if command.name not in _HANDLERS:
        return "unknown command", f"Unknown command !{command.name}. Try !help."
    if command.name in USAGE and not command.text:
        return "usage", f"Usage: {USAGE[command.name]}"
    if ctx.thread is None:
        return "no incident", (
            "Which incident? Use the command in the incident's thread, or "
            f"name it: !{command.name} INC-42 …"
        )
    return None


Answer = Callable[[str], OutboxSpec]
Handler = Callable[[ChatMessage, Command, Incident, PlanContext, CommandEnv], Plan]


def _answerer(msg: ChatMessage, env: CommandEnv) -> Answer:
    root = msg.thread_root
    return lambda text: chat_reply(
        msg.room_id, root, text, "answer", reply_to=msg.event_id, to=msg.sender
    )


def _changed(
    incident: Incident,
    outcome: str,
    note: str,
    env: CommandEnv,
    msg: ChatMessage,
    *,
    changes: dict[str, object] | None = None,
    outbox: tuple[OutboxSpec, ...] = (),
    reopen: bool = False,
) -> Plan:
    answer = _answerer(msg, env)
    return Plan(
        outcome=outcome,
        incident_id=incident.id,
        changes=changes or {},
        reopen=reopen,
        outbox=(*outbox, answer(note)),
    )


def _ack(msg: ChatMessage, cmd: Command, inc: Incident, ctx: PlanContext, env: CommandEnv) -> Plan:
    if inc.status is not Status.OPEN:
        return _changed(inc, "ack: nothing to do", f"{inc.ref} is already {inc.status}.", env, msg)
    pages = _page_follow(inc, OutboxKind.PAGE_ACKNOWLEDGE)
    return _changed(
        inc,
        f"acknowledged {inc.ref}",
        f"{inc.ref} acknowledged by {msg.sender}.",
        env,
        msg,
        changes={"status": Status.ACKNOWLEDGED.value, "acknowledged_at": env.now},
        outbox=pages,
    )


def _page_follow(inc: Incident, kind: OutboxKind) -> tuple[OutboxSpec, ...]:
    # PagerDuty follows the incident with the same dedup_key, only if it was paged.
    return (OutboxSpec(kind, {"dedup_key": inc.ref}),) if inc.pages_sent else ()


def _relay(
    inc: Incident, text: str, purpose: str, env: CommandEnv, automatic: bool = True
) -> tuple[OutboxSpec, ...]:
    return tuple(to_reporters(inc, text, purpose, env.key, env.sender, env.now, automatic))


def _update(
    msg: ChatMessage, cmd: Command, inc: Incident, ctx: PlanContext, env: CommandEnv
) -> Plan:
    due = next_update_due(inc.priority, env.now, env.book)
    when = local_time(due, env.book.hours.timezone)
    zone = zone_name(env.book.hours.timezone)
    text = f"Update on {inc.ref} ({inc.title}):\n\n{cmd.text}\n\nNext update by {when} ({zone})."
    sent = _relay(inc, text, "update", env, automatic=False)  # an engineer's own words
    return _changed(
        inc,
        f"update relayed to {len(sent)}",
        f"Update sent to {len(sent)} reporter(s). Next update due by {when}.",
        env,
        msg,
        changes={"next_update_by": due},
        outbox=sent,
    )


def _note(msg: ChatMessage, cmd: Command, inc: Incident, ctx: PlanContext, env: CommandEnv) -> Plan:
    return _changed(inc, "noted", "Noted on the timeline (not sent to reporters).", env, msg)


def _sev(msg: ChatMessage, cmd: Command, inc: Incident, ctx: PlanContext, env: CommandEnv) -> Plan:
    level, _, reason = cmd.text.partition(" ")
    try:
        priority = Priority(level.upper())
    except ValueError:
        return Plan(outcome="usage", outbox=(_answerer(msg, env)(f"Usage: {USAGE['sev']}"),))
    if not reason.strip():
        return Plan(outcome="usage", outbox=(_answerer(msg, env)(f"Usage: {USAGE['sev']}"),))
    period = env.book.clock.period_at(env.now)
    outbox: tuple[OutboxSpec, ...] = ()
    if not inc.pages_sent and pages_at(priority, env.now, env.book):
        decision = TriageDecision(priority, True, True, False, None, (reason,), period, None, None)
        outbox = (
            page_spec(inc.ref, inc.title, decision, msg.sender, inc.mailbox, env.pager_source),
        )
    return _changed(
        inc,
        f"priority {inc.priority} -> {priority}",
        f"{inc.ref} is now {priority} (was {inc.priority}): {reason.strip()}"
        + (" Paging the on-call engineer." if outbox else ""),
        env,
        msg,
        changes={"priority": priority.value},
        outbox=outbox,
    )


def _title(
    msg: ChatMessage, cmd: Command, inc: Incident, ctx: PlanContext, env: CommandEnv
) -> Plan:
    new = cmd.text[:120]
    told = replace(inc, title=new)
    text = (
        f'We have renamed {inc.ref} from "{inc.title}" to "{new}" so that it describes '
        "the problem more precisely. Nothing else has changed."
    )
    sent = _relay(told, text, "title", env)
    return _changed(
        inc,
        "title changed",
        f"Title changed; {len(sent)} reporter(s) told.",
        env,
        msg,
        changes={"title": new},
        outbox=sent,
    )


def _resolve(
    msg: ChatMessage, cmd: Command, inc: Incident, ctx: PlanContext, env: CommandEnv
) -> Plan:
    if inc.status is Status.RESOLVED:
        return _changed(inc, "resolve: nothing to do", f"{inc.ref} is already resolved.", env, msg)
    text = (
        f"{inc.ref} ({inc.title}) is resolved.\n\n{cmd.text}\n\n"
        "If it is not fixed for you, reply to this message and we will reopen it."
    )
    sent = _relay(inc, text, "resolution", env, automatic=False)
    return _changed(
        inc,
        f"resolved {inc.ref}",
        f"{inc.ref} resolved; {len(sent)} reporter(s) told.",
        env,
        msg,
        changes={"status": Status.RESOLVED.value, "resolved_at": env.now},
        outbox=(*_page_follow(inc, OutboxKind.PAGE_RESOLVE), *sent),
    )


def _reopen(
    msg: ChatMessage, cmd: Command, inc: Incident, ctx: PlanContext, env: CommandEnv
) -> Plan:
    if inc.status is not Status.RESOLVED:
        return _changed(inc, "reopen: nothing to do", f"{inc.ref} is not resolved.", env, msg)
    return _changed(inc, f"reopened {inc.ref}", f"{inc.ref} reopened.", env, msg, reopen=True)


def _notincident(
    msg: ChatMessage, cmd: Command, inc: Incident, ctx: PlanContext, env: CommandEnv
) -> Plan:
    return _changed(
        inc,
        "not an incident",
        f"{inc.ref} is not an incident: {cmd.text}. The page is resolved; the ticket remains.",
        env,
        msg,
        outbox=_page_follow(inc, OutboxKind.PAGE_RESOLVE),
    )


def _role(field: str) -> Handler:
    def handler(
        msg: ChatMessage, cmd: Command, inc: Incident, ctx: PlanContext, env: CommandEnv
    ) -> Plan:
        # A user as the chat system names one (the adapter found it in the text): never a
        # word we would have to guess is a user.
        user = cmd.text.split()[0]
        if user not in msg.mentions:
            return Plan(outcome="usage", outbox=(_answerer(msg, env)(f"Usage: {USAGE[field]}"),))
        return _changed(
            inc,
            f"{field} set",
            f"{user} is now the {field} for {inc.ref}.",
            env,
            msg,
            changes={field: user},
        )

    return handler


def _merge(
    msg: ChatMessage, cmd: Command, inc: Incident, ctx: PlanContext, env: CommandEnv
) -> Plan:
    match = _REF.match(cmd.text.split()[0])
    other = ctx.find(int(match.group(1))) if match else None
    if other is None or other.id == inc.id:
        return Plan(
            outcome="usage",
            outbox=(
                _answerer(msg, env)(
                    f"Usage: {USAGE['merge']} (in the thread of the incident that stays open)"
                ),
            ),
        )
    plan = _changed(
        inc,
        f"merged {other.ref}",
        f"{other.ref}'s reporters now receive {inc.ref}'s updates.",
        env,
        msg,
    )
    return replace(plan, merge_source=other.id)


def _page(msg: ChatMessage, cmd: Command, inc: Incident, ctx: PlanContext, env: CommandEnv) -> Plan:
    """An engineer confirms a report (typically from an unverified sender): page once."""
    if inc.pages_sent or PAGED_ON_REQUEST in inc.flags:
        return _changed(inc, "page: nothing to do", f"{inc.ref} has already been paged.", env, msg)
    if inc.status is Status.RESOLVED:
        return _changed(
            inc, "page: resolved", f"{inc.ref} is resolved; !reopen it first.", env, msg
        )
    period = env.book.clock.period_at(env.now)
    decision = TriageDecision(
        inc.priority,
        True,
        True,
        False,
        inc.rule,
        (f"confirmed by {msg.sender}", *inc.reasons),
        period,
        None,
        None,
    )
    flags = [f for f in inc.flags if f != UNVERIFIED_FLAG] + [PAGED_ON_REQUEST]
    page = page_spec(inc.ref, inc.title, decision, msg.sender, inc.mailbox, env.pager_source)
    return _changed(
        inc,
        f"paged {inc.ref} on request",
        f"{inc.ref} confirmed by {msg.sender}. Paging the on-call engineer.",
        env,
        msg,
        changes={"flags": dumps(flags)},
        outbox=(page,),
    )


def _status(incidents: list[Incident], env: CommandEnv) -> str:
    if not incidents:
        return "No open incidents."
    tz = env.book.hours.timezone
    lines = []
    for inc in incidents:
        age = int((env.now - inc.created_at).total_seconds() // 60)
        due = local_time(inc.next_update_by, tz) if inc.next_update_by else "not set"
        lines.append(
            f"{inc.ref} {inc.priority} {inc.status}, {age} min old, "
            f"lead {inc.lead or 'none'}, next update by {due}: {inc.title}"
        )
    return "\n".join(lines)


_HANDLERS: dict[str, Handler] = {
    "ack": _ack,
    "update": _update,
    "note": _note,
    "sev": _sev,
    "title": _title,
    "resolve": _resolve,
    "reopen": _reopen,
    "notincident": _notincident,
    "lead": _role("lead"),
    "comms": _role("comms"),
    "merge": _merge,
    "page": _page,
}
ANSWER_ONLY = frozenset({"help", "status"})


def handled() -> frozenset[str]:
    """The command words this module plans (gateway.plan.escalation adds its own)."""
    return frozenset(_HANDLERS) | ANSWER_ONLY
