"""The engineers' command table: how each command in the incidents room is written and
what it does. `!help` is made from it, usage answers quote it, and the tests hold the
parser (gateway.plan.commands, gateway.plan.escalation) to it. Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["COMMANDS", "HELP", "USAGE", "CommandDoc", "usage_of"]


@dataclass(frozen=True)
class CommandDoc:
    """One line of the command table: how a command is written and what it does."""

    usage: str  # "!sev P1|P2|P3|P4 <reason>": the name, then its arguments
    effect: str
    needs_text: bool = False  # without arguments the usage is the answer

    @property
    def name(self) -> str:
        """The command word, e.g. "sev"."""
        return self.usage[1:].split(" ", 1)[0]


# The one list of commands: !help is made from it and the tests hold the parser to it
# (this module's handlers, and gateway.plan.escalation's !security and !statuspage).
COMMANDS = (
    CommandDoc("!ack", "acknowledged; the PagerDuty alert is acknowledged too"),
    CommandDoc(
        "!update <text for the reporters>",
        "sent to every reporter; the next-update clock restarts",
        needs_text=True,
    ),
    CommandDoc("!update --public <text>", "the same, and posted on the status page"),
    CommandDoc("!note <text>", "timeline only, never sent to reporters", needs_text=True),
    CommandDoc(
        "!sev P1|P2|P3|P4 <reason>",
        "change priority (raising to a paging priority pages)",
        needs_text=True,
    ),
    CommandDoc("!title <new title>", "rename; reporters are told why", needs_text=True),
    CommandDoc(
        "!resolve <what was done>",
        "resolved; reporters are told, the page resolved",
        needs_text=True,
    ),
    CommandDoc("!reopen", "reopen a resolved incident"),
    CommandDoc(
        "!notincident <reason>", "the page is resolved, the ticket remains", needs_text=True
    ),
    CommandDoc("!lead @user:server", "name the incident lead", needs_text=True),
    CommandDoc("!comms @user:server", "name the comms person", needs_text=True),
    CommandDoc(
        "!merge INC-7", "INC-7's reporters now receive this incident's updates", needs_text=True
    ),
    CommandDoc("!page", "page the on-call engineer for a report from an unverified sender"),
    CommandDoc("!security [why]", "notify the security contacts at once"),
    CommandDoc("!statuspage open <component…> <message>", "publish on the status page"),
    CommandDoc("!status", "open incidents with priority, age, lead and next update due"),
    CommandDoc("!help", "this list"),
)
HELP = "\n".join(
    [
        "Commands (in an incident's thread, or naming it: !ack INC-42):",
        *(f"{doc.usage} — {doc.effect}" for doc in COMMANDS),
    ]
)
USAGE = {doc.name: doc.usage for doc in COMMANDS if doc.needs_text}


def usage_of(name: str) -> str:
    """The first table line of a command, e.g. "!statuspage open <component…> <message>"."""
    return next(doc.usage for doc in COMMANDS if doc.name == name)
