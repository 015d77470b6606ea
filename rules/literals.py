"""What every match of a rule's expression must contain, so that hopeless searches are skipped.

Matching a rulebook against a report means hundreds of case-insensitive searches, nearly all
of which find nothing. This module reads a compiled expression once, at load time, and works
out plain-text facts that hold for every match it can make (`Requirements`): whole words it
must contain, substrings of which it must contain one, and texts one of which it starts
with. At match time those facts are checked against a "key" of the report text (`key`): the
text with each character replaced by what case-insensitive matching treats it as for ASCII,
with the same length and positions. When a fact fails the expression cannot match, so it is
not run at all; when all hold, the expression itself decides. The facts are only ever
necessary conditions: the outcome of a rule is exactly what running every expression on the
text would give.

Anything the analysis does not understand yields no facts, which means "always run it".
"""

from __future__ import annotations

import importlib
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import product
from typing import Any

# The expression parser behind `re` (private, but stable since 3.11). Only its output is read.
_parser: Any = importlib.import_module("re._parser")
_c: Any = importlib.import_module("re._constants")

# Characters outside ASCII that case-insensitive matching treats as an ASCII letter:
# DOTTED CAPITAL I, DOTLESS SMALL I, LONG S (KELVIN SIGN lower-cases to "k" by itself).
# `tests/test_rules_matching.py` checks this against every Unicode character.
_EXOTIC = {"\u0130": "i", "\u0131": "i", "\u017f": "s"}
_EXOTIC_TABLE = str.maketrans(_EXOTIC)
_RUN = re.compile(r"\w+")
_WORD_CHAR = re.compile(r"\w")
_ASCII_NON_WORD_TO_SPACE = str.maketrans(
    {chr(c): " " for c in range(128) if _WORD_CHAR.match(chr(c)) is None}
)
# Syntax that RE2 reads otherwise than `re` does (see `pattern_requirements`).
_RE2_ONLY = re.compile(r"\[:|\\[pPQECz]|\\x\{|\(\?[a-zA-Z-]*U|\{,")
# Bounds that keep the analysis cheap; past them an expression simply gets fewer facts.
_MAX_ALTERNATIVES = 64
_MAX_REPEAT = 3


def key(text: str) -> str:
    """`text` as plain lower case for ASCII: same length, same positions, same word runs.

    Any character that a case-insensitive expression matches against an ASCII character x
    becomes `x.lower()` here. Other characters may change case but stay word characters,
    spaces or neither, as they were.
    """
    if not text.isascii() and any(c in text for c in _EXOTIC):
        text = text.translate(_EXOTIC_TABLE)
    return text.lower()


def word_runs(keyed: str) -> frozenset[str]:
    """The maximal runs of word characters in a keyed text."""
    if keyed.isascii():  # the same runs, found faster
        return frozenset(keyed.translate(_ASCII_NON_WORD_TO_SPACE).split())
    return frozenset(_RUN.findall(keyed))


def squeeze(keyed: str) -> str:
    """A keyed text with each run of whitespace and hyphens made one space."""
    return " ".join(keyed.replace("-", " ").split())


@dataclass(frozen=True)
class Requirements:
    """Facts that hold for every match of one expression, all in keyed (lower-case) form.

    `runs`: word runs (maximal `\\w+`) that every match contains whole.
    `clauses`: for each clause, every match contains at least one of its strings.
    `starts`: every match starts with one of these texts (empty when nothing is known).
    """

    runs: frozenset[str] = frozenset()
    clauses: tuple[frozenset[str], ...] = ()
    starts: frozenset[str] = frozenset()


NOTHING_KNOWN = Requirements()


def requirements(regex: re.Pattern[str]) -> Requirements:
    """Work out the `Requirements` of a compiled expression (NOTHING_KNOWN if unsure)."""
    try:
        items = list(_parser.parse(regex.pattern, regex.flags & ~re.UNICODE))
        # Under re.ASCII word boundaries are not where Unicode puts them: claim no runs.
        runs = frozenset() if regex.flags & re.ASCII else _whole_runs(items)
        return Requirements(runs=runs, clauses=_clauses(items), starts=_starts(items))
    except Exception:  # a parse this module cannot read just gives no facts
        return NOTHING_KNOWN


def pattern_requirements(pattern: str) -> Requirements:
    """The `Requirements` of a rulebook pattern, which RE2 runs (see `rules.matching`).

    The pattern is read with `re`'s parser, case-insensitively, which reads the syntax both
    engines share the same way. For syntax that RE2 reads otherwise (`\\pL`, `[[:alpha:]]`,
    `\\Q…\\E`, `\\x{e9}`, `(?U)`, `\\z`, `{,n}`), or that `re` cannot parse, nothing is
    claimed. RE2's word boundaries are ASCII, not where the key's word runs end, so no runs
    are claimed either: only substrings.
    """
    if _RE2_ONLY.search(pattern):
        return NOTHING_KNOWN
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "possible nested set", "possible set difference"
            items = list(_parser.parse(pattern, re.IGNORECASE))
        return Requirements(clauses=_clauses(items), starts=_starts(items))
    except Exception:  # a parse this module cannot read just gives no facts
        return NOTHING_KNOWN


# --- single characters ---------------------------------------------------------------------


def _ascii_char(code: int) -> str | None:
    """The keyed form of a literal character, or None outside ASCII (case rules unknown)."""
    return chr(code).lower() if code < 128 else None


def _is_word_literal(item: tuple[Any, Any]) -> bool:
    op, av = item
    return op is _c.LITERAL and av < 128 and _WORD_CHAR.match(chr(av)) is not None


def _consumes_non_word(item: tuple[Any, Any]) -> bool:
    """True when the item always consumes at least one character, all of them non-word."""
    op, av = item
    if op is _c.LITERAL:
        return av < 128 and _WORD_CHAR.match(chr(av)) is None
    if op is _c.IN:
        return bool(av) and all(_non_word_member(m) for m in av)
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
        low, _high, sub = av
        inner = list(sub)
        return low >= 1 and len(inner) == 1 and _consumes_non_word(inner[0])
    return False


def _non_word_member(member: tuple[Any, Any]) -> bool:
    """A member of a character class that only matches non-word characters."""
    op, av = member
    if op is _c.LITERAL:
        return av < 128 and _WORD_CHAR.match(chr(av)) is None
    return op is _c.CATEGORY and av in (_c.CATEGORY_SPACE, _c.CATEGORY_NOT_WORD)


def _is_not_word_assertion(item: tuple[Any, Any], direction: int) -> bool:
    """`(?<!\\w)` (direction -1) or `(?!\\w)` (direction 1)."""
    op, av = item
    if op is not _c.ASSERT_NOT or av[0] != direction:
        return False
    return list(av[1]) == [(_c.IN, [(_c.CATEGORY, _c.CATEGORY_WORD)])]


def _guards_left(item: tuple[Any, Any]) -> bool:
    """Whatever precedes a following word character is a non-word character (or the start)."""
    op, av = item
    if op is _c.AT:
        return av in (_c.AT_BOUNDARY, _c.AT_BEGINNING, _c.AT_BEGINNING_STRING)
    return _is_not_word_assertion(item, -1) or _consumes_non_word(item)


def _guards_right(item: tuple[Any, Any]) -> bool:
    """Whatever follows a preceding word character is a non-word character (or the end)."""
    op, av = item
    if op is _c.AT:
        return av in (_c.AT_BOUNDARY, _c.AT_END, _c.AT_END_STRING)
    return _is_not_word_assertion(item, 1) or _consumes_non_word(item)


# --- whole word runs -----------------------------------------------------------------------


def _whole_runs(items: list[tuple[Any, Any]]) -> frozenset[str]:
    """Literal words in the top-level sequence with a non-word guard on both sides.

    In `(?<!\\w)site[\\s\\-]+is(?!\\w)` both "site" and "is" are matched as whole runs of
    word characters, so a text without the run "site" cannot match.
    """
    runs: set[str] = set()
    i = 0
    while i < len(items):
        if not _is_word_literal(items[i]):
            i += 1
            continue
        j = i
        while j < len(items) and _is_word_literal(items[j]):
            j += 1
        if i > 0 and j < len(items) and _guards_left(items[i - 1]) and _guards_right(items[j]):
            runs.add("".join(chr(av).lower() for _op, av in items[i:j]))
        i = j
    return frozenset(runs)


# --- how matches start ----------------------------------------------------------------------


def _starts(items: list[tuple[Any, Any]]) -> frozenset[str]:
    r"""Texts one of which every match starts with (empty when not known).

    E.g. "cant" and "can't" for `(?<!\w)can'?t[\s\-]+i`, or "db", "redis" … for
    `\b(?:db|redis|…)\s+down`. A text that begins with another one in the set is left
    out: wherever it occurs, the shorter one occurs too.
    """
    texts = _sequence_starts(items)
    if texts is None:
        return frozenset()
    return frozenset(t for t in texts if not any(t != u and t.startswith(u) for u in texts))


def _sequence_starts(items: list[tuple[Any, Any]]) -> frozenset[str] | None:
    """Non-empty texts one of which every match of the sequence starts with, or None."""
    texts: frozenset[str] = frozenset({""})
    for item in items:
        part = _item_exact(item)
        if part is None:
            part = _item_starts(item)
            joined = None if part is None else _concat(texts, part)
            texts = texts if joined is None else joined
            break
        joined = _concat(texts, part)
        if joined is None:
            break
        texts = joined
    return None if "" in texts else texts


def _item_starts(item: tuple[Any, Any]) -> frozenset[str] | None:
    """Non-empty texts one of which every match of a not exactly known item starts with."""
    op, av = item
    if op is _c.SUBPATTERN:
        return _sequence_starts(list(av[-1]))
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
        return _sequence_starts(list(av[2])) if av[0] >= 1 else None
    if op is _c.BRANCH:
        return _union(_sequence_starts(list(branch)) for branch in av[1])
    return None


# --- substrings some of which must occur ---------------------------------------------------


def _exact(items: list[tuple[Any, Any]]) -> frozenset[str] | None:
    """Every text the sequence can match, when that is a small set of ASCII literals."""
    texts: frozenset[str] | None = frozenset({""})
    for item in items:
        part = _item_exact(item)
        if part is None or texts is None:
            return None
        texts = _concat(texts, part)
    return texts


def _concat(left: frozenset[str], right: frozenset[str]) -> frozenset[str] | None:
    """Each text of `left` followed by each of `right` (None past _MAX_ALTERNATIVES)."""
    if len(left) * len(right) > _MAX_ALTERNATIVES:
        return None
    return frozenset(a + b for a, b in product(left, right))


def _item_exact(item: tuple[Any, Any]) -> frozenset[str] | None:
    """Every text one item can match, when that is a small set of ASCII literals."""
    op, av = item
    if op is _c.LITERAL or op is _c.IN:
        return _chars_exact(op, av)
    if op in (_c.AT, _c.ASSERT, _c.ASSERT_NOT):
        return frozenset({""})  # zero width: adds nothing to the matched text
    if op is _c.SUBPATTERN:
        return _exact(list(av[-1]))
    if op is _c.BRANCH:
        return _union(_exact(list(branch)) for branch in av[1])
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
        return _repeat_exact(*av)
    return None


def _chars_exact(op: Any, av: Any) -> frozenset[str] | None:
    """The characters a literal or a class can match, keyed.

    A literal: itself, if ASCII. A class: only one made of uncased ASCII characters
    ("[234]", "[-/]"), whose case rules are trivial.
    """
    if op is _c.LITERAL:
        char = _ascii_char(av)
        return None if char is None else frozenset({char})
    chars = {chr(v) for o, v in av if o is _c.LITERAL and v < 128 and not chr(v).isalpha()}
    return frozenset(chars) if chars and len(chars) == len(av) else None


def _repeat_exact(low: int, high: int, sub: Any) -> frozenset[str] | None:
    """Every text `low` to `high` repeats of `sub` can match, for a few repeats at most."""
    inner = _exact(list(sub))
    if inner is None or high > _MAX_REPEAT:
        return None
    counts: list[frozenset[str] | None] = []
    for count in range(low, high + 1):
        texts: frozenset[str] | None = frozenset({""})
        for _ in range(count):
            texts = None if texts is None else _concat(texts, inner)
        counts.append(texts)
    return _union(counts)


def _union(sets: Iterable[frozenset[str] | None]) -> frozenset[str] | None:
    """All the texts of all the sets; None if one is None or there are too many."""
    union: set[str] = set()
    for texts in sets:
        if texts is None:
            return None
        union |= texts
    return frozenset(union) if len(union) <= _MAX_ALTERNATIVES else None


def _clauses(items: list[tuple[Any, Any]]) -> tuple[frozenset[str], ...]:
    """Clauses for a sequence: runs of exactly known items, and what each other item needs."""
    clauses: list[frozenset[str]] = []

    def close(run: frozenset[str]) -> None:
        if "" not in run:
            clauses.append(run)

    run: frozenset[str] = frozenset({""})
    for item in items:
        part = _item_exact(item)
        if part is None:
            close(run)
            run = frozenset({""})
            clauses.extend(_item_clauses(item))
            continue
        joined = _concat(run, part)
        if joined is None:  # too many alternatives: end the run here, start another
            close(run)
            joined = part
        run = joined
    close(run)
    return tuple(clauses)


def _item_clauses(item: tuple[Any, Any]) -> tuple[frozenset[str], ...]:
    """Clauses for one item whose matched text is not exactly known."""
    op, av = item
    if op is _c.SUBPATTERN:
        return _clauses(list(av[-1]))
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
        low, _high, sub = av
        return _clauses(list(sub)) if low >= 1 else ()
    if op is _c.BRANCH:
        # One of the branches matched, so one of their needs holds: take each branch's best.
        union: set[str] = set()
        for branch in av[1]:
            options = _clauses(list(branch))
            if not options:
                return ()
            best: frozenset[str] = max(options, key=_strength)
            union |= best
        return (frozenset(union),) if len(union) <= _MAX_ALTERNATIVES else ()
    return ()


def _strength(clause: frozenset[str]) -> tuple[int, int]:
    """How much a clause narrows things down: longer shortest string first, then fewer strings."""
    return (min(len(s) for s in clause), -len(clause))
