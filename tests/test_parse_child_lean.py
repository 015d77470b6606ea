"""The parse child runs on the rulebook's compiled form: it never imports pydantic,
pydantic_core or `holidays`, and it triages every report exactly as the daemon's validated
rulebook does in-process (same priority, rule, page, deadlines and reasons)."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from pathlib import Path

from gateway.parse.child import MailJob, Prepared, prepare
from gateway.parse.sandbox import ParseSandbox
from rules.book import Rulebook, default_rulebook, load_rulebook
from rules.compiled import CompiledRulebook
from rules.engine import check_examples
from rules.hours_config import Hours
from rules.support_hours import ClockHours
from rules.types import Mailbox
from tests.conftest import IN_HOURS, OVERNIGHT, email_bytes
from tests.test_lean_start import _modules_after

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("pydantic", "pydantic_core", "holidays")

# The default rules plus one that uses every kind of condition the child compiles itself:
# words, an RE2 pattern, a header pattern, an exception word and an out-of-hours class.
EXTENDED = load_rulebook(
    r"""
extends = "default"

[[rule]]
id = "payments-outage"
priority = "P1"
reason = "the payments service of a gold-tier tenant is failing"
ooh_class = "live_app_p1"
words = ["payments failing"]
patterns = ['\bPAY-\d{4}\b']
headers = { "X-Service-Tier" = '^gold$' }
unless_words = ["staging"]
examples = [
  { subject = "payments failing", headers = { "X-Service-Tier" = "gold" }, expect = "P1" },
  { subject = "error PAY-1234", headers = { "X-Service-Tier" = "gold" }, expect = "P1" },
]
"""
)
CHRISTMAS = datetime(datetime.now(UTC).year, 12, 25, 10, tzinfo=UTC)


def _jobs() -> list[MailJob]:
    """Reports that reach each kind of decision: rules, defaults, exceptions, automatic."""
    tenant = "alice@tenant.example"
    mails = [
        email_bytes(),
        email_bytes(subject="Question about billing", body="How do invoices work?"),
        email_bytes(subject="Leaked key", body="We think an access key of ours leaked."),
        email_bytes(subject="payments failing", body="Checkout is down.", X_Service_Tier="gold"),
        email_bytes(subject="Errors", body="We see PAY-4021 everywhere.", X_Service_Tier="gold"),
        email_bytes(subject="payments failing", body="Only on staging.", X_Service_Tier="gold"),
        email_bytes(subject="payments failing", body="Checkout is down.", X_Service_Tier="tin"),
        email_bytes(subject="Out of office", Auto_Submitted="auto-replied"),
    ]
    jobs = [MailJob(raw, tenant, Mailbox.EMERGENCY) for raw in mails]
    return [*jobs, MailJob(mails[1], tenant, Mailbox.SUPPORT)]


def test_importing_the_parse_child_loads_no_pydantic_nor_holidays() -> None:
    """`import gateway.parse.child` in a fresh interpreter loads neither pydantic,
    pydantic_core nor `holidays`."""
    found = _modules_after(
        "import json, sys, gateway.parse.child\n"
        f"print(json.dumps({{'loaded': [m for m in {HEAVY!r} if m in sys.modules]}}))"
    )
    assert found == {"loaded": []}


def test_the_compiled_rulebook_triages_in_a_fresh_interpreter_without_pydantic() -> None:
    """The compiled rulebook, pickled as the sandbox sends it, unpickles and triages in a
    fresh interpreter (a bank holiday included) to the same decisions as the validated
    rulebook here, and that interpreter never loads pydantic, pydantic_core or `holidays`."""
    jobs = _jobs()
    here = [prepare(job, CHRISTMAS, EXTENDED).decision for job in jobs]
    code = (
        "import json, pickle, sys\n"
        "from gateway.parse import child\n"
        "book, jobs, now = pickle.loads(sys.stdin.buffer.read())\n"
        "child.warm(book)\n"
        "made = [child.prepare(job, now, book).decision for job in jobs]\n"
        "print(json.dumps({'made': pickle.dumps(made).hex(),\n"
        f"    'loaded': [m for m in {HEAVY!r} if m in sys.modules]}}))"
    )
    there = _modules_after(code, pickle.dumps((EXTENDED.compiled, jobs, CHRISTMAS)))
    assert there["loaded"] == []
    assert pickle.loads(bytes.fromhex(there["made"])) == here
    assert all(d is not None for d in here)


def _child_maps(sandbox: ParseSandbox) -> set[str]:
    """The files (shared objects) the sandbox's running child has mapped (Linux /proc)."""
    assert sandbox._proc is not None
    lines = Path(f"/proc/{sandbox._proc.pid}/maps").read_text().splitlines()
    return {line.split()[-1] for line in lines if line.endswith(".so") or ".so." in line}


async def _through_sandbox(book: Rulebook, now: datetime) -> tuple[list[Prepared], set[str]]:
    """The jobs prepared by the child the sandbox starts, and that child's mapped files."""
    sandbox = ParseSandbox(book)
    try:
        results = await sandbox.prepare_all(_jobs(), now)
        maps = _child_maps(sandbox)
    finally:
        await sandbox.close()
    return results, maps


async def test_the_sandbox_child_decides_as_the_validated_rulebook_does() -> None:
    """Started as the daemon starts it, the child triages each report (default rulebook,
    and one with header, pattern and exception conditions; in hours and overnight) to the
    same decision as in-process triage with the validated Rulebook, and never loads
    pydantic_core's extension."""
    for book in (default_rulebook(), EXTENDED):
        for now in (IN_HOURS, OVERNIGHT):
            results, maps = await _through_sandbox(book, now)
            assert any("_re2" in path for path in maps)  # the maps were read: RE2 is there
            assert [path for path in maps if "pydantic_core" in path] == []
            here = [prepare(job, now, book) for job in _jobs()]
            assert [r.problem for r in results] == [None] * len(here)
            assert [r.decision for r in results] == [h.decision for h in here]
    decisions = [prepare(job, IN_HOURS, EXTENDED).decision for job in _jobs()]
    rules = [d.rule if d else None for d in decisions]
    assert rules[3] == rules[4] == "payments-outage"  # words, pattern, header
    assert "payments-outage" not in rules[5:7]  # set aside by "staging"; wrong tier
    assert decisions[7] is not None and decisions[7].ignored is not None


def test_the_compiled_form_is_derived_from_the_validated_rulebook() -> None:
    """Every rule, priority and mailbox default of the compiled form is the validated
    rulebook's, a compiled rulebook gives itself as its compiled form, and the examples
    (checked with the validated rulebook) still pass."""
    book = EXTENDED
    assert check_examples(book) == []
    compiled = book.compiled
    assert isinstance(compiled, CompiledRulebook) and compiled.compiled is compiled
    assert [r.id for r in compiled.rules] == [r.id for r in book.rules]
    custom = compiled.rules[-1]
    assert custom.headers == (("X-Service-Tier", "^gold$"),)
    assert custom.unless_words == ("staging",) and custom.patterns == (r"\bPAY-\d{4}\b",)
    for priority, terms in compiled.priorities.items():
        policy = book.priorities.get(priority)
        assert (terms.page, terms.clock) == (policy.page, policy.clock)
        assert terms.respond.minutes == policy.respond.minutes
        assert terms.update.business_days == policy.update.business_days
    for mailbox, default in compiled.mailboxes.items():
        assert default.priority is book.mailboxes.get(mailbox).priority
    assert compiled.clock is book.clock


def test_default_hours_are_the_same_in_both_forms() -> None:
    """The plain hours' defaults are the validated `[hours]` defaults (GOV.UK PaaS)."""
    assert Hours().compiled() == ClockHours()
