"""The parse sandbox: emails are parsed and triaged in a child process under a time budget; a
message that overruns it becomes an unparseable ticket, and the rest of its batch is processed
normally.

The budgets below are what the sandbox is given, not limits on how long a test may take: the
hostile message needs over ten seconds of CPU on any machine (about 45 µs a part), the good
ones a few milliseconds; 3 s leaves a loaded machine room for the good ones."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from gateway.domain import Channel, NewMessage, OutboxKind, Plan
from gateway.parse.sandbox import TOO_SLOW, MailJob, MimeLimits, ParseSandbox
from gateway.plan.pipeline import Settings
from gateway.plan.replies import Sender
from gateway.plan.trust import TrustPolicy
from gateway.run.worker import InboxWorker
from gateway.store import outbox
from gateway.store.sqlite import SqliteStore
from rules.book import default_rulebook
from rules.types import Mailbox, Priority
from tests.conftest import IN_HOURS, email_bytes

BOOK = default_rulebook()
SETTINGS = Settings(
    Sender("emergency@gw.example", "Platform support", "gw.example", "chatops-gateway; gw.example"),
    "chatops-gateway",
    "Platform support",
    trust=TrustPolicy(allow_domains=frozenset({"tenant.example"})),
)


def many_parts(n: int) -> bytes:
    """A multipart/mixed with `n` tiny parts: seconds of parsing per hundred thousand."""
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(n))
    return (
        b"From: mallory@evil.example\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + parts + b"--b--\r\n"
    )


HOSTILE = many_parts(280_000)  # just under the 10 MB message size limit
# The MIME pre-check would refuse HOSTILE at once; these tests are about the time budget,
# which stays the backstop for whatever else is slow to parse.
NO_PRECHECK = MimeLimits(max_parts=10**9, max_containers=10**9)


def job(raw: bytes, sender: str = "alice@tenant.example") -> MailJob:
    return MailJob(raw, sender, Mailbox.EMERGENCY)


async def test_good_batch_is_parsed_and_triaged_in_the_child() -> None:
    """A batch comes back in order, each message parsed with its triage decision."""
    sandbox = ParseSandbox(BOOK)
    try:
        results = await sandbox.prepare_all(
            [
                job(email_bytes()),
                job(email_bytes(subject="Question about billing", body="How do invoices work?")),
            ],
            IN_HOURS,
        )
    finally:
        await sandbox.close()
    assert [r.problem for r in results] == [None, None]
    first = results[0]
    assert first.mail is not None and first.mail.subject == "Our site is down"
    assert first.mail.headers["subject"] == "Our site is down"
    assert first.decision is not None and first.decision.priority is Priority.P1
    assert results[1].mail is not None and results[1].mail.subject == "Question about billing"
    assert sandbox.restarts == 0


async def test_overrunning_message_is_singled_out_and_the_others_survive() -> None:
    """The batch misses its deadline; retried one by one, only the hostile one is unreadable."""
    sandbox = ParseSandbox(BOOK, budget_s=3.0, per_message_s=0.0, limits=NO_PRECHECK)
    try:
        results = await sandbox.prepare_all(
            [job(email_bytes()), job(HOSTILE, "mallory@evil.example"), job(email_bytes())], IN_HOURS
        )
        after = await sandbox.prepare_all([job(email_bytes())], IN_HOURS)
    finally:
        await sandbox.close()
    assert [r.problem for r in results] == [None, TOO_SLOW, None]
    assert results[0].decision is not None and results[2].decision is not None
    assert sandbox.restarts == 2  # the batch, then the culprit alone
    assert after[0].mail is not None  # a fresh child serves the next batch


async def test_a_dead_child_is_replaced() -> None:
    """If the child dies between batches (OOM killer, an operator), the next batch starts a
    new one and is processed normally."""
    sandbox = ParseSandbox(BOOK)
    try:
        await sandbox.start()
        proc = sandbox._proc
        assert proc is not None
        proc.kill()
        proc.join()
        results = await sandbox.prepare_all([job(email_bytes())], IN_HOURS)
    finally:
        await sandbox.close()
    assert results[0].mail is not None and results[0].problem is None


@pytest.mark.slow
async def test_pathological_mail_becomes_unparseable_ticket_next_to_a_good_one(
    tmp_path: Path,
) -> None:
    """Through the inbox worker: the hostile message (a stranger's, to the emergency
    mailbox) is an unparseable P1 awaiting an engineer's !page, with its raw bytes kept; the
    good message in the same batch opens its P1 incident and pages."""
    store = SqliteStore(tmp_path / "gateway.sqlite3")
    await store.open()
    planned: list[Sequence[Plan]] = []
    worker = InboxWorker(
        store,
        BOOK,
        SETTINGS,
        planned.append,
        clock=lambda: IN_HOURS,
        sandbox=ParseSandbox(BOOK, budget_s=3.0, per_message_s=0.0, limits=NO_PRECHECK),
    )
    try:
        for sender, raw in (
            ("mallory@evil.example", HOSTILE),
            ("alice@tenant.example", email_bytes()),
        ):
            await store.accept(
                NewMessage(
                    Channel.EMAIL,
                    Mailbox.EMERGENCY,
                    sender,
                    ("emergency@gw.example",),
                    raw,
                    None,
                    IN_HOURS,
                )
            )
        assert await worker.process_pending() == 2
        incidents = await store.incidents()
        hostile_raw = await store._call(
            lambda c: c.execute(
                "SELECT raw FROM inbox WHERE mail_from = ?", ("mallory@evil.example",)
            ).fetchone()[0]
        )
        pages = await store._call(lambda c: outbox.due_outbox(c, IN_HOURS, 100))
    finally:
        await worker.close()
        await store.close()
    by_title = {i.title: i for i in incidents}
    bad = by_title["Unreadable emergency message from mallory@evil.example"]
    assert bad.priority is Priority.P1 and bad.flags == ("unparseable", "unverified sender")
    assert TOO_SLOW in bad.reasons[0]
    assert not any(e.kind is OutboxKind.PAGE_TRIGGER and e.incident_id == bad.id for e in pages)
    good = by_title["Our site is down"]
    assert good.priority is Priority.P1 and "unparseable" not in good.flags
    assert bytes(hostile_raw) == HOSTILE
    assert any(e.kind is OutboxKind.PAGE_TRIGGER and e.incident_id == good.id for e in pages)
    assert [p.outcome.split(" ")[0] for p in planned[0]] == ["unreadable:", "opened"]
