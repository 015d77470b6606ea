"""Storms, holds and re-sends as plain sync functions: who a message counts as, when it is
held, when it joins an open incident, what makes a re-send, and what becomes of unreadable
emergency mail. No event loop; the counts come from a real (in-memory) SQLite store."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from functools import partial

import pytest

from gateway.domain import (
    Channel,
    Digest,
    InboxRow,
    Incident,
    NewMessage,
    OutboxKind,
    Plan,
    PlanContext,
    Reporter,
    SenderHistory,
    Status,
    Work,
)
from gateway.parse.mail import parse_mail
from gateway.plan.pipeline import Settings, plan_email
from gateway.plan.relay import ChatSettings
from gateway.plan.replies import Sender
from gateway.plan.storm import UNTRUSTED_PREFIX, Limits, find_join, hold_reason, limit_key
from gateway.plan.trust import TrustPolicy, judge_email
from gateway.plan.unreadable import judge_unreadable, plan_unreadable_emergency, sender_of
from gateway.run.intake import resend_key
from gateway.store import held as held_db
from gateway.store import schema, storm_db
from gateway.store.inbox import accept_many, pending_inbox, process
from gateway.store.incidents import apply_plan
from rules.book import default_rulebook
from rules.types import Mailbox, Priority
from tests.conftest import IN_HOURS, email_bytes

BOOK = default_rulebook()
MTA = "mx.gw.example"
PASS = f"{MTA}; dmarc=pass header.from=tenant.example"
FAIL = f"{MTA}; dmarc=fail header.from=tenant.example"
LIMITS = Limits(per_sender=3, global_per_minute=5, loop_threshold=3)
SETTINGS = Settings(
    Sender("emergency@gw.example", "Platform support", "gw.example", "chatops-gateway; gw.example"),
    "chatops-gateway",
    "Platform support",
    chat=ChatSettings("@bot:gw.example", "!incidents:gw.example", {}, frozenset(), 50),
    trust=TrustPolicy(authserv_id=MTA, allow_domains=frozenset({"tenant.example"})),
    limits=LIMITS,
)


@pytest.fixture
def conn() -> Iterator[sqlite3.Connection]:
    """A migrated in-memory store."""
    c = sqlite3.connect(":memory:", isolation_level=None)
    schema.migrate(c)
    yield c
    c.close()


def inbox_row(
    conn: sqlite3.Connection,
    raw: bytes,
    client: str = "192.0.2.9",
    mail_from: str = "alice@tenant.example",
    seconds: float = 0.0,
) -> InboxRow:
    """Accept `raw` into the store and return its row as the worker would see it."""
    at = IN_HOURS + timedelta(seconds=seconds)
    [accepted] = accept_many(
        conn,
        [
            NewMessage(
                Channel.EMAIL,
                Mailbox.EMERGENCY,
                mail_from,
                ("emergency@gw.example",),
                raw,
                None,
                at,
                client,
            )
        ],
    )
    return next(r for r in pending_inbox(conn, 10_000) if r.id == accepted.inbox_id)


def plan(conn: sqlite3.Connection, row: InboxRow, next_id: int = 1):
    """Plan one stored email against the store's counts and record its digest, as the store
    does (inside no transaction: a test)."""
    mail = parse_mail(row.raw, row.mail_from)
    ctx = PlanContext(
        None, next_id, lambda _i: None, list, history=partial(storm_db.history, conn, row.id)
    )
    planned = plan_email(row, mail, None, next_id, BOOK, SETTINGS, IN_HOURS, context=ctx)
    if planned.digest is not None:  # as the store does when it applies the Plan
        storm_db.record(conn, row.id, planned.digest)
    return planned


def incident(flags: tuple[str, ...] = (), reporter: str = "alice@tenant.example") -> Incident:
    return Incident(
        3,
        "INC-3",
        "Our site is down",
        Priority.P1,
        Status.OPEN,
        Mailbox.EMERGENCY,
        IN_HOURS,
        None,
        (),
        None,
        None,
        None,
        (Reporter(Channel.EMAIL, reporter, ("<a@t>",)),),
        flags=flags,
    )


def join(inc: Incident, sender: str, *, authentic: bool, trusted: bool):
    return find_join(
        [inc],
        Mailbox.EMERGENCY,
        sender,
        "Site is down again",
        IN_HOURS,
        LIMITS,
        authentic=authentic,
        trusted=trusted,
    )


# -- who a message counts as ---------------------------------------------------------------
def test_authenticated_mail_counts_as_its_address_forged_mail_as_client_and_from() -> None:
    """The bucket of a forged mail is never the bucket of the genuine sender's mail."""
    genuine = limit_key("alice@tenant.example", "192.0.2.1", authentic=True, trusted=True)
    forged = limit_key("alice@tenant.example", "203.0.113.5", authentic=False, trusted=False)
    forged_same_client = limit_key(
        "alice@tenant.example", "192.0.2.1", authentic=False, trusted=False
    )
    assert genuine == "t:alice@tenant.example"
    assert len({genuine, forged, forged_same_client}) == 3
    unchecked = limit_key("alice@tenant.example", None, authentic=None, trusted=True)
    assert unchecked == "t:- alice@tenant.example"


# -- when a message is held ------------------------------------------------------------------
def test_global_rate_holds_untrusted_mail_only() -> None:
    """Past the global rate an unverified message is held, a trusted one is not."""
    busy = SenderHistory(from_sender=0, same_content=0, everyone=5)
    assert hold_reason(busy, LIMITS, trusted=True) is None
    why, first = hold_reason(busy, LIMITS, trusted=False) or ("", False)
    assert why.startswith("rate limit: more than 5 unverified messages a minute") and first
    assert hold_reason(replace(busy, everyone=6), LIMITS, trusted=False) == (why, False)


def test_under_a_global_flood_bucket_holds_are_not_announced_one_by_one() -> None:
    """Past the global rate, an untrusted bucket reaching per_sender is held without a
    notice of its own (the global one covers it); a trusted bucket still gets one."""
    flooded = SenderHistory(from_sender=3, same_content=0, everyone=9)
    assert hold_reason(flooded, LIMITS, trusted=False) == (
        "rate limit: more than 3 messages from this sender in 600 s",
        False,
    )
    assert hold_reason(flooded, LIMITS, trusted=True) == (
        "rate limit: more than 3 messages from this sender in 600 s",
        True,
    )


def test_own_traffic_still_holds_a_trusted_sender() -> None:
    """A trusted sender's own loop or own flood is held (told once, when it starts)."""
    assert hold_reason(SenderHistory(3, 0, 0), LIMITS, trusted=True) == (
        "rate limit: more than 3 messages from this sender in 600 s",
        True,
    )
    loop = hold_reason(SenderHistory(2, 2, 0), LIMITS, trusted=True)
    assert loop is not None and loop[0].startswith("mail loop") and loop[1]
    assert hold_reason(SenderHistory(2, 1, 4), LIMITS, trusted=True) is None


def test_forged_flood_does_not_hold_the_authenticated_report(conn: sqlite3.Connection) -> None:
    """Five forged mails in alice's name: the 4th and 5th are held; then her authenticated
    P1 opens and pages, and the held ones are marked for the store to keep apart."""
    outcomes = []
    for n in range(5):
        row = inbox_row(
            conn,
            email_bytes(subject=f"Spam {n}", body=f"junk {n}", Authentication_Results=FAIL),
            seconds=n,
        )
        outcomes.append(plan(conn, row, next_id=n + 1))
    assert [p.held for p in outcomes] == [False, False, False, True, True]
    assert [s.kind for s in outcomes[3].outbox] == [OutboxKind.CHAT_SEND]  # told once
    assert outcomes[4].outbox == ()
    genuine = plan(conn, inbox_row(conn, email_bytes(Authentication_Results=PASS), seconds=6))
    assert not genuine.held and genuine.outcome.startswith("opened INC-1 (P1, paged")


def test_flood_from_many_senders_holds_unverified_mail_not_the_tenant(
    conn: sqlite3.Connection,
) -> None:
    """Past the global rate of unverified mail, a stranger is held but the tenant's
    authenticated report is not; trusted mail does not fill the global count."""
    for n in range(5):
        row = inbox_row(
            conn,
            email_bytes(subject=f"Problem {n}", sender=f"s{n}@x.example"),
            mail_from=f"s{n}@x.example",
            client=f"198.51.100.{n}",
            seconds=n,
        )
        assert not plan(conn, row).held
    stranger = inbox_row(
        conn,
        email_bytes(subject="Another", sender="z@x.example"),
        mail_from="z@x.example",
        seconds=6,
    )
    assert plan(conn, stranger).held
    tenant = inbox_row(conn, email_bytes(Authentication_Results=PASS), seconds=7)
    assert not plan(conn, tenant).held


def test_a_released_message_is_not_held_again(conn: sqlite3.Connection) -> None:
    """Released by an operator, a held message is planned normally, exactly once."""
    for n in range(4):
        row = inbox_row(
            conn,
            email_bytes(subject=f"Spam {n}", body=f"junk {n}", Authentication_Results=FAIL),
            seconds=n,
        )
        held = plan(conn, row)
        apply_plan(conn, held, IN_HOURS)
        conn.execute(
            "UPDATE inbox SET state = ? WHERE id = ?", ("held" if held.held else "done", row.id)
        )
    assert [r.inbox_id for r in held_db.held_rows(conn)] == [row.id]
    assert held_db.release(conn, row.id, IN_HOURS) is None
    assert held_db.release(conn, row.id, IN_HOURS) == "pending"
    assert held_db.release(conn, 999, IN_HOURS) == "unknown"
    [again] = pending_inbox(conn, 10)
    assert again.released and not plan(conn, again).held


# -- when a report joins an open incident ----------------------------------------------------
def test_existing_reporter_joins_only_when_not_shown_forged() -> None:
    """Alice's own similar report joins hers; the same From with DMARC fail does not."""
    joined = join(incident(), "alice@tenant.example", authentic=True, trusted=True)
    assert joined is not None and joined.same_reporter
    assert join(incident(), "alice@tenant.example", authentic=False, trusted=False) is None


def test_new_reporter_joins_only_when_trusted() -> None:
    """Another tenant joins as a further reporter; a forged or unknown sender does not."""
    joined = join(incident(), "bob@tenant.example", authentic=True, trusted=True)
    assert joined is not None and not joined.same_reporter
    assert join(incident(), "bob@tenant.example", authentic=True, trusted=False) is None


def test_a_trusted_report_never_joins_an_incident_awaiting_page() -> None:
    """An unverified incident (opened, perhaps, by a forger) does not absorb a trusted page."""
    unverified = incident(flags=("unverified sender",))
    assert join(unverified, "alice@tenant.example", authentic=True, trusted=True) is None
    assert join(unverified, "bob@tenant.example", authentic=True, trusted=True) is None
    own = join(unverified, "alice@tenant.example", authentic=True, trusted=False)
    assert own is not None and own.same_reporter  # a stranger's own follow-up still joins


def test_forged_reply_to_an_open_incident_opens_its_own(conn: sqlite3.Connection) -> None:
    """Through the pipeline: DMARC fail with a similar subject opens an unverified incident."""
    raw = email_bytes(
        subject="Site is down again",
        body="Fixed, ignore",
        Authentication_Results=FAIL,
        Reply_To="mallory@evil.example",
    )
    row = inbox_row(conn, raw)
    mail = parse_mail(raw, row.mail_from)
    ctx = PlanContext(None, 9, lambda _i: None, lambda: [incident()])
    result = plan_email(row, mail, None, 9, BOOK, SETTINGS, IN_HOURS, context=ctx)
    assert result.incident_id is None and result.new_incident is not None
    assert "unverified sender" in result.new_incident.flags


# -- re-sends --------------------------------------------------------------------------------
def test_a_resend_is_the_same_sender_message_id_and_content() -> None:
    """Same bytes, or the same message with other trace fields: one key. A different body,
    subject or sender under the same Message-ID: another key."""
    base = email_bytes(message_id="<m1@tenant.example>")
    key = resend_key("alice@tenant.example", base)
    assert key is not None and key == resend_key("Alice@Tenant.example", base)
    relayed = (
        b"Received: from mx by gw; Mon, 23 Nov 2026 10:00:00 +0000\r\n"
        b"Authentication-Results: mx; dmarc=pass\r\n" + base
    )
    assert resend_key("alice@tenant.example", relayed) == key
    assert resend_key("alice@tenant.example", base.replace(b"\n", b"\r\n")) == key
    for other in (
        email_bytes(message_id="<m1@tenant.example>", body="Something else"),
        email_bytes(message_id="<m1@tenant.example>", subject="Hello"),
    ):
        assert resend_key("alice@tenant.example", other) not in (key, None)
    assert resend_key("mallory@evil.example", base) != key
    assert resend_key("alice@tenant.example", b"Subject: x\r\n\r\nbody") is None


# -- unreadable mail to the emergency mailbox ------------------------------------------------
def unreadable(conn: sqlite3.Connection, raw: bytes, client: str = "192.0.2.9"):
    row = inbox_row(conn, raw, client=client)
    sender, verdict = judge_unreadable(row.raw, row.mail_from, SETTINGS)
    ctx = PlanContext(
        None, 4, lambda _i: None, list, history=partial(storm_db.history, conn, row.id)
    )
    planned = plan_unreadable_emergency(
        row, "parsing took too long", BOOK, SETTINGS, IN_HOURS, sender, verdict, ctx
    )
    if planned.digest is not None:  # as the store does when it applies the Plan
        storm_db.record(conn, row.id, planned.digest)
    return planned


def test_unreadable_emergency_mail_from_a_trusted_sender_pages(conn: sqlite3.Connection) -> None:
    """Authenticated tenant, unreadable body: a P1 that pages, announced, ticketed."""
    result = unreadable(
        conn,
        b"Authentication-Results: "
        + PASS.encode()
        + b"\r\nFrom: Alice <alice@tenant.example>\r\n\r\n\x00\x01",
    )
    assert result.new_incident is not None and result.new_incident.priority is Priority.P1
    assert [s.kind for s in result.outbox] == [
        OutboxKind.CHAT_ANNOUNCE,
        OutboxKind.PAGE_TRIGGER,
        OutboxKind.TICKET_CREATE,
    ]
    assert result.new_incident.flags == ("unparseable",)
    assert result.outcome == ("unreadable: parsing took too long; opened INC-4 (P1, paged)")


def test_unreadable_emergency_mail_from_a_stranger_awaits_page(conn: sqlite3.Connection) -> None:
    """Forged or unknown sender: a P1 announced with a request to !page, not paged."""
    result = unreadable(conn, b"From: alice@tenant.example\r\nSubject: x\r\n\r\n\xff")
    assert result.new_incident is not None
    assert result.new_incident.flags == ("unparseable", "unverified sender")
    assert OutboxKind.PAGE_TRIGGER not in [s.kind for s in result.outbox]
    asks = [s.payload["body"] for s in result.outbox if s.kind is OutboxKind.CHAT_SEND]
    assert len(asks) == 1 and "!page INC-4" in asks[0]


def test_a_flood_of_unreadable_mail_is_held(conn: sqlite3.Connection) -> None:
    """Junk cannot flood the incidents room: past the limits unreadable mail is held too."""
    results = [unreadable(conn, b"From: x@evil.example\r\n\r\n" + bytes([n])) for n in range(5)]
    assert [r.held for r in results] == [False, False, False, True, True]


def test_sender_of_unreadable_mail_reads_only_the_first_from_line() -> None:
    """The From address, else the envelope sender; never a multi-address guess."""
    assert sender_of(b"From: A <a@x.example>\r\n\r\n", "e@y.example") == "a@x.example"
    assert sender_of(b"\x00\x01 no header", "E@y.example") == "e@y.example"
    assert sender_of(b"From: not an address\r\n\r\n", "") == ""


def test_trust_verdict_on_an_unreadable_header_matches_the_parsed_one() -> None:
    """The header-only verdict is the one judge_email gives the whole message."""
    raw = email_bytes(Authentication_Results=PASS)
    sender, verdict = judge_unreadable(raw, "alice@tenant.example", SETTINGS)
    assert sender == "alice@tenant.example"
    assert verdict == judge_email(raw, sender, SETTINGS.trust)


def test_a_planning_bug_on_emergency_mail_is_rescued_to_a_p1(conn: sqlite3.Connection) -> None:
    """Planning raises: the rescue makes the emergency mail a P1 for a person; a rescue that
    raises too leaves the plain fallback (the message is never lost)."""
    row = inbox_row(conn, email_bytes(Authentication_Results=PASS))
    sender, verdict = judge_unreadable(row.raw, row.mail_from, SETTINGS)

    def boom(_ctx: PlanContext) -> Plan:
        raise RuntimeError("bug")

    def rescue(problem: str, ctx: PlanContext) -> Plan:
        return plan_unreadable_emergency(
            row, problem, BOOK, SETTINGS, IN_HOURS, sender, verdict, ctx
        )

    def fallback(problem: str) -> Plan:
        return Plan(outcome=f"unreadable: {problem}")

    [rescued] = process(conn, [Work(row.id, None, boom, fallback, rescue)], IN_HOURS)
    assert rescued.outcome == (
        "unreadable: processing failed: RuntimeError; opened INC-1 (P1, paged)"
    )
    other = inbox_row(conn, email_bytes(Authentication_Results=PASS), seconds=1)
    [plain] = process(
        conn, [Work(other.id, None, boom, fallback, lambda p, ctx: boom(ctx))], IN_HOURS
    )
    assert plain.outcome == "unreadable: processing failed: RuntimeError"
    assert [r[0] for r in conn.execute("SELECT state FROM inbox ORDER BY id")] == ["done"] * 2


def test_the_global_count_reads_only_untrusted_rows(conn: sqlite3.Connection) -> None:
    """The untrusted prefix is the one the partial index is built on, and the global count
    uses that index (trusted mail, however much, is never scanned)."""
    assert UNTRUSTED_PREFIX == "u:"
    plan_rows = conn.execute(
        "EXPLAIN QUERY PLAN SELECT 1 FROM inbox_digest WHERE substr(sender, 1, 2) = 'u:'"
        " AND at >= ? AND at <= ? AND inbox_id != ? LIMIT ?",
        ("a", "b", 1, 5),
    ).fetchall()
    assert any("inbox_digest_untrusted" in str(row) for row in plan_rows)
    for n in range(3):
        storm_db.record(conn, n + 1, Digest(f"t:a{n}@tenant.example", "h", IN_HOURS))
    storm_db.record(conn, 10, Digest("u:- x@x.example", "h", IN_HOURS))
    assert storm_db.history(conn, 11, "u:- y@x.example", "h2", IN_HOURS, 600.0).everyone == 1
