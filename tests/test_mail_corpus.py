"""Replaying real bounces, feedback reports and auto-replies: all parse, all are automatic.

The corpus is Sisimai's set-of-emails (BSD 2-Clause), checked out beside the repository.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.mail import UnparseableMessage, parse_mail

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
