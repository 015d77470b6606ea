"""Quote stripping on the labelled set of real-world-shaped replies (tests/fixtures/replies/).

What engineers see of a reply must be what the reporter wrote: the exact rate stays at or
above 90%, no marked history string leaks, and nothing the reporter wrote is ever cut.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.parse.mail import parse_mail
from gateway.parse.mailquote import strip_quoted
from tests.reply_set import Case, load_cases, normalise, rates, score

CASES = load_cases()
KEEP = [case for case in CASES if not case.leaks]


def test_the_set_is_large_and_varied() -> None:
    """The set has at least 60 replies with unique ids, and text that only looks like history."""
    assert len(CASES) >= 60
    assert len({case.id for case in CASES}) == len(CASES)
    assert len(KEEP) >= 8


def test_exact_rate_stays_at_or_above_ninety_percent() -> None:
    """At least 90% of replies come out exactly as the reporter's new text."""
    missed = [case.id for case in CASES if not score(case, strip_quoted(case.text)).exact]
    assert rates(CASES, strip_quoted)["exact"] >= 0.9, missed


def test_no_marked_history_leaks() -> None:
    """In every case that names history strings, none of them reaches the output."""
    leaked = [
        case.id for case in CASES if case.leaks and not score(case, strip_quoted(case.text)).no_leak
    ]
    assert leaked == []


def test_nothing_the_reporter_wrote_is_lost() -> None:
    """Every line of the expected new text is in the output, in every case."""
    lost = [case.id for case in CASES if not score(case, strip_quoted(case.text)).contains_all]
    assert lost == []


@pytest.mark.parametrize("case", KEEP, ids=[case.id for case in KEEP])
def test_text_that_only_looks_like_history_is_kept_whole(case: Case) -> None:
    """Pasted traces, tables, dash lists, From:/To: times, dated sentences: kept untouched."""
    assert normalise(strip_quoted(case.text)) == normalise(case.text)


def test_a_reply_over_smtp_shape_is_stripped_in_parse_mail() -> None:
    """parse_mail's new_text uses the same stripping (a Zoho reply, CRLF line ends)."""
    body = (
        "Fixed on our side.\r\n\r\n---- On Thu, 03 Mar 2016 17:21:00 +0000 Platform Support "
        "<support@gw.example> wrote ----\r\n\r\nWe have logged it as INC-75.\r\n"
    )
    raw = (
        "From: anil@tenant.example\r\nTo: support@gw.example\r\nSubject: Re: [INC-75] x\r\n"
        "Message-ID: <z1@tenant.example>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body
    ).encode()
    mail = parse_mail(raw)
    assert mail.new_text == "Fixed on our side."
    assert "We have logged it" in mail.text


def test_a_cut_needs_strong_evidence() -> None:
    """An attribution-like line without an address or a date and time does not cut what follows."""
    text = "The job runner wrote:\nexit 137 at step 4\nPlease look."
    assert strip_quoted(text) == text


_PROSE = st.text(
    alphabet=string.ascii_letters + string.digits + " ,.!?'()", min_size=1, max_size=60
).filter(lambda line: line.strip() != "")


@settings(max_examples=200, deadline=None)
@given(st.lists(_PROSE, min_size=1, max_size=12))
def test_plain_prose_is_never_cut(lines: list[str]) -> None:
    """Lines of ordinary prose (no colons, quotes or rules) come back unchanged."""
    text = "\n".join(lines)
    assert normalise(strip_quoted(text)) == normalise(text)


@pytest.mark.parametrize(
    "text",
    [
        "From: x" + " date: a" * 20000,
        ("From: x" + " date: a" * 48 + "\n") * 2000,
        "-" * 200000,
        "--- " + "a" * 100000,
        ("On 2016 wrote wrote wrote " * 10 + ":\n") * 2000,
        "On 3 Mar 2016 at 17:21 <a@b.example> wrote:\n" + "|\n" * 50000,
    ],
    ids=["long-from-line", "many-from-lines", "dashes", "dashed-title", "verbs", "pipes"],
)
def test_hostile_lines_are_handled_in_linear_time(text: str) -> None:
    """Megabyte lines built to make the patterns backtrack come back (whole, when nothing
    is new) instead of stalling the worker; the suite's per-test timeout catches a stall."""
    assert strip_quoted(text).strip()
