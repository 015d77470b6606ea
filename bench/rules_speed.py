"""Rule matching speed: microseconds per `classify` and per `triage` call on 2 KB messages.

What it measures: the wall time of `rules.engine.classify(report, book)` and of
`rules.engine.triage(report, now, book)` with the default rulebook, one call at a time, over
`--messages` realistic tenant reports of about `--size` bytes each (subject plus body).
Each body is a few sentences of the kind tenants write (some that trigger rules, some that
do not, some with typographic apostrophes), padded with ordinary prose to the size; the
messages are built from a fixed seed, so every run sees the same text. `triage` is called at
instants spread over in-hours, waking and overnight periods.

Method: the rulebook is loaded and every message classified once before timing (warm-up).
Then each message is timed individually with `time.perf_counter_ns()`, `--repeat` passes
over all the messages; mean, median and 95th percentile are reported over all the calls.

Run from the repository root, with the project's virtualenv:

    .venv/bin/python bench/rules_speed.py                      # 500 x 2 KB, 5 passes
    .venv/bin/python bench/rules_speed.py --dense              # worst case: rules fire all over
    .venv/bin/python bench/rules_speed.py --messages 200 --repeat 3 --size 4096

`--dense` pads the messages with the rulebook's own example texts instead of prose, so that
nearly every rule has something to find: a worst case rather than typical mail.

Figures from one 2-CPU machine (Python 3.11.7), per call, with
`.venv/bin/python bench/rules_speed.py` (the "before" row is the same script run against
the matcher that compiled every word to its own expression and searched for each one in
full; the dense "before" used `--dense --messages 200 --repeat 2`):

                          classify mean / median    triage mean / median
    before                  15581 / 15324 µs          16054 / 15621 µs
    after                     332 /   328 µs            375 /   368 µs
    before, --dense         17916 / 17691 µs          18060 / 17861 µs
    after, --dense            655 /   652 µs            715 /   710 µs

Absolute figures depend on the machine and on whatever else it is doing.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rules.book import default_rulebook
from rules.engine import classify, triage
from rules.types import Mailbox, Report

SUBJECTS = (
    "Service down",
    "Problem with our app",
    "cf push failing",
    "Question about custom domains",
    "Intermittent 502s on the frontend",
    "Slow responses since this morning",
    "Help needed",
    "Postgres connection errors",
    "Adding a new team member",
    "Re: CVE in the buildpack",
    "Can’t log in to the API",
    "Urgent: users can’t sign in",
)

# What tenants write about the problem itself.
TENANT_SENTENCES = (
    "Our service is down since 07:50, users get an error page on every request.",
    "All our apps return 503 Service Unavailable from the router.",
    "We can’t deploy since this morning: cf push fails with a staging error.",
    "The app is very slow sometimes around 9am, otherwise fine.",
    "We're seeing intermittent 502s, maybe one request in fifty.",
    "How do I set up a custom domain with the CDN route service?",
    "Can you add my colleague jane.doe@example.gov.uk to our org as a space developer?",
    "Our Postgres database is down: the app logs say connection refused.",
    "Is the platform affected by the new OpenSSL vulnerability announced today?",
    "Users can't log in to our live service since the certificate rotated at 20:00.",
    "The metrics dashboard is completely broken for our org, no impact on users.",
    "We need to get a security patch out tonight and cf push is failing with a timeout.",
    "There is a memory leak in our own code, how do we get a heap dump from an instance?",
    "Our error rate is up from 0.1% to 8% since 11:00 and it's mostly 502s.",
    "Some records are missing from our production database and the restore failed.",
    "We think someone has access to our production space who shouldn’t.",
    "Heads up - we're running a load test against our staging app tomorrow from 10:00.",
    "Response times have gone up tenfold since lunch and pages take 30 seconds to load.",
)

# Ordinary prose around it: context, steps taken, sign-offs.
FILLER_SENTENCES = (
    "Hi team, thanks for looking at this.",
    "We deployed version 4.12.3 of the frontend yesterday afternoon after the usual review.",
    "The release went through our pipeline without any warnings from the smoke tests.",
    "I have attached the relevant part of the logs below in case it helps you investigate.",
    "Our org is called dwp-benefits and the space is production, in the London region.",
    "The team has been checking the dashboards and the recent changes to the manifest.",
    "We rotated the database credentials last week as part of the scheduled routine.",
    "Nothing else has changed in our configuration since the start of the month.",
    "Please let me know if you need any further information from our side.",
    "Our product owner has asked us to keep users informed through the status page.",
    "We followed the steps in your documentation about routes and domains.",
    "The apps use the Python buildpack with gunicorn and four instances each.",
    "We also checked the network policies between the frontend and the API apps.",
    "The service team is available on the usual channel until six this evening.",
    "Kind regards, Sam from the digital service team at the department.",
    "I am copying in my colleague who looks after the infrastructure side of things.",
    "The traffic pattern today looks similar to the same day last week.",
    "We run a nightly job that exports reports to the bucket at around two in the morning.",
    "Our monitoring sends alerts to the team mailbox and to the on-call phone.",
    "The change request for next month's release was approved on Tuesday.",
)

LONDON = ZoneInfo("Europe/London")


def build_messages(
    count: int, size: int, seed: int, filler: Sequence[str] = FILLER_SENTENCES
) -> list[Report]:
    """`count` reports of about `size` bytes: a few tenant sentences, then filler prose."""
    rng = random.Random(seed)
    reports: list[Report] = []
    for _ in range(count):
        subject = rng.choice(SUBJECTS)
        sentences = rng.sample(TENANT_SENTENCES, rng.randint(1, 3))
        body = " ".join(sentences)
        while len((subject + body).encode()) < size:
            paragraph = " ".join(rng.sample(filler, 3))
            body += "\n\n" + paragraph
        body = body.encode()[: size - len(subject.encode())].decode(errors="ignore")
        mailbox = Mailbox.EMERGENCY if rng.random() < 0.3 else Mailbox.SUPPORT
        reports.append(
            Report(
                mailbox=mailbox,
                sender="dev@service.example.gov.uk",
                subject=subject,
                body=body,
                headers={"Message-ID": f"<{rng.getrandbits(64):x}@example.gov.uk>"},
            )
        )
    return reports


def instants(count: int, seed: int) -> list[datetime]:
    """`count` instants spread over a fortnight: in hours, waking and overnight."""
    rng = random.Random(seed)
    start = datetime(2025, 11, 17, 0, 0, tzinfo=LONDON)
    return [start + timedelta(minutes=rng.randrange(14 * 24 * 60)) for _ in range(count)]


def time_calls(call: Callable[[int], object], count: int, repeat: int) -> list[float]:
    """Microseconds taken by each of `repeat` passes of `call(i)` for i in range(count)."""
    samples: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(repeat):
        for i in range(count):
            started = clock()
            call(i)
            samples.append((clock() - started) / 1000)
    return samples


def summary(name: str, samples: Sequence[float]) -> str:
    """One line: mean, median and 95th percentile in microseconds."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return (
        f"{name:<9} mean {statistics.fmean(samples):9.1f} µs  "
        f"median {statistics.median(samples):9.1f} µs  p95 {p95:9.1f} µs  "
        f"({len(samples)} calls)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Build the messages, warm up, time classify and triage, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=500, help="messages (default 500)")
    parser.add_argument("--size", type=int, default=2048, help="bytes per message (2048)")
    parser.add_argument("--repeat", type=int, default=5, help="passes over them (default 5)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--dense",
        action="store_true",
        help="pad with the rulebook's own examples instead of prose (nearly every rule fires)",
    )
    args = parser.parse_args(argv)
    if args.messages < 1 or args.size < 1 or args.repeat < 1:
        parser.error("--messages, --size and --repeat must be positive")

    book = default_rulebook()
    filler = FILLER_SENTENCES
    if args.dense:
        filler = tuple(e.body for rule in book.rules for e in rule.examples if e.body)
    reports = build_messages(args.messages, args.size, args.seed, filler)
    whens = instants(args.messages, args.seed)
    for report in reports:
        classify(report, book)

    mean_size = statistics.fmean(len((r.subject + r.body).encode()) for r in reports)
    print(
        f"python {platform.python_version()}, {len(book.rules)} rules, "
        f"{args.messages} {'dense ' if args.dense else ''}messages of {mean_size:.0f} bytes, "
        f"{args.repeat} passes"
    )
    print(
        summary(
            "classify", time_calls(lambda i: classify(reports[i], book), len(reports), args.repeat)
        )
    )
    print(
        summary(
            "triage",
            time_calls(lambda i: triage(reports[i], whens[i], book), len(reports), args.repeat),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
