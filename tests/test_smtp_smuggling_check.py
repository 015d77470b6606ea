"""The SMTP intake's end-of-data look-alike check (adapters.smtp_smuggling.smuggling), rewritten
for speed, refuses exactly the data a line-by-line reading says it must."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.smtp_smuggling import smuggling

_LINE = re.compile(rb"([^\r\n]*)(\r\n|\r|\n|$)")


def reference(raw: bytes) -> bool:
    """Line by line: a line that is empty with a bare LF/CR ending right after a CRLF (or
    at the start), or a line that is a lone dot unless CRLF (or the start) precedes it and
    CRLF ends it."""
    before = b""  # the start counts as CRLF
    for content, end in _LINE.findall(raw):
        if content == b"" and end in (b"\n", b"\r") and before in (b"\r\n", b""):
            return True
        if content == b"." and end and (before not in (b"\r\n", b"") or end != b"\r\n"):
            return True
        if not end:
            break
        before = end
    return False


@settings(max_examples=3000)
@given(st.lists(st.sampled_from([b"\r\n", b"\r", b"\n", b".", b"x", b"ab"]), max_size=14))
def test_agrees_with_a_line_by_line_reading(pieces: list[bytes]) -> None:
    """Any mix of line ends, dots and text is refused exactly when the reference says so."""
    raw = b"".join(pieces)
    assert smuggling(raw) == reference(raw), raw


def test_examples() -> None:
    """Known look-alikes are refused; dot lines between CRLFs and bare LFs elsewhere are not."""
    for bad in (
        b"a\n.\nb",
        b"a\r\n.\nb",
        b"a\r.\rb",
        b"a\n.\r\nb",
        b".\nb",
        b"\nb",
        b"a\r\n\nb",
        b"a\r\n.\r\n.\nb",
        b"x\n.\r\n.\r\n",
    ):
        assert smuggling(bad), bad
    for good in (
        b"a\r\n.\r\nb",
        b".\r\nb",
        b"a\nb\r\n",
        b"a.\nb",
        b"a\r\n..\r\n",
        b"a\r\n.\r\n.\r\nb",
    ):
        assert not smuggling(good), good
