"""The fast path for envelope addresses (adapters.smtp_address) gives exactly what aiosmtpd's
own reading gives, for any input it takes; it takes the plain form clients send."""

from __future__ import annotations

from types import SimpleNamespace

from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.smtp_address import plain_address


def aiosmtpd_reading(arg: str) -> tuple[str | None, str | None]:
    return SMTP._getaddr(SimpleNamespace(local_part_limit=0), arg)  # type: ignore[arg-type]


_PIECES = st.sampled_from(
    ["<", ">", "@", ".", "a", "Z9", "+x", "!#$%&'*/=?^_`{|}~-", " ", "\t", "\x0c", "\n", "(c)",
     '"q"', "[1.2.3.4]", ":", ",", "é", "SIZE=10", "BODY=8BITMIME", "\\", "\x00"]
)  # fmt: skip


@settings(max_examples=4000)
@given(st.lists(_PIECES, max_size=12))
def test_agrees_with_aiosmtpd_whenever_it_answers(pieces: list[str]) -> None:
    """Any mix of address syntax: where the fast path answers, aiosmtpd's parser agrees."""
    arg = "".join(pieces)
    plain = plain_address(arg)
    if plain is not None:
        assert plain == aiosmtpd_reading(arg), arg


@given(
    st.from_regex(r"\A[a-z0-9.+_-]{1,20}@[a-z0-9-]{1,20}(\.[a-z0-9-]{1,10}){0,3}\Z"),
    st.sampled_from(["", " SIZE=2048", " SIZE=1 BODY=8BITMIME", "  \tSMTPUTF8", " "]),
)
def test_plain_addresses_take_the_fast_path(address: str, params: str) -> None:
    """`<local@domain>` with ASCII dot-atoms, parameters or not, is read by the fast path
    (dots only between atoms), with aiosmtpd's result."""
    arg = f"<{address}>{params}"
    plain = plain_address(arg)
    dotted_badly = ".." in address or address.startswith(".") or ".@" in address
    assert (plain is None) == dotted_badly, arg
    if plain is not None:
        assert plain == aiosmtpd_reading(arg)


def test_other_forms_are_left_to_aiosmtpd() -> None:
    """Quoted parts, comments, domain literals, routes, non-ASCII and odd spacing: no answer."""
    for arg in (
        '<"a b"@x.example>',
        "<a(c)@x.example>",
        "<a@[127.0.0.1]>",
        "<@r.example:a@x.example>",
        "<jö@x.example>",
        " <a@x.example>",
        "<a@x.example> (comment) SIZE=1",
        "<a@x.example>SIZE=1",
        "<>",
        "a@x.example",
    ):
        assert plain_address(arg) is None, arg
