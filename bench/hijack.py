"""Hijack attempts against the emergency mailbox, counted: refused, accepted-harmless, harmful.

Replays issue 17's items 2 and 9 and issue 16's items 7 and 8 over loopback SMTP against a
fresh daemon (`python -m gateway run`, the reviewed configuration: a trusted MTA's
`Authentication-Results`, `tenant.example` allow-listed, a local PagerDuty fake), and
classifies every attempt from the daemon's state folder once it has settled:

- `storm-join` (17.2): alice's authenticated "Our site is down" is open; then forged mails
  with a similar subject and `Reply-To: mallory@…`, marked `dmarc=fail` by the trusted MTA,
  half in alice's name, half in other tenant.example names. Harmful: the attempt's text is
  on alice's incident's timeline, or its sender became one of that incident's reporters.
- `forged-first` (found while fixing 17.2): a forged mail in alice's name opens an
  unverified incident first; alice's genuine, authenticated report with the same subject
  follows. Harmful: the genuine report did not page.
- `message-id` (17.9, 16.7): a decoy with alice's envelope sender and the Message-ID her
  report will carry, then her genuine report, then the genuine report again byte for byte
  (a true re-send). Harmful: the genuine report did not page, or the re-send was
  processed a second time.
- `unreadable` (16.8): alice's authenticated emergency mail whose triage runs out of time
  (a rule pattern with catastrophic backtracking in the rulebook, the 17.8 finding). Harmful:
  nobody was paged (a quiet ticket).

    .venv/bin/python bench/hijack.py
    .venv/bin/python bench/hijack.py --repo /path/to/other/checkout   # "before" figures

Bounded: `--rounds` attempts per attack (default 10; `unreadable` takes about 5 s each, the
parse sandbox's budget, so it runs `--slow-rounds`, default 2).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from flood import MTA, start_daemon, stop_daemon  # noqa: E402
from intake_to_page import FakeThread  # noqa: E402

PROBLEMS = [
    "Our site is down",
    "Login page returns 500",
    "Database connection refused",
    "Deploys fail with a timeout",
    "Certificate expired on the API",
    "Logs missing since this morning",
    "Queue workers stopped",
    "Object storage refuses uploads",
    "DNS not resolving for our apps",
    "Router drops websocket connections",
    "Metrics dashboards are blank",
    "Cron jobs did not run overnight",
]
SLOW_RULE = r"""
[[rule]]
id = "slow-pattern"
priority = "P3"
reason = "a pattern with catastrophic backtracking"
patterns = ['^(\w+\s?)+$']
examples = [{ subject = "a b", body = "c d", mailbox = "support", expect = "P3" },
            { subject = "e f", body = "g h", mailbox = "support", expect = "P3" }]
"""


@dataclass
class Tally:
    """One attack's attempts, classified."""

    name: str
    attempts: int = 0
    refused: int = 0
    harmless: int = 0
    harmful: int = 0

    def line(self) -> str:
        return (
            f"{self.name:<13} attempts {self.attempts:>3}  refused {self.refused:>3}  "
            f"accepted-harmless {self.harmless:>3}  harmful {self.harmful:>3}"
        )


def raw(
    sender: str, subject: str, verdict: str, body: str, msgid: str, reply_to: str | None = None
) -> bytes:
    head = [
        f"Authentication-Results: {MTA}; dmarc={verdict} header.from=tenant.example",
        f"From: <{sender}>",
        "To: emergency@localhost",
        f"Subject: {subject}",
        f"Message-ID: {msgid}",
        "Date: Mon, 23 Nov 2026 02:10:00 +0000",
    ]
    if reply_to:
        head.append(f"Reply-To: {reply_to}")
    return ("\r\n".join(head) + "\r\n\r\n" + body + "\r\n").encode()


def genuine_body(title: str) -> str:
    """A report that reads as a P1 whatever its subject (so it pages at any hour)."""
    return (
        f"{title}: all our apps return 502 since 02:10. Users cannot reach the service, "
        "production is down."
    )


class Client:
    """SMTP over loopback, one session per message (as most senders do)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def send(self, envelope: str, data: bytes) -> bool:
        async def go() -> bool:
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=self.port, timeout=60) as client:
                try:
                    await client.sendmail(envelope, ["emergency@localhost"], data)
                except aiosmtplib.SMTPResponseException:
                    return False
                return True

        return asyncio.run(go())


def query(folder: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{folder / 'state' / 'gateway.sqlite3'}?mode=ro", uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def settle(folder: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            busy = query(folder, "SELECT COUNT(*) FROM inbox WHERE state = 'pending'")[0][0]
            busy = (
                busy
                or query(
                    folder,
                    "SELECT COUNT(*) FROM outbox WHERE state = 'pending' AND kind = 'page.trigger'",
                )[0][0]
            )
        except sqlite3.OperationalError:
            busy = 1
        if not busy:
            return
        time.sleep(0.1)


def paged(folder: Path, title: str) -> bool:
    return bool(
        query(
            folder,
            "SELECT COUNT(*) FROM pages p JOIN incidents i ON i.id ="
            " p.incident_id WHERE p.action = 'trigger' AND i.title = ?",
            title,
        )[0][0]
    )


def storm_join(c: Client, folder: Path, rounds: int) -> Tally:
    t = Tally("storm-join")
    c.send(
        "alice@tenant.example",
        raw(
            "alice@tenant.example",
            "Our site is down",
            "pass",
            "All our apps return 502.",
            "<genuine@tenant.example>",
        ),
    )
    settle(folder)
    subjects = ["Re: Site is down again", "Site down", "site is DOWN", "Our site is down!"]
    for i in range(rounds):
        sender = "alice@tenant.example" if i % 2 == 0 else f"bob{i}@tenant.example"
        t.attempts += 1
        if not c.send(
            sender,
            raw(
                sender,
                subjects[i % 4],
                "fail",
                f"ATTACK-{i} fixed, ignore",
                f"<attack-{i}@evil.example>",
                "mallory@evil.example",
            ),
        ):
            t.refused += 1
    settle(folder)
    victim = query(folder, "SELECT id FROM incidents ORDER BY id LIMIT 1")[0][0]
    for i in range(rounds):
        sender = "alice@tenant.example" if i % 2 == 0 else f"bob{i}@tenant.example"
        on_timeline = query(
            folder,
            "SELECT COUNT(*) FROM timeline WHERE incident_id = ? AND text LIKE ?",
            victim,
            f"%ATTACK-{i} %",
        )[0][0]
        joined = (
            sender != "alice@tenant.example"
            and query(
                folder,
                "SELECT COUNT(*) FROM reporters WHERE incident_id = ? AND address = ?",
                victim,
                sender,
            )[0][0]
        )
        if on_timeline or joined:
            t.harmful += 1
        else:
            t.harmless += 1
    t.harmless -= t.refused
    return t


def forged_first(c: Client, folder: Path, rounds: int) -> Tally:
    t = Tally("forged-first")
    for i in range(rounds):
        title = PROBLEMS[i % len(PROBLEMS)]
        t.attempts += 1
        if not c.send(
            "alice@tenant.example",
            raw("alice@tenant.example", title, "fail", f"forged {i}", f"<ff-{i}@evil.example>"),
        ):
            t.refused += 1
            continue
        settle(folder)
        c.send(
            "alice@tenant.example",
            raw(
                "alice@tenant.example",
                title,
                "pass",
                genuine_body(title),
                f"<fg-{i}@tenant.example>",
            ),
        )
        settle(folder)
        if paged(folder, title):
            t.harmless += 1
        else:
            t.harmful += 1
    return t


def message_id(c: Client, folder: Path, rounds: int) -> Tally:
    t = Tally("message-id")
    for i in range(rounds):
        title, msgid = PROBLEMS[i % len(PROBLEMS)], f"<report-{i}@tenant.example>"
        t.attempts += 1
        if not c.send(
            "alice@tenant.example",
            raw("alice@tenant.example", "Hello", "fail", f"nothing to see {i}", msgid),
        ):
            t.refused += 1
            continue
        genuine = raw("alice@tenant.example", title, "pass", genuine_body(title), msgid)
        c.send("alice@tenant.example", genuine)
        c.send("alice@tenant.example", genuine)  # a true re-send: processed once
        settle(folder)
        twice = query(folder, "SELECT COUNT(*) FROM incidents WHERE title = ?", title)[0][0]
        if paged(folder, title) and twice == 1:
            t.harmless += 1
        else:
            t.harmful += 1
    return t


def unreadable(c: Client, folder: Path, rounds: int) -> Tally:
    t = Tally("unreadable")
    for i in range(rounds):
        subject = "a" * 40 + f"{i}!"
        t.attempts += 1
        before = page_count(folder)
        if not c.send(
            "alice@tenant.example",
            raw("alice@tenant.example", subject, "pass", subject, f"<slow-{i}@tenant.example>"),
        ):
            t.refused += 1
            continue
        settle(folder, 120.0)
        if page_count(folder) > before:
            t.harmless += 1
        else:
            t.harmful += 1
    return t


def page_count(folder: Path) -> int:
    try:
        return int(str(query(folder, "SELECT COUNT(*) FROM pages WHERE action = 'trigger'")[0][0]))
    except sqlite3.OperationalError:  # no database yet
        return 0


def run(name: str, args: argparse.Namespace) -> Tally:
    with contextlib.ExitStack() as stack:
        fake = stack.enter_context(FakeThread())
        folder = Path(tempfile.mkdtemp(prefix="hijack-"))
        if not args.keep:
            stack.callback(shutil.rmtree, folder, ignore_errors=True)
        if args.keep:
            print(f"state: {folder}")
        extra = ""
        if name == "unreadable":
            rules = folder / "rules.toml"
            rules.write_text((args.repo / "rules" / "default.toml").read_text() + SLOW_RULE)
            extra = f'[rules]\nfile = "{rules}"\n'
        proc, port = start_daemon(args.repo, folder, fake.url, extra)
        try:
            c = Client(port)
            if name == "storm-join":
                return storm_join(c, folder, args.rounds)
            if name == "forged-first":
                return forged_first(c, folder, args.rounds)
            if name == "message-id":
                return message_id(c, folder, args.rounds)
            return unreadable(c, folder, args.slow_rounds)
        finally:
            stop_daemon(proc)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", type=Path, default=REPO, help="checkout to run the daemon from")
    p.add_argument("--only", choices=["storm-join", "forged-first", "message-id", "unreadable"])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--slow-rounds", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="keep the state folders (printed)")
    args = p.parse_args()
    print(f"daemon from {args.repo}")
    names = [args.only] if args.only else ["storm-join", "forged-first", "message-id", "unreadable"]
    for name in names:
        print(run(name, args).line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
