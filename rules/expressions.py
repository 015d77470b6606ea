r"""Compiling the rulebook's words and patterns into expressions.

Owns how a word or phrase becomes a regular expression (case-insensitive, on word
boundaries, flexible whitespace, hyphens and apostrophes), how a raw pattern is compiled
on RE2 and refused when RE2 cannot run it or it matches empty text, and how typographic
punctuation is made plain before matching. Pure.

Rulebook patterns (`patterns`, `unless_patterns`, `headers`) are written by people and run
on text chosen by whoever sends mail, so they run on RE2, whose matching time is linear in
the text whatever the pattern: no pattern can make triage backtrack for minutes. RE2 has no
look-around, back-references or atomic groups, and its `\b`, `\w`, `\d`, `\s` are ASCII.
The expressions written for words need look-behind and Unicode word boundaries, so they
run on `re`; they are built from escaped literals with no nested repetition, which
backtracks at most linearly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from typing import Literal, Protocol

import re2

__all__ = [
    "Expression",
    "Found",
    "compile_pattern",
    "compile_word",
    "normalise",
    "phrase_expression",
    "phrase_tokens",
    "squeezed_forms",
]

# Tenants paste text from word processors and phones: curly apostrophes and non-breaking
# spaces must not defeat a rule written with plain ones.
_NORMALISE = {"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u00a0": " "}
# A space or hyphen in a phrase matches any run of whitespace (newlines included) or hyphens,
# so "log in" also finds "log-in" and a phrase wrapped across lines.
_SEPARATOR = r"[\s\-]+"
# Past this many spellings (apostrophes kept or dropped), a phrase's forms are not checked.
_MAX_FORMS = 16


class Found(Protocol):
    """A match, from `re` or RE2."""

    def group(self, index: Literal[0], /) -> str: ...
    def span(self) -> tuple[int, int]: ...


class Expression(Protocol):
    """A compiled expression, from `re` (words) or RE2 (rulebook patterns)."""

    @property
    def pattern(self) -> str: ...
    def search(self, text: str, pos: int = ..., /) -> Found | None: ...
    def match(self, text: str, pos: int = ..., /) -> Found | None: ...


# `x{,3}` is "up to 3 x" to Python but the literal text "x{,3}" to RE2: refused, not guessed.
_EMPTY_LOWER_BOUND = re.compile(r"(?<!\\)\{,\d*\}")


@cache
def _re2_options() -> re2.Options:
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False  # an invalid pattern is reported to the operator, not on stderr
    return options


def normalise(text: str) -> str:
    """Text as rules see it: typographic apostrophes and non-breaking spaces made plain."""
    if text.isascii():
        return text
    for typographic, plain in _NORMALISE.items():
        if typographic in text:
            text = text.replace(typographic, plain)
    return text


def compile_word(phrase: str) -> re.Pattern[str]:
    """Compile a word or phrase from `words`/`unless_words` into its regular expression.

    Matching is case-insensitive and on word boundaries ("502" does not match "5020"),
    whitespace and hyphens between words are flexible, and an apostrophe is optional
    ("can't" matches "can't", "can’t" and "cant"). Raises ValueError for a phrase with
    no letters or digits.
    """
    tokens = phrase_tokens(phrase)
    if not tokens or not any(re.search(r"\w", t) for t in tokens):
        raise ValueError("a word must contain at least one letter or digit")
    return re.compile(rf"(?<!\w){phrase_expression(tokens)}(?!\w)", re.IGNORECASE)


def phrase_expression(tokens: Sequence[str]) -> str:
    """The expression for a word's tokens, apart from the word-boundary checks."""
    return _SEPARATOR.join(re.escape(t).replace("'", "'?") for t in tokens)


def phrase_tokens(phrase: str) -> list[str]:
    """A word or phrase split where it matches flexible whitespace and hyphens."""
    return [t for t in re.split(r"[\s\-]+", normalise(phrase).strip()) if t]


def squeezed_forms(phrase: str) -> frozenset[str]:
    """How every match of `compile_word(phrase)` reads in `PreparedReport.squeezed`.

    That text is keyed (see `rules.literals.key`) with each run of whitespace and hyphens
    made one space, so a match of "can't log in" reads "can't log in" or "cant log in"
    there. Empty (nothing known) for a phrase with non-ASCII letters or many apostrophes.
    """
    forms: set[str] = {""}
    for token in phrase_tokens(phrase):
        if not token.isascii():
            return frozenset()
        first, *rest = token.lower().split("'")
        variants = {first}
        for piece in rest:
            variants = {v + apostrophe + piece for v in variants for apostrophe in ("'", "")}
        forms = {f"{form} {variant}" if form else variant for form in forms for variant in variants}
        if len(forms) > _MAX_FORMS:
            return frozenset()
    return frozenset(forms)


def compile_pattern(pattern: str) -> Expression:
    """Compile a rulebook pattern from `patterns`/`headers`, case-insensitive, with RE2.

    Raises ValueError with the compiler's message when the expression is invalid or uses
    what RE2 does not have (look-around, back-references), and for an expression that
    matches empty text (it would match every message).
    """
    if _EMPTY_LOWER_BOUND.search(pattern):
        raise ValueError("'{,n}' is not a repeat in RE2 syntax: write '{0,n}'")
    try:
        regex = re2.compile(pattern, _re2_options())
    except re2.error as exc:
        detail = exc.args[0] if exc.args else ""
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        hint = ""
        if "perl operator" in detail or "escape" in detail:
            hint = " (patterns use RE2 syntax: no look-around, back-references or atomic groups)"
        raise ValueError(f"invalid regular expression: {detail}{hint}") from None
    if regex.fullmatch("") is not None:
        raise ValueError("this regular expression matches empty text, so it would match anything")
    compiled: Expression = regex
    return compiled
