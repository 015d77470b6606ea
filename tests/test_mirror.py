"""Mirror planning and the escalation commands, as pure plans: what reaches the ticket, the
security contacts and the status page, and what is refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from gateway.domain import Channel, NewIncident, OutboxKind, Plan, PlanContext, Reporter
from gateway.plan import escalation, mirror
from gateway.plan.command_table import COMMANDS, HELP
from gateway.plan.commands import handled, parse_command
from gateway.plan.escalation import command_planner
from gateway.plan.mirror import MirrorSettings, SecurityContacts, StatuspageSettings
from rules.types import Mailbox, Priority
from tests.conftest import IN_HOURS
from tests.test_commands import ENV, SENDER, answers, incident, msg

SETTINGS = MirrorSettings(
    external_tickets=True,
    escalating_rules=frozenset({"security-breach"}),
    security=SecurityContacts("security@example.org", "!sec:hs"),
    statuspage=StatuspageSettings({"api": "cmpapi"}, Priority.P2),
    sender=SENDER,
)


def plan(body: str, settings: MirrorSettings = SETTINGS, **changes: object) -> Plan:
    """A command planned and mirrored the way the inbox worker does it."""
    inc = replace(incident(), **changes)  # type: ignore[arg-type]
    ctx = PlanContext(inc, 99, lambda _i: inc, lambda: [inc])
    command = parse_command(body)
    assert command is not None
    made = command_planner(msg(body), command, ENV, settings)(ctx)
    return mirror.extend(made, ctx, settings, IN_HOURS)


def kinds(p: Plan) -> list[OutboxKind]:
    return [s.kind for s in p.outbox]


def test_update_is_mirrored_as_one_comment() -> None:
    """!update becomes one ticket comment with the text sent to reporters."""
    [comment] = [
        s for s in plan("!update Back to normal").outbox if s.kind is OutboxKind.TICKET_COMMENT
    ]
    assert "Update sent to the reporters by @eng:hs" in comment.payload["body"]
    assert "Back to normal" in comment.payload["body"]


def test_resolve_solves_the_ticket_with_the_resolution_text() -> None:
    """!resolve: the ticket is solved with the text, and the status page is resolved."""
    p = plan("!resolve Replaced the node")
    [update] = [s for s in p.outbox if s.kind is OutboxKind.TICKET_UPDATE]
    assert update.payload["status"] == "solved"
    assert "Replaced the node" in update.payload["comment"]
    assert OutboxKind.STATUSPAGE_RESOLVE in kinds(p)
    assert OutboxKind.TICKET_COMMENT not in kinds(p)


def test_title_change_renames_the_ticket() -> None:
    """!title renames the ticket, keeping the reference."""
    [update] = [s for s in plan("!title LB failure").outbox if s.kind is OutboxKind.TICKET_UPDATE]
    assert update.payload["title"] == "[INC-4] LB failure"


def test_builtin_tickets_mirror_nothing() -> None:
    """With the built-in store the timeline is the record: no ticket entries."""
    p = plan("!update Back to normal", MirrorSettings())
    assert not {OutboxKind.TICKET_COMMENT, OutboxKind.TICKET_UPDATE} & set(kinds(p))


def test_security_rule_escalates_at_once() -> None:
    """A new incident from an escalating rule emails and posts to the security contacts,
    is flagged, and says so on its timeline."""
    new = Plan(
        outcome="opened",
        new_incident=NewIncident(
            "Breach", Priority.P1, Mailbox.EMERGENCY, "security-breach", (), None, None, None
        ),
        reporter=Reporter(Channel.EMAIL, "alice@tenant.example"),
    )
    ctx = PlanContext(None, 5, lambda _i: None, list)
    p = mirror.extend(new, ctx, SETTINGS, IN_HOURS)
    mails = [s for s in p.outbox if s.kind is OutboxKind.MAIL_SEND]
    assert [m.payload["rcpt_to"] for m in mails] == ["security@example.org"]
    assert (
        "INC-5" in mails[0].payload["data"] and "alice@tenant.example" in mails[0].payload["data"]
    )
    assert any(s.payload.get("room_id") == "!sec:hs" for s in p.outbox)
    assert p.new_incident is not None and mirror.SECURITY_FLAG in p.new_incident.flags
    assert [e.kind for e in p.timeline] == ["security.escalated"]


def test_security_command_escalates_by_hand() -> None:
    """!security notifies both contacts and flags the incident."""
    p = plan("!security tenant saw odd logins")
    assert kinds(p).count(OutboxKind.MAIL_SEND) == 1
    assert "security" in str(p.changes["flags"])


def test_statuspage_open_and_its_refusals() -> None:
    """Open names the components; a P3, a security incident, someone other than the named
    comms person and an unknown component are refused."""
    [spec] = [
        s
        for s in plan("!statuspage open api Errors on push").outbox
        if s.kind is OutboxKind.STATUSPAGE_OPEN
    ]
    assert spec.payload["component_ids"] == ["cmpapi"]
    assert spec.payload["name"] == "Possible issue being investigated: api"
    refusals = {
        "P3": plan("!statuspage open api x", priority=Priority.P3),
        "security": plan("!statuspage open api x", flags=("security",)),
        "comms person": plan("!statuspage open api x", comms="@other:hs"),
        "Usage": plan("!statuspage open database x"),
    }
    for word, refused in refusals.items():
        assert OutboxKind.STATUSPAGE_OPEN not in kinds(refused)
        assert word in answers(refused)[0]


def test_public_update_goes_to_the_status_page_without_the_flag() -> None:
    """!update --public posts the text there; reporters never see the flag."""
    p = plan("!update --public Fix deployed")
    [spec] = [s for s in p.outbox if s.kind is OutboxKind.STATUSPAGE_UPDATE]
    assert spec.payload["body"] == "Fix deployed"
    assert not any(
        "--public" in str(s.payload.get("data", s.payload.get("body", "")))
        for s in p.outbox
        if s.kind is not OutboxKind.STATUSPAGE_UPDATE
    )


def test_help_lists_every_command_the_parser_accepts() -> None:
    """!help is made from the one command table; the table names exactly the commands that
    are planned, every line of it is accepted as written, and the README names them all."""
    assert {doc.name for doc in COMMANDS} == handled() | escalation.NAMES
    assert answers(plan("!help")) == [HELP]
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for doc in COMMANDS:
        assert f"{doc.usage} — {doc.effect}" in HELP
        assert f"`!{doc.name}" in readme, doc.name
        answered = answers(plan(doc.usage.replace("<component…>", "api")))
        assert not any(a.startswith("Unknown command") for a in answered), doc.usage
    assert "--public" in HELP and "--public" in readme
    assert OutboxKind.STATUSPAGE_UPDATE in kinds(plan("!update --public Back to normal"))
    assert answers(plan("!frobnicate")) == ["Unknown command !frobnicate. Try !help."]
