"""The re-send key's header/body split (gateway.run.intake.header_end), found with
bytes.find for speed, is exactly the first blank line the regular expression finds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.run.intake import _HEADER_END, header_end, resend_key


def by_regex(raw: bytes) -> tuple[int, int] | None:
    match = _HEADER_END.search(raw)
    return None if match is None else (match.start(), match.end())


@settings(max_examples=3000)
@given(st.lists(st.sampled_from([b"\r\n", b"\r", b"\n", b"a", b"Subject: x", b" "]), max_size=16))
def test_agrees_with_the_regular_expression(pieces: list[bytes]) -> None:
    """Any mix of line ends and text: the same start and end as _HEADER_END.search."""
    raw = b"".join(pieces)
    assert header_end(raw) == by_regex(raw), raw


def test_keys_of_usual_mail() -> None:
    """CRLF mail, bare-LF mail and a header with no body each split where the regex does,
    and the key still tells the sender apart."""
    for raw in (
        b"Message-ID: <a@x>\r\nSubject: s\r\n\r\nbody\r\n\r\nmore\r\n",
        b"Message-ID: <a@x>\nSubject: s\n\nbody\n",
        b"Message-ID: <a@x>\r\nSubject: s\n\r\nbody",
        b"Message-ID: <a@x>\r\nSubject: s\r\n",
    ):
        assert header_end(raw) == by_regex(raw), raw
        assert resend_key("a@x", raw) != resend_key("b@x", raw)
