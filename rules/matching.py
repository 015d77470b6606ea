"""How one rule's conditions are compiled and tested against a report.

This module owns the matching language of the rulebook: how a word or phrase becomes a
regular expression (case-insensitive, on word boundaries, flexible whitespace and
apostrophes), how raw patterns, senders, sender domains and headers are tested, and how
what matched is described back to humans. It knows nothing about priorities.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parseaddr

from rules.types import Mailbox, Report

# Tenants paste text from word processors and phones: curly apostrophes and non-breaking
# spaces must not defeat a rule written with plain ones.
_NORMALISE = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u00a0": " "})
# A space or hyphen in a phrase matches any run of whitespace (newlines included) or hyphens,
# so "log in" also finds "log-in" and a phrase wrapped across lines.
_SEPARATOR = r"[\s\-]+"
_QUOTE_LIMIT = 60


def normalise(text: str) -> str:
    """Text as rules see it: typographic apostrophes and non-breaking spaces made plain."""
    return text.translate(_NORMALISE)


def compile_word(phrase: str) -> re.Pattern[str]:
    """Compile a word or phrase from `words`/`unless_words` into its regular expression.

    Matching is case-insensitive and on word boundaries ("502" does not match "5020"),
    whitespace and hyphens between words are flexible, and an apostrophe is optional
    ("can't" matches "can't", "can’t" and "cant"). Raises ValueError for a phrase with
    no letters or digits.
    """
    tokens = [t for t in re.split(r"[\s\-]+", normalise(phrase).strip()) if t]
    if not tokens or not any(re.search(r"\w", t) for t in tokens):
        raise ValueError("a word must contain at least one letter or digit")
    body = _SEPARATOR.join(re.escape(t).replace("'", "'?") for t in tokens)
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a raw regular expression from `patterns`/`headers` (case-insensitive).

    Raises ValueError with the compiler's message when the expression is invalid, and
    for an expression that matches empty text (it would match every message).
    """
    try:
        regex = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from exc
    if regex.fullmatch(""):
        raise ValueError("this regular expression matches empty text, so it would match anything")
    return regex


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


@dataclass(frozen=True)
class Matcher:
    """A rule's conditions, compiled once when the rulebook is loaded."""

    mailboxes: frozenset[Mailbox]
    senders: frozenset[str]
    sender_domains: tuple[str, ...]
    terms: tuple[re.Pattern[str], ...]
    also: tuple[re.Pattern[str], ...]
    headers: tuple[tuple[str, re.Pattern[str]], ...]
    unless: tuple[re.Pattern[str], ...]

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
            terms=(*map(compile_word, words), *map(compile_pattern, patterns)),
            also=tuple(map(compile_word, also_words)),
            headers=tuple((k.lower(), compile_pattern(v)) for k, v in (headers or {}).items()),
            unless=(*map(compile_word, unless_words), *map(compile_pattern, unless_patterns)),
        )

    def test(self, report: Report) -> Outcome:
        """Test every condition against the report; see `Outcome`."""
        if self.mailboxes and report.mailbox not in self.mailboxes:
            return _NO_MATCH
        evidence: list[str] = []
        who = self._sender_evidence(report.sender)
        header_evidence = self._header_evidence(report.headers)
        if who is None or header_evidence is None:
            return _NO_MATCH
        fields = (("subject", normalise(report.subject)), ("body", normalise(report.body)))
        if self.terms:
            hits = _find_all(self.terms, fields)
            if not hits:
                return _NO_MATCH
            evidence.append("matched " + ", ".join(hits[:3]))
        if self.also:
            also_hits = _find_all(self.also, fields)
            if not also_hits:
                return _NO_MATCH
            evidence.append("with " + ", ".join(also_hits[:2]))
        evidence.extend(who)
        evidence.extend(header_evidence)
        excluded = _find_all(self.unless, fields)
        if excluded:
            return Outcome(matched=False, excluded_by=excluded[0])
        return Outcome(matched=True, evidence=tuple(evidence))

    def _sender_evidence(self, sender: str) -> list[str] | None:
        """Evidence for the sender condition, or None when it fails.

        `senders` and `sender_domains` form one condition: the sender must be one of the
        listed addresses or within one of the listed domains (subdomains included).
        """
        if not self.senders and not self.sender_domains:
            return []
        address = sender_address(sender)
        if address in self.senders:
            return [f"sender {address} is listed"]
        domain = address.rpartition("@")[2]
        for listed in self.sender_domains:
            if domain and (domain == listed or domain.endswith("." + listed)):
                return [f"sender domain {domain}"]
        return None

    def _header_evidence(self, headers: Mapping[str, str]) -> list[str] | None:
        """Evidence for the header conditions (all must match), or None when one fails."""
        if not self.headers:
            return []
        lowered = {k.lower(): v for k, v in headers.items()}
        evidence: list[str] = []
        for name, pattern in self.headers:
            value = lowered.get(name)
            if value is None or pattern.search(normalise(value)) is None:
                return None
            evidence.append(f"header {name} matched")
        return evidence


def _find_all(regexes: Sequence[re.Pattern[str]], fields: Sequence[tuple[str, str]]) -> list[str]:
    """Each regex's first hit, described as `"text" in subject`.

    A hit that overlaps one already found in the same field ("push fails" inside
    "cf push fails") adds nothing and is left out.
    """
    hits: list[str] = []
    spans: list[tuple[str, int, int]] = []
    for regex in regexes:
        for where, text in fields:
            found = regex.search(text)
            if found is None or not found.group(0).strip():
                continue
            start, end = found.span()
            if not any(w == where and start < e and s < end for w, s, e in spans):
                spans.append((where, start, end))
                hits.append(f"{_quote(found.group(0))} in {where}")
            break
    return hits
