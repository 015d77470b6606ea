"""Replaying real bounces, feedback reports and auto-replies: all parse, all are automatic,
and none opens, pages or is answered.

The corpus is Sisimai's set-of-emails (BSD 2-Clause), checked out beside the repository.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.domain import Channel, InboxRow
from gateway.parse.mail import UnparseableMessage, parse_mail
from gateway.plan.pipeline import Settings, plan_email
from gateway.plan.replies import Sender
from gateway.plan.trust import TrustPolicy
from rules.book import default_rulebook
from rules.types import Mailbox
from tests.conftest import IN_HOURS

BOOK = default_rulebook()
# Everyone is trusted here, so that nothing pages only because the mail is automatic.
SETTINGS = Settings(
    Sender("emergency@localhost", "Support", "localhost", "loop"),
    "gw",
    "Support",
    trust=TrustPolicy(allow_all=True),
)

MAILDIR = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "sisimai" / "maildir"
FOLDERS = (MAILDIR / "bsd", MAILDIR / "err")
MIN_FILES = 629  # bsd/ alone holds 629: fewer means the path is wrong, not a smaller corpus

if not all(folder.is_dir() for folder in FOLDERS):
    pytest.skip(f"mail corpus not found under {MAILDIR}", allow_module_level=True)

FILES = sorted(path for folder in FOLDERS for path in folder.iterdir() if path.is_file())


def test_the_corpus_is_really_there() -> None:
    """The replay covers the whole corpus, so a path mistake cannot silently test nothing."""
    assert len(FILES) >= MIN_FILES


@pytest.mark.parametrize("path", FILES, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_corpus_mail_parses_and_is_automatic(path: Path) -> None:
    """Every real bounce, report and auto-reply parses and is classified automatic."""
    try:
        mail = parse_mail(path.read_bytes(), None)
    except UnparseableMessage as exc:
        pytest.fail(f"unparseable: {exc} ({exc.__cause__!r})")
    assert mail.automatic is not None, f"not automatic: {mail.subject!r} from {mail.from_addr!r}"
    # Through the pipeline, to the emergency address where unmatched mail pages: nothing
    # is opened, paged, ticketed or answered.
    row = InboxRow(
        1,
        Channel.EMAIL,
        Mailbox.EMERGENCY,
        mail.from_addr or "x@example.org",
        ("emergency@localhost",),
        IN_HOURS,
        b"",
    )
    plan = plan_email(row, mail, None, 1, BOOK, SETTINGS, IN_HOURS)
    assert plan.outcome.startswith("ignored") and plan.outbox == ()
    assert plan.new_incident is None
