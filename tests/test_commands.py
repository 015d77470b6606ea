"""Engineers' commands and chat reports, as pure plans: no event loop, no homeserver."""

from __future__ import annotations

import email
from email import policy

from gateway.domain import (
    Channel,
    ChatKind,
    ChatMessage,
    Incident,
    OutboxKind,
    Plan,
    PlanContext,
    Reporter,
    Status,
)
from gateway.plan.chat import plan_report_room, should_ignore
from gateway.plan.commands import Command, CommandEnv, parse_command, plan_command
from gateway.plan.relay import ChatSettings
from gateway.plan.replies import Sender
from rules.book import default_rulebook
from rules.types import Mailbox, Priority
from tests.conftest import IN_HOURS

BOOK = default_rulebook()
CHAT = ChatSettings("@bot:hs", "!inc:hs", {"!ask:hs": "support"}, frozenset({"@eng:hs"}), 50)
SENDER = Sender("emergency@gw.example", "Platform support", "gw.example", "loop")
ENV = CommandEnv(CHAT, BOOK, SENDER, "chatops-gateway", "c9", IN_HOURS)
REPORTERS = (
    Reporter(Channel.EMAIL, "alice@tenant.example", ("<r1@tenant.example>",)),
    Reporter(Channel.CHAT, "@tenant:hs", ("mx:$rep",), "!ask:hs", "$rep"),
)


def incident(
    status: Status = Status.OPEN, pages: int = 1, priority: Priority = Priority.P1, number: int = 4
) -> Incident:
    return Incident(
        number,
        f"INC-{number}",
        "Site down",
        priority,
        status,
        Mailbox.EMERGENCY,
        IN_HOURS,
        "apps-not-served",
        (),
        None,
        None,
        None,
        REPORTERS,
        (),
        pages,
    )


def msg(
    body: str,
    sender: str = "@eng:hs",
    power: int = 0,
    kind: ChatKind = ChatKind.TEXT,
    room: str = "!inc:hs",
    thread: str | None = "$root",
) -> ChatMessage:
    # The users a message names, as a chat adapter would find them (here: "@…" words).
    mentions = tuple(word for word in body.split() if word.startswith("@"))
    return ChatMessage(
        room, "$ev", sender, body, kind, thread, sender_power=power, mentions=mentions
    )


def run(body: str, inc: Incident | None = None, **kw: object) -> Plan:
    m = msg(body, **kw)  # type: ignore[arg-type]
    command = parse_command(body)
    assert command is not None
    ctx = PlanContext(
        inc, 99, lambda i: incident(number=7) if i == 7 else None, lambda: [incident()]
    )
    return plan_command(m, command, ctx, ENV)


def answers(plan: Plan) -> list[str]:
    return [
        s.payload["body"]
        for s in plan.outbox
        if s.kind is OutboxKind.CHAT_SEND and s.payload["purpose"] == "answer"
    ]


def kinds(plan: Plan) -> list[OutboxKind]:
    return [s.kind for s in plan.outbox]


def test_parse_command_reads_name_reference_and_text() -> None:
    """'!update INC-4 text' names the incident; without a reference the text is all."""
    assert parse_command("!update INC-4 all good") == Command("update", 4, "all good")
    assert parse_command("!Ack") == Command("ack", None, "")
    assert parse_command("!merge INC-7") == Command("merge", None, "INC-7")
    assert parse_command("ack") is None and parse_command("!") is None


def test_unauthorised_user_is_refused_and_nothing_changes() -> None:
    """A stranger's !resolve gets a short refusal; the plan touches no incident."""
    plan = run("!resolve fixed", incident(), sender="@random:hs")
    assert plan.incident_id is None and plan.changes == {}
    assert answers(plan) == ["Sorry, only the support engineers can run commands."]


def test_power_level_authorises() -> None:
    """Someone at the configured power level may run commands."""
    plan = run("!ack", incident(), sender="@mod:hs", power=50)
    assert plan.changes["status"] == "acknowledged"


def test_ack_acknowledges_and_follows_the_page() -> None:
    """!ack marks the incident acknowledged and acknowledges the page with its dedup key."""
    plan = run("!ack", incident())
    assert plan.changes["status"] == "acknowledged"
    [page] = [s for s in plan.outbox if s.kind is OutboxKind.PAGE_ACKNOWLEDGE]
    assert page.payload == {"dedup_key": "INC-4"}
    assert [e.kind for e in plan.timeline] == ["command.ack"]


def test_ack_without_a_page_does_not_touch_the_pager() -> None:
    """An incident that was never paged has nothing to acknowledge at PagerDuty."""
    assert OutboxKind.PAGE_ACKNOWLEDGE not in kinds(run("!ack", incident(pages=0)))


def test_update_reaches_every_reporter_on_their_channel() -> None:
    """!update sends one threaded email and one chat-thread reply, and moves the clock."""
    plan = run("!update We have found the cause.", incident())
    mail = [s for s in plan.outbox if s.kind is OutboxKind.MAIL_SEND]
    chat = [
        s
        for s in plan.outbox
        if s.kind is OutboxKind.CHAT_SEND and s.payload["purpose"] == "update"
    ]
    assert len(mail) == 1 and len(chat) == 1
    m = email.message_from_bytes(mail[0].payload["data"].encode(), policy=policy.default)
    assert m["In-Reply-To"] == "<r1@tenant.example>" and "[INC-4]" in m["Subject"]
    assert "We have found the cause." in m.get_content()
    assert chat[0].payload["room_id"] == "!ask:hs" and chat[0].payload["thread_root"] == "$rep"
    assert plan.changes["next_update_by"] > IN_HOURS


def test_note_is_timeline_only() -> None:
    """!note records but sends nothing to reporters."""
    plan = run("!note looked at the LB", incident())
    assert kinds(plan) == [OutboxKind.CHAT_SEND] and len(answers(plan)) == 1
    assert plan.timeline[0].text == "!note looked at the LB"


def test_resolve_tells_reporters_how_to_reopen_and_resolves_the_page() -> None:
    """!resolve tells each reporter it is resolved and that replying reopens it."""
    plan = run("!resolve Restarted the router.", incident())
    assert plan.changes["status"] == "resolved"
    assert OutboxKind.PAGE_RESOLVE in kinds(plan)
    mail = next(s for s in plan.outbox if s.kind is OutboxKind.MAIL_SEND)
    body = email.message_from_bytes(
        mail.payload["data"].encode(), policy=policy.default
    ).get_content()
    assert "Restarted the router." in body and "reply to this message" in body


def test_title_change_is_explained_to_reporters() -> None:
    """!title renames and tells reporters the new title and why."""
    plan = run("!title failure pushing app: invalid mode 0444", incident())
    assert plan.changes["title"] == "failure pushing app: invalid mode 0444"
    [mail] = [s for s in plan.outbox if s.kind is OutboxKind.MAIL_SEND]
    [chat] = [
        s
        for s in plan.outbox
        if s.payload.get("purpose") == "title" and s.kind is OutboxKind.CHAT_SEND
    ]
    msg_ = email.message_from_bytes(mail.payload["data"].encode(), policy=policy.default)
    body = msg_.get_content()
    assert "failure pushing app: invalid mode 0444" in msg_["Subject"]
    for text in (body, chat.payload["body"]):
        assert '"Site down"' in text and "describes the problem more precisely" in text


def test_sev_raising_to_p1_pages_when_not_paged() -> None:
    """!sev P1 on an unpaged incident pages; the reason is required."""
    plan = run("!sev P1 all tenants affected", incident(pages=0, priority=Priority.P3))
    assert plan.changes["priority"] == "P1" and OutboxKind.PAGE_TRIGGER in kinds(plan)
    assert answers(run("!sev P9 x", incident())) == ["Usage: !sev P1|P2|P3|P4 <reason>"]
    assert answers(run("!sev P2", incident())) == ["Usage: !sev P1|P2|P3|P4 <reason>"]


def test_merge_makes_the_other_incident_follow() -> None:
    """!merge INC-7 in INC-4's thread makes INC-7's reporters follow INC-4."""
    plan = run("!merge INC-7", incident())
    assert plan.merge_source == 7 and plan.incident_id == 4
    assert answers(run("!merge INC-8", incident()))[0].startswith("Usage")


def test_lead_needs_a_user_id() -> None:
    """!lead takes a user the chat system names; any other word gets the usage line."""
    assert run("!lead @bob:hs", incident()).changes == {"lead": "@bob:hs"}
    assert answers(run("!lead bob", incident())) == ["Usage: !lead @user:server"]


def test_command_outside_a_thread_asks_which_incident() -> None:
    """A command with no thread and no reference asks which incident is meant."""
    plan = run("!ack", None, thread=None)
    assert plan.incident_id is None and "Which incident?" in answers(plan)[0]


def test_help_status_and_unknown() -> None:
    """!help lists commands, !status lists open incidents, an unknown command says so."""
    assert "!update" in answers(run("!help"))[0]
    assert "INC-4 P1 open" in answers(run("!status"))[0]
    assert answers(run("!frobnicate")) == ["Unknown command !frobnicate. Try !help."]


def test_notices_edits_and_own_messages_are_never_answered() -> None:
    """Notices, edits, what is not text and the bot's own messages are ignored."""
    assert should_ignore(msg("!help", kind=ChatKind.NOTICE), CHAT)
    assert should_ignore(msg("!help", sender="@bot:hs"), CHAT)
    assert should_ignore(msg("!help", kind=ChatKind.EDIT), CHAT)
    assert should_ignore(msg("!help", kind=ChatKind.OTHER), CHAT)
    assert should_ignore(msg("!help"), CHAT) is None


def test_report_room_message_opens_an_incident_and_answers_in_thread() -> None:
    """A tenant's 'site is down' in a report room: incident, announcement, thread reply."""
    m = msg(
        "Our site is down, every request gives 502",
        sender="@tenant:hs",
        room="!ask:hs",
        thread=None,
    )
    plan = plan_report_room(m, None, 5, BOOK, CHAT, "gw", IN_HOURS)
    assert plan.new_incident is not None and plan.new_incident.priority is Priority.P1
    assert kinds(plan)[0] is OutboxKind.CHAT_ANNOUNCE
    ack = next(s for s in plan.outbox if s.payload.get("purpose") == "acknowledgement")
    assert ack.payload["room_id"] == "!ask:hs" and ack.payload["thread_root"] == "$ev"
    assert plan.reporter is not None and plan.reporter.thread_root == "$ev"


def test_reporter_in_thread_after_resolution_reopens_and_tells_the_room() -> None:
    """A reporter writing in their thread after resolution reopens it; the room hears."""
    m = msg("still broken", sender="@tenant:hs", room="!ask:hs", thread="$rep")
    plan = plan_report_room(m, incident(Status.RESOLVED), 5, BOOK, CHAT, "gw", IN_HOURS)
    assert plan.reopen and plan.incident_id == 4
    [note] = plan.outbox
    assert note.payload["incident_thread"] and "reopened" in note.payload["body"]
