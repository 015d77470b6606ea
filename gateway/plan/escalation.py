"""The engineers' commands that reach outside the team: `!security` (escalate to the
security contacts at once) and `!statuspage open` (publish on the public status page), and
`!update --public` (an update that is also posted there).

Pure, like gateway.plan.commands, which handles every other command: a chat message, the
incident and the clock in, a Plan out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial

from gateway.domain import (
    ChatMessage,
    Incident,
    OutboxKind,
    OutboxSpec,
    Plan,
    PlanContext,
    TimelineEvent,
    dumps,
)
from gateway.plan.command_table import usage_of
from gateway.plan.commands import Command, CommandEnv, authorised, plan_command
from gateway.plan.mirror import SECURITY_FLAG, MirrorSettings, security_escalation
from gateway.plan.relay import chat_reply
from gateway.plan.replies import local_time, zone_name

PUBLIC_FLAG = "--public"
STATUSPAGE_NAME = "Possible issue being investigated"
STATUSPAGE_USAGE = usage_of("statuspage")
NAMES = frozenset({"security", "statuspage"})  # the commands planned here
Planner = Callable[[PlanContext], Plan]


def command_planner(
    msg: ChatMessage, command: Command, env: CommandEnv, s: MirrorSettings
) -> Planner:
    """The planner for one command: ours for these three, gateway.plan.commands' otherwise."""
    if command.name == "security":
        return partial(_security, msg, command, env, s)
    if command.name == "statuspage":
        return partial(_statuspage, msg, command, env, s)
    if command.name == "update" and command.text.split(" ", 1)[0] == PUBLIC_FLAG:
        bare = replace(command, text=command.text.removeprefix(PUBLIC_FLAG).strip())
        return partial(_public_update, msg, bare, env, s)
    return partial(plan_command, msg, command, env=env)


def _answer(msg: ChatMessage, text: str) -> OutboxSpec:
    return chat_reply(
        msg.room_id, msg.thread_root, text, "answer", reply_to=msg.event_id, to=msg.sender
    )


def _refusal(msg: ChatMessage, ctx: PlanContext, env: CommandEnv, name: str) -> Plan | None:
    if not authorised(msg, env.chat):
        return Plan(
            outcome="refused: not authorised",
            outbox=(_answer(msg, "Sorry, only the support engineers can run commands."),),
        )
    if ctx.thread is None:
        return Plan(
            outcome="no incident",
            outbox=(
                _answer(
                    msg,
                    "Which incident? Use the command in the incident's thread, or name it: "
                    f"!{name} INC-42 …",
                ),
            ),
        )
    return None


def is_security(incident: Incident, s: MirrorSettings) -> bool:
    """Escalated by hand, or opened by a rule that escalates."""
    return SECURITY_FLAG in incident.flags or (incident.rule or "") in s.escalating_rules


def _security(
    msg: ChatMessage, cmd: Command, env: CommandEnv, s: MirrorSettings, ctx: PlanContext
) -> Plan:
    refused = _refusal(msg, ctx, env, "security")
    if refused is not None:
        return refused
    inc = ctx.thread
    if inc is None:
        raise RuntimeError("inc is set here")
    reporter = ", ".join(r.address for r in inc.reporters) or "unknown"
    why = f"{msg.sender}: {cmd.text}" if cmd.text else f"{msg.sender} (by hand)"
    specs, event = security_escalation(inc.ref, inc.title, inc.priority, reporter, why, s, env.now)
    told = (
        f"{len(specs)} security contact(s) notified"
        if specs
        else ("No security contacts are configured ([security] in the configuration)")
    )
    flags = inc.flags if SECURITY_FLAG in inc.flags else (*inc.flags, SECURITY_FLAG)
    return Plan(
        outcome=f"security escalation of {inc.ref}",
        incident_id=inc.id,
        changes={"flags": dumps(list(flags))},
        timeline=(replace(event, actor=msg.sender),),
        outbox=(
            *specs,
            _answer(msg, f"{told} for {inc.ref}. It will not be published on the status page."),
        ),
    )


def _statuspage(
    msg: ChatMessage, cmd: Command, env: CommandEnv, s: MirrorSettings, ctx: PlanContext
) -> Plan:
    refused = _refusal(msg, ctx, env, "statuspage")
    if refused is not None:
        return refused
    inc = ctx.thread
    if inc is None:
        raise RuntimeError("inc is set here")
    action, _, rest = cmd.text.partition(" ")
    words = rest.split()
    names = []
    # Component names are matched exactly: the message starts at the first other word.
    while words and s.statuspage is not None and words[0] in s.statuspage.components:
        names.append(words.pop(0))
    problem = _cannot_publish(msg, inc, s, action, names)
    if problem is not None:
        return Plan(outcome="statuspage refused", outbox=(_answer(msg, problem),))
    if s.statuspage is None:
        raise RuntimeError("statuspage is set here")
    when = (
        f" We will post an update by {local_time(inc.next_update_by, env.book.hours.timezone)}"
        f" ({zone_name(env.book.hours.timezone)})."
        if inc.next_update_by
        else ""
    )
    body = (
        f"We are investigating a possible issue affecting {', '.join(names)}. "
        f"{' '.join(words)}".strip()
        + when
    )
    name = f"{STATUSPAGE_NAME}: {', '.join(names)}"
    spec = OutboxSpec(
        OutboxKind.STATUSPAGE_OPEN,
        {
            "name": name,
            "body": body,
            "at": env.now.isoformat(),
            "component_ids": [s.statuspage.components[n] for n in names],
        },
    )
    event = replace(_event(msg, cmd, env), text=f"Publishing on the status page: {body}")
    return Plan(
        outcome=f"statuspage opened for {inc.ref}",
        incident_id=inc.id,
        timeline=(event,),
        outbox=(spec, _answer(msg, f"Publishing on the status page ({', '.join(names)}): {body}")),
    )


def _cannot_publish(
    msg: ChatMessage, inc: Incident, s: MirrorSettings, action: str, names: list[str]
) -> str | None:
    sp = s.statuspage
    if sp is None:
        return "The status page is not configured ([statuspage] in the configuration)."
    if action != "open" or not names:
        return f"Usage: {STATUSPAGE_USAGE}; components: " + ", ".join(sorted(sp.components))
    if is_security(inc, s):
        return f"{inc.ref} is a security incident: its details are not published."
    if inc.priority.rank > sp.min_priority.rank:
        return (
            f"{inc.ref} is {inc.priority}; only {sp.min_priority} and above go on the status page."
        )
    if inc.comms and msg.sender not in (inc.comms, inc.lead):
        return f"The comms person for {inc.ref} ({inc.comms}) publishes on the status page."
    return None


def _event(msg: ChatMessage, cmd: Command, env: CommandEnv) -> TimelineEvent:
    return TimelineEvent(
        env.now, f"command.{cmd.name}", msg.sender, f"!{cmd.name} {cmd.text}".strip()
    )


def _public_update(
    msg: ChatMessage, cmd: Command, env: CommandEnv, s: MirrorSettings, ctx: PlanContext
) -> Plan:
    plan = plan_command(msg, cmd, ctx, env)
    inc = ctx.thread
    if plan.incident_id is None or inc is None:
        return plan
    if s.statuspage is None or is_security(inc, s):
        why = (
            "the status page is not configured"
            if s.statuspage is None
            else "security incidents are not published"
        )
        return replace(plan, outbox=(*plan.outbox, _answer(msg, f"Not posted publicly: {why}.")))
    spec = OutboxSpec(OutboxKind.STATUSPAGE_UPDATE, {"body": cmd.text, "at": env.now.isoformat()})
    return replace(plan, outbox=(*plan.outbox, spec))
