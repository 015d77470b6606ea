"""How one rule's conditions are tested against a report, and what matched described.

This module owns testing a rule's compiled words, patterns, senders, sender domains and
headers against a prepared report (subject first, then body), the literal pre-checks that
skip most searches, and the reasons shown to humans. Expressions are compiled in
`rules.expressions`. It knows nothing about priorities.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from functools import cached_property, lru_cache

from rules.expressions import (
    Expression,
    Found,
    compile_pattern,
    compile_word,
    normalise,
    phrase_expression,
    phrase_tokens,
    squeezed_forms,
)
from rules.literals import key, pattern_requirements, requirements, squeeze, word_runs
from rules.types import Mailbox, Report

_QUOTE_LIMIT = 60
# How many candidate starts a term tries one by one before handing the rest of the field to
# the expression's own search (both give the same match; this only bounds the cost).
_MAX_TRIES = 24


def sender_address(sender: str) -> str:
    """The bare, lower-cased address from "Name <a@b>" or "a@b"."""
    return parseaddr(sender)[1].strip().lower()


def _quote(text: str) -> str:
    """A matched fragment as it appears in a reason: whitespace collapsed, length capped."""
    flat = " ".join(text.split())
    if len(flat) > _QUOTE_LIMIT:
        flat = flat[: _QUOTE_LIMIT - 1] + "…"
    return f'"{flat}"'


@dataclass(frozen=True)
class Outcome:
    """The result of testing one rule.

    `matched` is True when every condition holds; `evidence` then says what matched, in
    reason-ready fragments. `excluded_by` is set instead when the rule would have matched
    but an `unless_words`/`unless_patterns` entry set it aside.
    """

    matched: bool
    evidence: tuple[str, ...] = ()
    excluded_by: str | None = None


_NO_MATCH = Outcome(matched=False)


class PreparedReport:
    """A report with the views of its text that rules look at, each computed once.

    Matching a whole rulebook against one report tests hundreds of terms; normalising the
    text, keying it (see `rules.literals.key`) and parsing the sender are done here once,
    not once per rule or per term.
    """

    def __init__(self, report: Report) -> None:
        self.report = report
        subject, body = normalise(report.subject), normalise(report.body)
        subject_key, body_key = key(subject), key(body)
        # (where, text as rules see it, its key): the order in which fields are searched.
        self.fields: tuple[tuple[str, str, str], ...] = (
            ("subject", subject, subject_key),
            ("body", body, body_key),
        )
        self.keyed = subject_key + "\n" + body_key
        self.runs = word_runs(self.keyed)
        self.squeezed = squeeze(self.keyed)
        # Term.first_hit by expression: rules share many words ("intermittent", …).
        self.hits: dict[Expression, tuple[str, Found] | None] = {}

    @cached_property
    def sender(self) -> str:
        """The bare, lower-cased sender address."""
        return sender_address(self.report.sender)

    @cached_property
    def headers(self) -> dict[str, str]:
        """The headers, by lower-cased name."""
        return {k.lower(): v for k, v in self.report.headers.items()}


class Term:
    """One compiled word or pattern, with what its matches must contain (`Requirements`).

    `first_hit` gives exactly what searching the subject, then the body, with the
    expression would give; the requirements only let it skip searches that cannot succeed.
    """

    __slots__ = ("_clauses", "_finder", "_forms", "_linear", "_runs", "_start", "regex")

    def __init__(
        self,
        regex: Expression,
        forms: frozenset[str] = frozenset(),
        finder: re.Pattern[str] | None = None,
    ) -> None:
        """Analyse `regex`; a word also brings what only its phrase tells.

        `forms`: its `squeezed_forms` (every match reads as one of them). `finder`: an
        expression that matches the key wherever a match of `regex` can start.
        """
        self.regex = regex
        self._forms = forms
        # RE2 (a rulebook pattern): one search from the first possible start, never many
        # anchored tries (each would re-encode the text).
        self._linear = not isinstance(regex, re.Pattern)
        if isinstance(regex, re.Pattern):
            needs = requirements(regex)
        else:
            needs = pattern_requirements(regex.pattern)
        self._runs = needs.runs
        self._clauses = needs.clauses
        # Where matches can start: given, or one known start text (found with str.find), or
        # several (found together by one expression over the key).
        starts = sorted(needs.starts)
        self._start = starts[0] if len(starts) == 1 and finder is None else None
        if finder is None and len(starts) > 1:
            finder = re.compile("|".join(map(re.escape, starts)))
        self._finder = finder

    def __repr__(self) -> str:
        return f"Term({self.regex.pattern!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Term) and other.regex == self.regex

    def __hash__(self) -> int:
        return hash(self.regex)

    @property
    def runs(self) -> frozenset[str]:
        """Word runs (keyed) that every match contains whole."""
        return self._runs

    def first_hit(self, text: PreparedReport) -> tuple[str, Found] | None:
        """The first field with a non-blank match, and that match (None if no field has one)."""
        if not self._runs <= text.runs:
            return None
        try:
            return text.hits[self.regex]
        except KeyError:
            hit = text.hits[self.regex] = self._first_hit(text)
            return hit

    def _first_hit(self, text: PreparedReport) -> tuple[str, Found] | None:
        if self._forms and not any(f in text.squeezed for f in self._forms):
            return None
        keyed = text.keyed
        for clause in self._clauses:
            if not any(s in keyed for s in clause):
                return None
        for where, plain, plain_key in text.fields:
            found = self._search(plain, plain_key)
            if found is None or not found.group(0).strip():
                continue
            return where, found
        return None

    def _search(self, plain: str, plain_key: str) -> Found | None:
        """`self.regex.search(plain)`, trying only where a match can start.

        Every match starts at a position `_next_start` finds in the key (same positions as
        `plain`), so trying those positions in order finds the leftmost match. Past
        `_MAX_TRIES` of them, the expression's own search takes over from the next one.
        """
        if self._start is None and self._finder is None:
            return self.regex.search(plain)
        if self._linear:
            first = self._next_start(plain_key, 0)
            return None if first < 0 else self.regex.search(plain, first)
        match = self.regex.match
        at = self._next_start(plain_key, 0)
        for _ in range(_MAX_TRIES):
            if at < 0:
                return None
            found = match(plain, at)
            if found is not None:
                return found
            at = self._next_start(plain_key, at + 1)
        return None if at < 0 else self.regex.search(plain, at)

    def _next_start(self, plain_key: str, pos: int) -> int:
        """The first position from `pos` where a match could start, or -1."""
        if self._start is not None:
            return plain_key.find(self._start, pos)
        if self._finder is None:
            raise RuntimeError("_finder is set here")
        found = self._finder.search(plain_key, pos)
        return -1 if found is None else found.start()


class Terms:
    """A list of terms, in order, indexed by a word run each one needs.

    Most terms of a rule need a word the report does not contain; the index finds the
    others with one set intersection instead of a look at every term.
    """

    __slots__ = ("_always", "_index", "_keys", "_terms")

    def __init__(self, terms: Sequence[Term] = ()) -> None:
        self._terms = tuple(terms)
        index: dict[str, list[int]] = {}
        always: list[int] = []
        for position, term in enumerate(self._terms):
            if term.runs:
                # The longest run, as the likeliest to be missing from a report.
                index.setdefault(max(sorted(term.runs), key=len), []).append(position)
            else:
                always.append(position)
        self._index = {run: tuple(positions) for run, positions in index.items()}
        self._keys = frozenset(index)
        self._always = tuple(always)

    def __len__(self) -> int:
        return len(self._terms)

    def __iter__(self) -> Iterator[Term]:
        return iter(self._terms)

    def __repr__(self) -> str:
        return f"Terms({list(self._terms)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Terms) and other._terms == self._terms

    def __hash__(self) -> int:
        return hash(self._terms)

    def candidates(self, text: PreparedReport) -> list[Term]:
        """The terms, in order, less some that cannot match `text`."""
        found = self._keys & text.runs
        if not found:
            return [self._terms[p] for p in self._always]
        positions = [*self._always]
        for run in found:
            positions.extend(self._index[run])
        return [self._terms[p] for p in sorted(positions)]


@dataclass(frozen=True)
class Matcher:
    """A rule's conditions, compiled once when the rulebook is loaded."""

    mailboxes: frozenset[Mailbox]
    senders: frozenset[str]
    sender_domains: tuple[str, ...]
    terms: Terms
    also: Terms
    headers: tuple[tuple[str, Expression], ...]
    unless: Terms

    @classmethod
    def build(
        cls,
        *,
        mailboxes: Sequence[Mailbox] = (),
        senders: Sequence[str] = (),
        sender_domains: Sequence[str] = (),
        words: Sequence[str] = (),
        patterns: Sequence[str] = (),
        also_words: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
        unless_words: Sequence[str] = (),
        unless_patterns: Sequence[str] = (),
    ) -> Matcher:
        """Compile the conditions; raises ValueError on a bad word or expression."""
        return cls(
            mailboxes=frozenset(mailboxes),
            senders=frozenset(sender_address(s) for s in senders),
            sender_domains=tuple(d.strip().lower().lstrip("@") for d in sender_domains),
            terms=Terms([*map(_word_term, words), *map(_pattern_term, patterns)]),
            also=Terms(list(map(_word_term, also_words))),
            headers=tuple((k.lower(), compile_pattern(v)) for k, v in (headers or {}).items()),
            unless=Terms([*map(_word_term, unless_words), *map(_pattern_term, unless_patterns)]),
        )

    def test(self, report: Report | PreparedReport) -> Outcome:
        """Test every condition against the report; see `Outcome`.

        Pass a `PreparedReport` when testing many rules against one report, so its text is
        prepared once.
        """
        text = report if isinstance(report, PreparedReport) else PreparedReport(report)
        if self.mailboxes and text.report.mailbox not in self.mailboxes:
            return _NO_MATCH
        evidence: list[str] = []
        who = self._sender_evidence(text)
        header_evidence = self._header_evidence(text)
        if who is None or header_evidence is None:
            return _NO_MATCH
        if self.terms:
            hits = _find_all(self.terms, text, limit=3)
            if not hits:
                return _NO_MATCH
            evidence.append("matched " + ", ".join(hits))
        if self.also:
            also_hits = _find_all(self.also, text, limit=2)
            if not also_hits:
                return _NO_MATCH
            evidence.append("with " + ", ".join(also_hits))
        evidence.extend(who)
        evidence.extend(header_evidence)
        excluded = _find_all(self.unless, text, limit=1)
        if excluded:
            return Outcome(matched=False, excluded_by=excluded[0])
        return Outcome(matched=True, evidence=tuple(evidence))

    def _sender_evidence(self, text: PreparedReport) -> list[str] | None:
        """Evidence for the sender condition, or None when it fails.

        `senders` and `sender_domains` form one condition: the sender must be one of the
        listed addresses or within one of the listed domains (subdomains included).
        """
        if not self.senders and not self.sender_domains:
            return []
        address = text.sender
        if address in self.senders:
            return [f"sender {address} is listed"]
        domain = address.rpartition("@")[2]
        for listed in self.sender_domains:
            if domain and (domain == listed or domain.endswith("." + listed)):
                return [f"sender domain {domain}"]
        return None

    def _header_evidence(self, text: PreparedReport) -> list[str] | None:
        """Evidence for the header conditions (all must match), or None when one fails."""
        if not self.headers:
            return []
        lowered = text.headers
        evidence: list[str] = []
        for name, pattern in self.headers:
            value = lowered.get(name)
            if value is None or pattern.search(normalise(value)) is None:
                return None
            evidence.append(f"header {name} matched")
        return evidence


# Terms are immutable and cost some work to build: rules and reloaded rulebooks share them.
@lru_cache(maxsize=4096)
def _word_term(phrase: str) -> Term:
    regex = compile_word(phrase)
    tokens = phrase_tokens(phrase)
    finder = None
    if all(t.isascii() for t in tokens):
        # The phrase over the key, without the word-boundary checks: it matches wherever
        # a match can start (the key has ASCII in lower case, separators kept).
        finder = re.compile(phrase_expression([t.lower() for t in tokens]))
    return Term(regex, squeezed_forms(phrase), finder)


@lru_cache(maxsize=4096)
def _pattern_term(pattern: str) -> Term:
    return Term(compile_pattern(pattern))


def _find_all(terms: Terms, text: PreparedReport, limit: int) -> list[str]:
    """The first `limit` hits, one per term in order, each described as `"text" in subject`.

    A term's hit is its first match in the subject, or else in the body. A hit that
    overlaps one already found in the same field ("push fails" inside "cf push fails") adds
    nothing and is left out. Later terms cannot change the first `limit` hits, so the
    search stops there.
    """
    hits: list[str] = []
    spans: list[tuple[str, int, int]] = []
    for term in terms.candidates(text):
        hit = term.first_hit(text)
        if hit is None:
            continue
        where, found = hit
        start, end = found.span()
        if not any(w == where and start < e and s < end for w, s, e in spans):
            spans.append((where, start, end))
            hits.append(f"{_quote(found.group(0))} in {where}")
            if len(hits) == limit:
                break
    return hits
