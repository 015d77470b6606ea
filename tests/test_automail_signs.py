"""Mail from software that used to get through, each recognised by a named sign; people's
mail with look-alike subjects stays a report; input that is not email is unreadable."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.domain import Channel, InboxRow, OutboxKind
from gateway.parse.child import MailJob, prepare
from gateway.parse.mail import UnparseableMessage, parse_mail
from gateway.plan.imapsync import envelope_sender
from gateway.plan.pipeline import plan_unreadable
from rules.book import default_rulebook
from rules.types import Mailbox
from tests.automatic_kinds import SIGNS
from tests.conftest import IN_HOURS

HUMAN = sorted((Path(__file__).parent / "fixtures" / "human").glob("*.eml"))


@pytest.mark.parametrize(("raw", "sign"), SIGNS)
def test_each_kind_of_automatic_mail_is_recognised_by_its_sign(raw: bytes, sign: str) -> None:
    """Each kind of automatic mail that used to be paged and answered is recognised, and
    the reason names the sign that recognised it."""
    parsed = parse_mail(raw, "someone@tenant.example")
    assert parsed.automatic is not None and sign in parsed.automatic


@pytest.mark.parametrize("path", HUMAN, ids=lambda p: p.stem)
def test_people_writing_look_alike_subjects_are_never_ignored(path: Path) -> None:
    """Reports whose subjects resemble automatic mail ("Read:", "Returned mail", "Delivery
    failure", "AUTO-SCALING", "digest", "moderator") stay reports."""
    raw = path.read_bytes()
    assert parse_mail(raw, envelope_sender(raw)).automatic is None


NOT_EMAIL = [
    pytest.param(
        b"\xef\xbb\xbfFrom: ana@tenant.example\r\nSubject: Site down\r\n\r\nDown.\r\n",
        "byte-order mark",
        id="bom",
    ),
    pytest.param(
        b"\r\nFrom: ana@tenant.example\r\nSubject: Site down\r\n\r\nDown.\r\n",
        "blank line",
        id="leading-blank-line",
    ),
    pytest.param(
        b"2026-11-23 09:50:01 ERROR upstream 503 for app-1 (contact ops@tenant.example)"
        b"\n2026-11-23 09:50:02 ERROR upstream 503\n",
        "not a header",
        id="log-file",
    ),
    pytest.param(
        b"ERROR: database down\nINFO: paging oncall@tenant.example\n",
        "headers",
        id="log-with-colons",
    ),
    pytest.param(
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 200 + b"From: a@tenant.example",
        "binary document",
        id="outlook-msg",
    ),
]


@pytest.mark.parametrize(("raw", "why"), NOT_EMAIL)
def test_input_that_is_not_email_is_unreadable_for_a_human(raw: bytes, why: str) -> None:
    """A BOM, a leading blank line, a log file or a binary .msg is not read as a report: it
    becomes the unreadable-message ticket (no page, no acknowledgement to any address)."""
    with pytest.raises(UnparseableMessage, match=why):
        parse_mail(raw, "ops@tenant.example")
    prepared = prepare(
        MailJob(raw, "ops@tenant.example", Mailbox.EMERGENCY), IN_HOURS, default_rulebook()
    )
    assert prepared.mail is None and prepared.problem and "not an email" in prepared.problem
    row = InboxRow(1, Channel.EMAIL, Mailbox.EMERGENCY, "ops@tenant.example", (), IN_HOURS, raw)
    plan = plan_unreadable(row, prepared.problem, IN_HOURS)
    assert plan.new_incident is not None and "unparseable" in plan.new_incident.flags
    assert OutboxKind.MAIL_SEND not in [o.kind for o in plan.outbox]


def test_an_mbox_from_line_on_top_is_still_mail() -> None:
    """A message saved with its mbox "From " line is still read as the email it is."""
    raw = (
        b"From ana@tenant.example Mon Nov 23 09:58:05 2026\nFrom: ana@tenant.example\n"
        b"Subject: Site down\n\nAll apps return 503.\n"
    )
    assert parse_mail(raw, None).subject == "Site down"
