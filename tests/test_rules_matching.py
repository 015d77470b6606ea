"""Rule matching: the indexed matcher decides exactly as a plain one-search-per-word matcher.

The reference below (`plain_*`) is matching as the rulebook format describes it, with no
shortcuts: every word and pattern compiled to its own case-insensitive expression and
searched for in the subject, then the body. `rules.matching` skips most of those searches
using facts worked out by `rules.literals`; these tests check that the verdicts, reasons and
evidence are the same, on the shipped rulebook's examples, on generated tenant mail, and on a
rulebook of awkward words and patterns.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from email.utils import parseaddr
from typing import Any

import pytest
import re2
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.book import Rule, Rulebook, default_rulebook
from rules.engine import classify
from rules.expressions import compile_word, squeezed_forms
from rules.literals import key, requirements, squeeze, word_runs
from rules.matching import Outcome, PreparedReport, Term
from rules.types import Mailbox, Priority, Report

BOOK = default_rulebook()
E, S = Mailbox.EMERGENCY, Mailbox.SUPPORT

# --- the reference: one expression per word, each searched in full ------------------------

_PLAIN = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u00a0": " "})


def plain_word(phrase: str) -> re.Pattern[str]:
    """A word or phrase as the rulebook format defines it."""
    tokens = [t for t in re.split(r"[\s\-]+", phrase.translate(_PLAIN).strip()) if t]
    body = r"[\s\-]+".join(re.escape(t).replace("'", "'?") for t in tokens)
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


def plain_pattern(pattern: str) -> Any:
    """A rulebook pattern as the format defines it: RE2, case-insensitive."""
    options = re2.Options()
    options.case_sensitive = False
    return re2.compile(pattern, options)


def plain_quote(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) > 60:
        flat = flat[:59] + "…"
    return f'"{flat}"'


def plain_first_hit(
    regex: re.Pattern[str], fields: Sequence[tuple[str, str]]
) -> tuple[str, re.Match[str]] | None:
    """The first match in the subject, or else the body, ignoring a blank one."""
    for where, text in fields:
        found = regex.search(text)
        if found is None or not found.group(0).strip():
            continue
        return where, found
    return None


def plain_find_all(
    regexes: Sequence[re.Pattern[str]], fields: Sequence[tuple[str, str]]
) -> list[str]:
    """Each expression's first hit, in order, leaving out hits that overlap earlier ones."""
    hits: list[str] = []
    spans: list[tuple[str, int, int]] = []
    for regex in regexes:
        hit = plain_first_hit(regex, fields)
        if hit is None:
            continue
        where, found = hit
        start, end = found.span()
        if not any(w == where and start < e and s < end for w, s, e in spans):
            spans.append((where, start, end))
            hits.append(f"{plain_quote(found.group(0))} in {where}")
    return hits


def plain_address(sender: str) -> str:
    return parseaddr(sender)[1].strip().lower()


def plain_fields(report: Report) -> tuple[tuple[str, str], ...]:
    return (("subject", report.subject.translate(_PLAIN)), ("body", report.body.translate(_PLAIN)))


def plain_sender(rule: Rule, report: Report) -> list[str] | None:
    """Evidence for the sender condition, or None when it fails."""
    if not rule.senders and not rule.sender_domains:
        return []
    address = plain_address(report.sender)
    domain = address.rpartition("@")[2]
    domains = [d.strip().lower().lstrip("@") for d in rule.sender_domains]
    if address in {plain_address(s) for s in rule.senders}:
        return [f"sender {address} is listed"]
    if domain and any(domain == d or domain.endswith("." + d) for d in domains):
        return [f"sender domain {domain}"]
    return None


def plain_headers(rule: Rule, report: Report) -> list[str] | None:
    """Evidence for the header conditions, or None when one fails."""
    headers = {k.lower(): v for k, v in report.headers.items()}
    evidence: list[str] = []
    for name, pattern in rule.headers.items():
        value = headers.get(name.lower())
        if value is None or plain_pattern(pattern).search(value.translate(_PLAIN)) is None:
            return None
        evidence.append(f"header {name.lower()} matched")
    return evidence


def plain_outcome(rule: Rule, report: Report) -> Outcome:
    """Test one rule's conditions, searching for every word and pattern in full."""
    no = Outcome(matched=False)
    who, header_evidence = plain_sender(rule, report), plain_headers(rule, report)
    if rule.mailboxes and report.mailbox not in rule.mailboxes:
        return no
    if who is None or header_evidence is None:
        return no
    fields = plain_fields(report)
    evidence: list[str] = []
    terms = [*map(plain_word, rule.words), *map(plain_pattern, rule.patterns)]
    hits = plain_find_all(terms, fields)
    also_hits = plain_find_all([plain_word(w) for w in rule.also_words], fields)
    if (terms and not hits) or (rule.also_words and not also_hits):
        return no
    if terms:
        evidence.append("matched " + ", ".join(hits[:3]))
    if rule.also_words:
        evidence.append("with " + ", ".join(also_hits[:2]))
    unless = [
        *map(plain_word, rule.unless_words),
        *map(plain_pattern, rule.unless_patterns),
    ]
    excluded = plain_find_all(unless, fields)
    if excluded:
        return Outcome(matched=False, excluded_by=excluded[0])
    return Outcome(matched=True, evidence=(*evidence, *who, *header_evidence))


def plain_classify(report: Report, book: Rulebook) -> tuple[Priority, str | None, tuple[str, ...]]:
    """`rules.engine.classify` over `plain_outcome`: (priority, rule id, reasons)."""
    matched: list[tuple[Rule, Outcome]] = []
    set_aside: list[tuple[Rule, str]] = []
    for rule in book.rules:
        outcome = plain_outcome(rule, report)
        if outcome.matched:
            matched.append((rule, outcome))
        elif outcome.excluded_by is not None:
            set_aside.append((rule, outcome.excluded_by))
    winner: Rule | None = None
    if matched:
        winner, outcome = min(matched, key=lambda pair: pair[0].priority.rank)
        priority = winner.priority
        reasons = [
            f"{priority} by rule '{winner.id}': {winner.reason}",
            f"rule '{winner.id}' " + "; ".join(outcome.evidence),
        ]
        others = [f"'{r.id}' ({r.priority})" for r, _ in matched if r is not winner]
        if others:
            reasons.append("also matched: " + ", ".join(others))
    else:
        default = book.mailboxes.get(report.mailbox)
        priority = default.priority
        reasons = [f"{priority} by default for the {report.mailbox} mailbox: {default.reason}"]
    reasons.extend(
        f"set aside rule '{r.id}' ({r.priority}): {hit} is one of its exceptions"
        for r, hit in set_aside
        if r.priority.rank < priority.rank
    )
    return priority, winner.id if winner else None, tuple(reasons)


def assert_same_decisions(report: Report, book: Rulebook) -> None:
    """Verdict and every rule's outcome agree with the reference."""
    verdict = classify(report, book)
    got = (verdict.priority, verdict.rule.id if verdict.rule else None, verdict.reasons)
    assert got == plain_classify(report, book)
    text = PreparedReport(report)
    for rule in book.rules:
        assert rule.matcher.test(text) == plain_outcome(rule, report), rule.id
        assert rule.matcher.test(report) == plain_outcome(rule, report), rule.id


def assert_same_hits(report: Report, book: Rulebook) -> None:
    """Every term's first hit (field, span, text) agrees with a full search."""
    fields = plain_fields(report)
    text = PreparedReport(report)
    for rule in book.rules:
        for term in (*rule.matcher.terms, *rule.matcher.also, *rule.matcher.unless):
            expected = plain_first_hit(term.regex, fields)
            got = term.first_hit(text)
            assert _hit(got) == _hit(expected), term


def _hit(hit: tuple[str, re.Match[str]] | None) -> tuple[str, tuple[int, int], str] | None:
    return None if hit is None else (hit[0], hit[1].span(), hit[1].group(0))


# --- generated mail -----------------------------------------------------------------------

FILLER = [
    "Hi team, thanks for looking at this.",
    "We deployed version 4.12.3 of the frontend yesterday afternoon.",
    "I have attached the relevant part of the logs below in case it helps.",
    "Our org is called dwp-benefits and the space is production.",
    "Nothing else has changed in our configuration since the start of the month.",
    "Please let me know if you need any further information from our side.",
    "The apps use the Python buildpack with gunicorn and four instances each.",
    "Kind regards, Sam from the digital service team.",
    "The traffic pattern today looks similar to the same day last week.",
    *["in", "in our", "the", "is", "our app", "down", "log", "service", "error", "x", "a"],
]

# Text that the default rulebook's patterns are written to find.
PATTERN_TEXT = """
we have been hacked
were compromised
leaked our api key
tokens were exposed
under attack
experiencing a DDoS
our main website is down
the api has gone down
is the platform down
are the gorouter having issues
if the app goes down
will there be an outage
is the 503
error rate is up
error-rates doubled
spike in 5xx
elevated levels of errors
CVE-2024-3094
our postgres is down
the redis instance is unreachable
log drain stopped working
10x slower
response times have doubled
3 times slower
""".strip().splitlines()


def _vocabulary(book: Rulebook) -> list[str]:
    words: set[str] = set()
    for rule in book.rules:
        words.update(rule.words, rule.also_words, rule.unless_words)
        for example in rule.examples:
            words.update(s for s in (example.subject, example.body) if s)
    return sorted(words)


def _listed(text: str) -> list[str]:
    """Entries separated by "|" or line breaks."""
    return text.strip().replace("\n", "|").split("|")


def _exotic(text: str) -> str:
    """Letters that case-insensitive matching takes for ASCII ones: K, ſ, ı, İ."""
    return text.replace("k", "\u212a").replace("s", "\u017f").replace("i", "\u0131")


VARIATIONS: list[Callable[[str], str]] = [
    lambda t: t,
    lambda t: t,
    str.upper,
    str.title,
    str.swapcase,
    lambda t: t.replace("'", "\u2019"),
    lambda t: t.replace("'", ""),
    lambda t: t.replace(" ", "-"),
    lambda t: t.replace(" ", "\n  "),
    lambda t: t.replace(" ", "\u00a0"),
    lambda t: t.replace(" ", " - "),
    _exotic,
    lambda t: t.replace("I", "\u0130").replace("i", "\u0130"),
    lambda t: "x" + t,
    lambda t: t + "s",
    lambda t: " ".join([t] * 30),
]
SEPARATORS = [" ", " ", " ", "", "\n", ". ", ", ", " - ", "\n\n", "'", "_", "é"]


def texts(vocabulary: Sequence[str], most: int) -> st.SearchStrategy[str]:
    """Text made of vocabulary and filler, varied in case, spacing, apostrophes and letters."""
    chunk = st.tuples(
        st.sampled_from([*vocabulary, *FILLER]),
        st.sampled_from(range(len(VARIATIONS))),
        st.sampled_from(SEPARATORS),
    )
    return st.lists(chunk, max_size=most).map(
        lambda parts: "".join(VARIATIONS[v](t) + sep for t, v, sep in parts)
    )


SENDERS = [
    "dev@service.example.gov.uk",
    "Alerts <ALERTS@monitor.example.com>",
    "dev@digital.justice.gov.uk",
    "dev@notjustice.gov.uk",
    "",
    "not an address",
]
HEADERS: list[dict[str, str]] = [
    {},
    {"X-Priority": "1 (Highest)"},
    {"x-priority": "3"},
    {"Importance": "high", "X-PRIORITY": "1"},
]


def reports(vocabulary: Sequence[str]) -> st.SearchStrategy[Report]:
    return st.builds(
        Report,
        mailbox=st.sampled_from(Mailbox),
        sender=st.sampled_from(SENDERS),
        subject=texts(vocabulary, 4),
        body=texts(vocabulary, 24),
        headers=st.sampled_from(HEADERS),
    )


DEFAULT_VOCABULARY = [*_vocabulary(BOOK), *PATTERN_TEXT]


# --- a rulebook of awkward words and patterns ---------------------------------------------


def _rule(rule_id: str, priority: str, **conditions: Any) -> dict[str, Any]:
    examples = [{"subject": "x", "expect": priority}, {"subject": "y", "expect": priority}]
    return {"id": rule_id, "priority": priority, "reason": rule_id, "examples": examples} | (
        conditions
    )


# One word or pattern a line: non-ASCII letters, apostrophes, punctuation, single letters.
ODD_WORDS = """
café down
won't load
'til now
c++ build
.net app
requirements.txt
naïve fix
5xx
log in
o'brien's app
straße
ÉCOLE
x
in our code
ks
i
snake_case
e.g.
a - b
""".strip().splitlines()
# Anchors, inline flags, classes, repeats, and syntax only RE2 has (Unicode classes, POSIX
# classes, \Q…\E quoting, \x{…}, ungreedy mode), which the analysis must not misread.
ODD_PATTERNS = r"""
^urgent\b
(?m)^p1\b
down$
\bcaf\x{e9}\b
(?i:DOWN)\s+again
(?-i:Down)time
\b[A-Z]{3}-\d+\b
\pL+ \pL+\b
[[:alpha:]]+ app\b
\Bing\b
(?:very\s+)+slow
\Qc++\E build
\b(?:5\d\d|50[0-4])s?\b
k8s|kubernetes
\s-\s
(?U)cf\s+push
colou?r
[\s\-]+down
\btimes?\s+out\b
(?:a|ab)c
x{2,}
(?s)start.*end
\bin\s+our\s+\w+
(?:the|a)\s
ſtraße|strasse
\A\s*help
\bdown\b
\bing
\bdown\B
\Bload\b
^sign\s+in$
[^[:space:]]{2}outage
\p{Greek}+ down
""".strip().splitlines()

AWKWARD_RULES = [
    _rule("odd-words", "P1", words=ODD_WORDS, unless_words=["not a problem"]),
    _rule("odd-patterns", "P2", patterns=ODD_PATTERNS),
    _rule(
        "sender",
        "P1",
        words=["down"],
        senders=["alerts@monitor.example.com"],
        sender_domains=["justice.gov.uk"],
    ),
    _rule("headers", "P2", headers={"X-Priority": r"^1\b"}, words=["help"]),
    _rule(
        "also",
        "P1",
        words=["cf push fails", "push fails", "in our code"],
        also_words=["hotfix", "hot fix", "urgent", "i"],
        unless_words=["in my own code"],
        unless_patterns=[r"\btest(ing)?\b", r"(?i)NOT\s+urgent"],
    ),
    _rule("mailbox", "P3", words=["slow", "a"], mailboxes=["support"], unless_words=["slow down"]),
]
AWKWARD = Rulebook.model_validate(
    {
        "hours": BOOK.hours,
        "priority": BOOK.priorities,
        "mailbox": BOOK.mailboxes,
        "rule": AWKWARD_RULES,
    }
)
AWKWARD_VOCABULARY = _vocabulary(AWKWARD) + _listed(
    """
CAFÉ DOWN|cafe|wont load|til now|obriens app|STRASSE|école|urgent|p1|Downtime|downtime
ABC-123|the the|our app|testing|very very slow|outage|502s|504|k8s|kubernetes|cf push|color
colour|times out|abc|ac|xxx|start|end|help|hotfix|test|slow down|ſtraße|down again|sing
in our codex|e.g|eg|a-b|naive fix|not urgent|download|unload|sign in
"""
)


# --- tests --------------------------------------------------------------------------------

EXAMPLES = [
    pytest.param(
        Report(
            mailbox=example.mailbox,
            sender=example.sender,
            subject=example.subject,
            body=example.body,
            headers=example.headers,
        ),
        id=f"{rule.id}-{number}",
    )
    for rule in BOOK.rules
    for number, example in enumerate(rule.examples, start=1)
]


@pytest.mark.parametrize("report", EXAMPLES)
def test_default_rulebook_examples_decide_as_the_reference(report: Report) -> None:
    """Each example in the shipped rulebook: same verdict, reasons and per-rule outcomes."""
    assert_same_decisions(report, BOOK)
    assert_same_hits(report, BOOK)


@settings(deadline=None, max_examples=200, database=None)
@given(reports(DEFAULT_VOCABULARY))
def test_generated_mail_decides_as_the_reference(report: Report) -> None:
    """Mail built from the rulebook's own words and filler: same decisions as the reference."""
    assert_same_decisions(report, BOOK)


@settings(deadline=None, max_examples=200, database=None)
@given(reports(AWKWARD_VOCABULARY))
def test_awkward_rules_decide_as_the_reference(report: Report) -> None:
    """Odd words, anchors, flags, lookarounds and back-references: same decisions and hits."""
    assert_same_decisions(report, AWKWARD)
    assert_same_hits(report, AWKWARD)


@pytest.mark.parametrize(
    ("subject", "body"),
    [
        ("", "in our codex " * 40 + "in our code"),
        ("in our codex " * 40, "xin our code " * 30 + " in our code."),
        ("", "the " * 60 + "the redis instance is unreachable"),
        ("", "is " * 50 + "is the platform down?"),
        ("", "our " * 40 + "our main website is down"),
        ("THE REDIS " * 30, "ðe redis is down and the redis is down"),
        ("aa b", "ththe x, 5055 503, ingsing ing"),
    ],
)
def test_many_near_misses_before_the_match(subject: str, body: str) -> None:
    """Texts with more candidate positions than are tried one by one still find the match."""
    for book in (BOOK, AWKWARD):
        report = Report(mailbox=S, sender="dev@justice.gov.uk", subject=subject, body=body)
        assert_same_decisions(report, book)
        assert_same_hits(report, book)


def test_evidence_names_the_first_listed_word_that_matched() -> None:
    """Evidence follows the rule's list order, not the order of the words in the text."""
    report = Report(
        mailbox=E,
        sender="",
        subject="cf login hangs",
        body="Then the api is down.",
    )
    verdict = classify(report, BOOK)
    expected = 'matched "the api is down" in body, "cf login hangs" in subject'
    assert verdict.reasons[1] == f"rule 'api-down' {expected}"
    assert verdict.reasons == plain_classify(report, BOOK)[2]


# --- the facts the matcher relies on ------------------------------------------------------

ASCII_LOWER = {chr(c): chr(c).lower() for c in range(128)}


def test_key_agrees_with_case_insensitive_matching_for_every_character() -> None:
    """`key` keeps length, word runs, whitespace and hyphens, for all of Unicode; and whatever
    a case-insensitive expression matches against an ASCII character keys to its lower case."""
    everything = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    keyed = key(everything)
    assert len(keyed) == len(everything)
    for shape in (r"\w+", r"\s+", "-+", "'+"):
        assert [m.span() for m in re.finditer(shape, keyed)] == [
            m.span() for m in re.finditer(shape, everything)
        ], shape
    for char, lower in ASCII_LOWER.items():
        for found in re.finditer(re.escape(char), everything, re.IGNORECASE):
            assert keyed[found.start()] == lower, (char, found.group())
    # The separators of a phrase are what str.split() splits on (see `squeeze`).
    assert re.findall(r"\s", everything) == [c for c in everything if c.isspace()]


@settings(deadline=None, max_examples=200, database=None)
@given(texts(DEFAULT_VOCABULARY + AWKWARD_VOCABULARY, 12))
def test_word_runs_and_squeeze(text: str) -> None:
    """Word runs are `\\w+` (ASCII shortcut included); squeeze makes separators one space."""
    keyed = key(text)
    assert word_runs(keyed) == frozenset(re.findall(r"\w+", keyed))
    assert squeeze(keyed) == re.sub(r"[\s\-]+", " ", keyed).strip()


def test_requirements_of_words_and_patterns() -> None:
    """What the matcher may assume about matches, on a few readable cases."""
    cant = requirements(compile_word("can't log in"))
    assert cant.runs == {"log", "in"}
    assert cant.starts == {"can't", "cant"}
    assert squeezed_forms("can't log-in") == {"can't log in", "cant log in"}
    attack = requirements(re.compile(r"\bunder\s+attack\b", re.I))
    assert attack.runs == {"under", "attack"}
    assert attack.starts == {"under"}
    db = requirements(re.compile(r"\b(?:db|redis|log\s+drain|logging)s?\s+down", re.I))
    assert db.runs == frozenset()
    assert db.starts == {"db", "redis", "log"}
    assert frozenset({"down"}) in db.clauses
    # Under re.ASCII a word boundary is elsewhere: no runs are claimed.
    assert requirements(re.compile(r"(?a)\bcafe\b", re.I)).runs == frozenset()
    # Nothing known: every search is made.
    assert requirements(re.compile(r"\w+\s+\d", re.I)).starts == frozenset()
    assert squeezed_forms("café down") == frozenset()


def test_term_search_finds_the_leftmost_match() -> None:
    """A term's first hit is the expression's first match, whatever its candidate starts."""
    term = Term(re.compile(r"\b(?:ab|abc|b)c\b", re.I))
    text = PreparedReport(Report(mailbox=E, sender="", subject="", body="xabc abcc ABC bc"))
    hit = term.first_hit(text)
    assert hit is not None
    assert (hit[0], hit[1].span()) == ("body", (5, 9))
