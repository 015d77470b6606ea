"""Attack figures for sender authentication and rulebook patterns (docs/reliability.md,
"Authentication and rule-engine attacks").

For each attack family it counts attempts and how each ended:

- refused: the attack achieved nothing (a forged mail is not trusted, so it becomes an
  "unverified sender" ticket; a dangerous pattern is refused by the rulebook check);
- accepted-harmless: accepted, but without the harm (a pattern that runs in linear time);
- harmful: the harm happened (a forged mail trusted, so it pages; a triage that ran past
  `--budget-s` seconds, so the daemon turned an authenticated report into an "unreadable" P4).

It uses only the long-standing entry points (`judge_email` in `gateway.plan.trust`,
`dkim_verifier` in `gateway.parse.dkim_check`, `parse_mail` in `gateway.parse.mail`,
`rules.book.load_rulebook`, `rules.engine.triage`), found in the flat layout of older trees
too, so the same script runs against older code for the "before" column:

    .venv/bin/python bench/auth_attacks.py                      # this tree
    PYTHONPATH=/path/to/old/tree .venv/bin/python bench/auth_attacks.py   # another tree

Each pattern attack runs in a child process that times the triage alone; one still running
after `--kill-s` seconds is killed (and counted as harmful), so a catastrophic pattern
cannot hang the script.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MTA = "mx.gw.example"


def email(subject: str = "Our site is down", sender: str = "alice@tenant.example") -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Alice Tenant <{sender}>"
    msg["To"] = "emergency@localhost"
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="tenant.example")
    msg.set_content("All our apps return 502 since 09:50.")
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def ar(value: str, raw: bytes | None = None) -> bytes:
    return f"Authentication-Results: {value}\r\n".encode() + (raw or email())


def two_froms() -> bytes:
    raw = email(sender="mallory@attacker.example")
    return raw.replace(b"From: ", b"From: alice@tenant.example\r\nFrom: ", 1)


def mta_attacks() -> list[tuple[str, bytes]]:
    """Forged mail in a tenant's name, as a trusted MTA would stamp it."""
    return [
        (
            "quoted ';' hides dmarc=pass (1)",
            ar(
                f'{MTA}; spf=pass smtp.mailfrom="x;dmarc=pass ."@attacker.example; '
                "dmarc=fail header.from=tenant.example"
            ),
        ),
        (
            "quoted ';' hides dkim=pass (2)",
            ar(
                f'{MTA}; spf=fail smtp.mailfrom="a;dkim=pass header.d=tenant.example;"'
                "@attacker.example"
            ),
        ),
        (
            "quoted ';' hides dmarc=pass (3)",
            ar(
                f'{MTA}; spf=neutral smtp.mailfrom="q;dmarc=pass header.from=tenant.example"'
                "@evil.example; dmarc=fail (p=reject) header.from=tenant.example"
            ),
        ),
        ("dmarc=pass without header.from, two From", ar(f"{MTA}; dmarc=pass", two_froms())),
        (
            "dmarc=pass for the other From, two From",
            ar(f"{MTA}; dmarc=pass header.from=attacker.example", two_froms()),
        ),
        ("dmarc=pass for another domain", ar(f"{MTA}; dmarc=pass header.from=attacker.example")),
        (
            "dkim=pass by a public suffix (github.io)",
            ar(f"{MTA}; dkim=pass header.d=github.io", email(sender="alice@tenant.github.io")),
        ),
        (
            "spf=pass by a public suffix (github.io)",
            ar(
                f"{MTA}; spf=pass smtp.mailfrom=x@github.io", email(sender="alice@tenant.github.io")
            ),
        ),
    ]


def dkim_attacks() -> list[tuple[str, bytes]]:
    """A genuine signed tenant mail, replayed with unsigned additions."""
    import dkim  # noqa: PLC0415

    private = subprocess.run(
        ["openssl", "genrsa", "-traditional", "2048"], check=True, capture_output=True
    ).stdout
    public = subprocess.run(
        ["openssl", "rsa", "-pubout", "-outform", "DER"],
        input=private,
        check=True,
        capture_output=True,
    ).stdout
    dkim_attacks.record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)  # type: ignore[attr-defined]

    def sign(headers: list[bytes], length: bool = False) -> bytes:
        raw = email(subject="Weekly usage report")
        return (
            dkim.sign(
                raw, b"s1", b"tenant.example", private, include_headers=headers, length=length
            )
            + raw
        )

    base = sign([b"from", b"to", b"subject", b"message-id"])
    cut = base.index(b"From: ")
    no_subject = sign([b"from", b"to", b"message-id"])
    cut2 = no_subject.index(b"Subject: ")
    return [
        (
            "unsigned Subject above the signed one",
            base[:cut] + b"Subject: URGENT: all sites down\r\n" + base[cut:],
        ),
        (
            "Subject not signed, rewritten",
            no_subject[:cut2]
            + b"Subject: URGENT: all sites down\r\n"
            + no_subject[no_subject.index(b"\r\n", cut2) + 2 :],
        ),
        (
            "l= signature, text appended",
            sign([b"from", b"subject"], length=True) + b"Page the on-call now.\r\n",
        ),
    ]


def mta_replays(dkim_raws: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The same replays behind a trusted MTA that (rightly) reports the signature valid."""
    stamp = f"{MTA}; dkim=pass header.d=tenant.example; spf=fail smtp.mailfrom=x@evil.example"
    dmarc = f"{MTA}; dmarc=pass header.from=tenant.example"
    out = []
    for label, raw in dkim_raws[:2]:
        out.append((f"{label}, MTA says dkim=pass", ar(stamp, raw)))
        out.append((f"{label}, MTA says dmarc=pass", ar(dmarc, raw)))
    return out


def judge(raw: bytes, dkim_mode: bool) -> bool:
    """Would this mail page on its own (trusted)?"""
    try:
        from gateway.parse.mail import parse_mail  # noqa: PLC0415
        from gateway.plan.trust import TrustPolicy, judge_email  # noqa: PLC0415
    except ImportError:  # an older tree, before the package layout
        from gateway.mail import parse_mail  # type: ignore[no-redef]  # noqa: PLC0415
        from gateway.trust import TrustPolicy, judge_email  # type: ignore[no-redef]  # noqa: PLC0415

    domains = frozenset({"tenant.example", "tenant.github.io"})
    if dkim_mode:
        try:
            from gateway.parse.dkim_check import dkim_verifier  # noqa: PLC0415
        except ImportError:  # an older tree, before the package layout
            from gateway.dkim_check import dkim_verifier  # type: ignore[no-redef]  # noqa: PLC0415

        record = dkim_attacks.record  # type: ignore[attr-defined]
        policy = TrustPolicy(allow_domains=domains, dkim=dkim_verifier(lambda name: record))
    else:
        policy = TrustPolicy(authserv_id=MTA, allow_domains=domains)
    mail = parse_mail(raw, "alice@tenant.example")
    return judge_email(raw, mail.from_addr, policy).trusted


# --- rulebook patterns ----------------------------------------------------------------------

EVIL_PATTERNS = [
    (r"^(\w+\s?)+$", "a" * 40 + "!"),
    (r"(a+)+$", "a" * 40 + "!"),
    (r"(a|aa)+$", "a" * 60 + "!"),
    (r"(\w|\d)+z", "z " + "1" * 40 + "!"),
    (r"(x+x+)+y", "y " + "x" * 40),
    (r"^(([a-z])+.)+[A-Z]([a-z])+$", "a" * 40 + "!"),
    (r"(\s*\w+\s*)+:", ": " + "word " * 30 + "!"),
    (r"(a*)*\1b", "b " + "a" * 40),
]

RULEBOOK = """
[[rule]]
id = "evil"
priority = "P1"
reason = "a pattern under test"
patterns = [{pattern}]
examples = [
  {{ subject = "s", body = {body}, expect = "P1" }},
  {{ subject = "s", body = "nothing here", expect = "P4" }},
]
"""


def _pattern_child(pattern: str, body: str) -> str:
    """In a child process: load a rulebook with the pattern and triage the evil text."""
    from datetime import UTC, datetime  # noqa: PLC0415

    from rules.book import default_rulebook_text, load_rulebook  # noqa: PLC0415
    from rules.engine import triage  # noqa: PLC0415
    from rules.types import Mailbox, Report  # noqa: PLC0415

    text = default_rulebook_text() + RULEBOOK.format(
        pattern=json.dumps(pattern), body=json.dumps(body)
    )
    try:
        book = load_rulebook(text)
    except ValueError:
        return "refused"
    report = Report(mailbox=Mailbox.SUPPORT, sender="a@tenant.example", subject=body, body=body)
    started = time.perf_counter()
    triage(report, datetime(2026, 11, 24, 10, tzinfo=UTC), book)
    return f"done {time.perf_counter() - started:.3f}"


def pattern_outcome(pattern: str, body: str, budget_s: float, kill_s: float) -> str:
    """How one pattern fared: the child times the triage alone (not its own start-up)."""
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--child", pattern, body],
            capture_output=True,
            text=True,
            timeout=kill_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "harmful"
    if out.returncode != 0:
        return f"error: {out.stderr.strip().splitlines()[-1:]}"
    words = out.stdout.split()
    if words == ["refused"]:
        return "refused"
    return "harmful" if float(words[-1]) > budget_s else "accepted-harmless"


def _table(name: str, outcomes: list[tuple[str, str]]) -> None:
    counts = {
        k: sum(1 for _, o in outcomes if o == k)
        for k in ("refused", "accepted-harmless", "harmful")
    }
    print(
        f"\n{name}: attempts {len(outcomes)}, refused {counts['refused']}, "
        f"accepted-harmless {counts['accepted-harmless']}, harmful {counts['harmful']}"
    )
    for label, outcome in outcomes:
        print(f"  {outcome:18} {label}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget-s", type=float, default=2.0)
    parser.add_argument("--kill-s", type=float, default=20.0)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(_pattern_child(*args.child))
        return
    verdict: Callable[[bool], str] = lambda trusted: "harmful" if trusted else "refused"  # noqa: E731
    _table(
        "17.7 forged Authentication-Results (trusted MTA)",
        [(label, verdict(judge(raw, False))) for label, raw in mta_attacks()],
    )
    replays = dkim_attacks()
    _table(
        "17.7 replayed DKIM-signed mail (verify_dkim)",
        [(label, verdict(judge(raw, True))) for label, raw in replays],
    )
    _table(
        "17.7 replayed DKIM-signed mail (trusted MTA)",
        [(label, verdict(judge(raw, False))) for label, raw in mta_replays(replays)],
    )
    _table(
        "17.8 catastrophic rulebook patterns",
        [
            (pattern, pattern_outcome(pattern, body, args.budget_s, args.kill_s))
            for pattern, body in EVIL_PATTERNS
        ],
    )


if __name__ == "__main__":
    main()
