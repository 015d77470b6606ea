"""Hostile mail is cheap: the structural pre-check refuses mail with more MIME parts or
containers than a human report has (an unreadable ticket, raw kept), real mail passes it,
and a P1 queued behind thirty many-part messages is planned and paged in the same batch
with no parse child killed. Batches reach the child in pieces bounded in bytes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from gateway.domain import Channel, NewMessage, OutboxKind, Plan
from gateway.parse.child import MimeLimits, structure_problem
from gateway.parse.sandbox import MailJob, ParseSandbox, _pieces
from gateway.run.worker import InboxWorker
from gateway.store import outbox
from gateway.store.sqlite import SqliteStore as Store
from rules.types import Mailbox, Priority
from tests.conftest import IN_HOURS, email_bytes
from tests.test_parse_sandbox import BOOK, SETTINGS, many_parts

LIMITS = MimeLimits()
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora"


def nested(depth: int) -> bytes:
    """multipart/mixed nested `depth` deep."""
    body = b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
        for i in range(depth)
    )
    return (
        b"From: m@evil.example\r\nSubject: deep\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n" + body
    )


def test_parts_and_containers_over_the_limits_are_refused() -> None:
    """1,001 parts, an RFC 2231 boundary with 1,001 parts, and 101 nested multiparts are
    refused; 1,000 parts and 100 levels are not."""
    assert structure_problem(many_parts(1000), LIMITS) is None
    assert structure_problem(many_parts(1001), LIMITS) == "too many MIME parts (over 1000)"
    rfc2231 = many_parts(1001).replace(b"boundary=b", b"boundary*0=b")
    assert structure_problem(rfc2231, LIMITS) is not None
    assert structure_problem(nested(99), LIMITS) is None  # 100 with the top level
    problem = structure_problem(nested(101), LIMITS)
    assert problem is not None and "containers" in problem


def test_many_dash_lines_in_plain_text_are_not_parts() -> None:
    """A pasted log with 5,000 lines starting with "--" in a single-part message passes."""
    raw = email_bytes(body="\n".join(f"-- step {i}" for i in range(5000)))
    assert structure_problem(raw, LIMITS) is None


def test_every_real_world_message_passes_the_pre_check() -> None:
    """No message of the shared real-world corpus is refused by the pre-check."""
    files = [p for p in CORPUS.rglob("*") if p.is_file()] if CORPUS.is_dir() else []
    if len(files) < 600:
        pytest.skip(f"mail corpus not found under {CORPUS}")
    refused = [p.name for p in files if structure_problem(p.read_bytes(), LIMITS)]
    assert refused == []


def test_batches_reach_the_child_in_pieces_bounded_in_bytes() -> None:
    """Runs of at most max_bytes, in order; a larger message travels alone."""
    jobs = [MailJob(b"x" * n, "a@b.example", Mailbox.SUPPORT) for n in (4, 4, 4, 20, 1, 1)]
    sizes = [[len(j.raw) for j in piece] for piece in _pieces(jobs, 10)]
    assert sizes == [[4, 4], [4], [20], [1, 1]]


async def test_a_p1_behind_thirty_many_part_messages_pages_in_the_same_batch(
    tmp_path: Path,
) -> None:
    """Thirty 20,000-part messages and then a P1, all pending: one pass plans all 31, the P1
    is opened and paged, no hostile one is parsed (unreadable with its reason, or held by
    the flood limits), and the parse child was never killed (no budget spent)."""
    store = Store(tmp_path / "gateway.sqlite3")
    await store.open()
    planned: list[Sequence[Plan]] = []
    sandbox = ParseSandbox(BOOK)
    worker = InboxWorker(
        store, BOOK, SETTINGS, planned.append, clock=lambda: IN_HOURS, sandbox=sandbox
    )
    hostile = many_parts(20_000)  # about a second of parsing each
    try:
        for n in range(30):
            await store.accept(
                NewMessage(
                    Channel.EMAIL,
                    Mailbox.EMERGENCY,
                    f"m{n}@evil.example",
                    ("emergency@gw.example",),
                    hostile + b"%d\r\n" % n,
                    None,
                    IN_HOURS,
                )
            )
        await store.accept(
            NewMessage(
                Channel.EMAIL,
                Mailbox.EMERGENCY,
                "alice@tenant.example",
                ("emergency@gw.example",),
                email_bytes(),
                None,
                IN_HOURS,
            )
        )
        assert await worker.process_pending() == 31
        incidents = await store.incidents()
        pages = await store._call(lambda c: outbox.due_outbox(c, IN_HOURS, 100))
    finally:
        await worker.close()
        await store.close()
    assert sandbox.restarts == 0
    good = next(i for i in incidents if i.title == "Our site is down")
    assert good.priority is Priority.P1
    assert any(e.kind is OutboxKind.PAGE_TRIGGER and e.incident_id == good.id for e in pages)
    # Each hostile one is an unreadable ticket, or held by the flood limits once the
    # sending client has sent too many: none was parsed.
    outcomes = [p.outcome for batch in planned for p in batch][:30]
    assert all(o.startswith(("unreadable:", "held:")) for o in outcomes), outcomes
    unreadable = [o for o in outcomes if o.startswith("unreadable:")]
    assert unreadable and all("too many MIME parts" in o for o in unreadable)


async def test_a_batch_loads_at_most_max_bytes_of_mail_but_at_least_one(store: Store) -> None:
    """Five 1 MB messages pending: 2.5 MB loads two of them, 0.5 MB still loads one, and
    without a byte limit all five come."""
    for n in range(5):
        raw = email_bytes(body="x" * 1_000_000 + str(n))
        await store.accept(
            NewMessage(
                Channel.EMAIL,
                Mailbox.SUPPORT,
                f"a{n}@tenant.example",
                ("support@gw.example",),
                raw,
                None,
                IN_HOURS,
            )
        )
    assert [r.mail_from for r in await store.pending_inbox(64, max_bytes=2_500_000)] == [
        "a0@tenant.example",
        "a1@tenant.example",
    ]
    assert len(await store.pending_inbox(64, max_bytes=500_000)) == 1
    assert len(await store.pending_inbox(64)) == 5
