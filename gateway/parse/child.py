"""The parse child's own entry point: `python -m gateway.parse.child FD`.

Owns what runs inside the parse sandbox's child process (gateway.parse.sandbox starts it): the
jobs and results that cross the pipe, `prepare` (parse and triage one message) and the
child's loop. It is a module of its own, started as a fresh interpreter rather than through
multiprocessing's "spawn" (which re-imports the parent's main module and everything that
pulls in), so the child loads only the mail parser and the rulebook's compiled form: keep
its imports to gateway.parse.mail and the pydantic-free part of rules (rules.engine,
rules.compiled; no asyncio, no store, no logging, no adapters, no pydantic, no `holidays`:
tests/test_parse_child_lean.py and an import-linter contract hold this).

Protocol, over the socket whose descriptor is FD (multiprocessing.connection framing): the
first object received is `(CompiledRulebook, MimeLimits)` (plain dataclasses and enums: its
rules' conditions are compiled here; its bank holidays arrive as precomputed dates, see
rules.hours); then each request is `(jobs, now)` and is answered with one `Prepared` per
job, in order. The child exits when the socket closes.

Before the full parse, a structural pre-check that costs a few scans at memchr speed
(`structure_problem`) turns mail with more MIME parts or containers than any human report
has into an unreadable message (a ticket for a human, raw bytes kept) at once: CPython's
parser spends about 45 µs per part, so 200,000 parts would take the whole time budget.
"""

from __future__ import annotations

import re
import signal
import sys
import traceback
from dataclasses import dataclass, replace
from datetime import datetime
from multiprocessing.connection import Connection
from types import MappingProxyType

from gateway.parse.mail import ParsedMail, UnparseableMessage, parse_mail
from rules.compiled import TriageBook
from rules.engine import triage
from rules.types import Mailbox, Report, TriageDecision


@dataclass(frozen=True)
class MailJob:
    """One accepted email to parse and triage."""

    raw: bytes
    mail_from: str
    mailbox: Mailbox


@dataclass(frozen=True)
class Prepared:
    """A parsed and triaged email, or the reason it could not be read (`problem`)."""

    mail: ParsedMail | None = None
    decision: TriageDecision | None = None
    problem: str | None = None
    bug: str | None = None  # an exception type from our own code, logged by the parent


@dataclass(frozen=True)
class MimeLimits:
    """What the pre-check refuses before parsing."""

    max_parts: int = 1000  # MIME parts (boundary delimiter lines) in the whole message
    max_containers: int = 100  # multipart and message/* entities: bounds nesting depth


# A boundary parameter, quoted or not. RFC 2231 forms (boundary*0=, boundary*=) cannot be
# read back here: when one is present, every line starting with "--" counts as a part.
_BOUNDARY = re.compile(rb'boundary[ \t]*=[ \t]*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))', re.I)
_BOUNDARY_2231 = re.compile(rb"boundary\*", re.I)
_CONTAINER = re.compile(rb"content-type:[ \t]*(?:\r?\n[ \t]+)?(?:multipart|message)/", re.I)


def structure_problem(raw: bytes, limits: MimeLimits) -> str | None:
    """Why `raw` is too complex to parse (None when it is not): cheap counts, never a parse.

    Each part starts with a line "--boundary", so the lines starting with "--" are an upper
    bound on the parts; only when there are more than the limit are the declared boundaries
    counted one by one (a pasted log with many "--" lines is not refused for that)."""
    dashes = raw.count(b"\n--") + raw.startswith(b"--")
    if dashes > limits.max_parts:
        found = {m.group(1) or m.group(2) for m in _BOUNDARY.finditer(raw)}
        if _BOUNDARY_2231.search(raw) is not None or len(found) > limits.max_containers:
            parts = dashes
        else:
            # each multipart's last delimiter ("--boundary--") closes it: not a part
            parts = sum(raw.count(b"\n--" + b) for b in found) - len(found)
        if parts > limits.max_parts:
            return f"too many MIME parts (over {limits.max_parts})"
    containers = sum(
        1 for _ in zip(range(limits.max_containers + 1), _CONTAINER.finditer(raw), strict=False)
    )
    if containers > limits.max_containers:
        return f"MIME nested or contained too deep (over {limits.max_containers} containers)"
    return None


def report_for(mailbox: Mailbox, mail_from: str | None, mail: ParsedMail) -> Report:
    """The channel-neutral view of a message that the rules triage."""
    automatic = mail.automatic
    if automatic is None and mail_from == "":
        automatic = "null return path"
    return Report(
        mailbox=mailbox,
        sender=mail.from_addr or (mail_from or "").lower(),
        subject=mail.subject,
        body=mail.new_text,
        headers=mail.headers,
        automatic=automatic,
    )


def prepare(
    job: MailJob, now: datetime, book: TriageBook, limits: MimeLimits | None = None
) -> Prepared:
    """Parse and triage one message (what the child runs; pure). `book`: the rulebook,
    validated or compiled (the child has the compiled form)."""
    problem = structure_problem(job.raw, limits or MimeLimits())
    if problem is not None:
        return Prepared(problem=problem)
    try:
        mail = parse_mail(job.raw, job.mail_from)
    except UnparseableMessage as exc:
        return Prepared(problem=str(exc)[:200] or "unparseable")
    try:
        decision = triage(report_for(job.mailbox, job.mail_from, mail), now, book)
    except Exception as exc:  # a bug must not lose the message: a ticket for a human
        return Prepared(
            problem=f"processing failed: {type(exc).__name__}", bug=traceback.format_exc(limit=5)
        )
    return Prepared(mail, decision)


def portable(result: Prepared) -> Prepared:
    """MappingProxyType does not pickle: the headers cross the pipe as a dict."""
    if result.mail is None:
        return result
    return replace(result, mail=replace(result.mail, headers=dict(result.mail.headers)))


def restored(result: Prepared) -> Prepared:
    """The parent's side of `portable`: read-only headers again."""
    if result.mail is None:
        return result
    headers = MappingProxyType(dict(result.mail.headers))
    return replace(result, mail=replace(result.mail, headers=headers))


def warm(book: TriageBook) -> None:
    """Compile every rule's conditions now, before the first request (the parent sends the
    rulebook's conditions uncompiled: it does not triage mail itself), so that the first
    message is not charged for it."""
    book.compiled.warm()


def serve(conn: Connection) -> None:
    """The child's loop: the compiled rulebook and limits, then a batch in, its results
    out, until EOF."""
    try:
        book, limits = conn.recv()
    except (EOFError, OSError):
        return
    warm(book)
    while True:
        try:
            jobs, now = conn.recv()
        except (EOFError, OSError):
            return
        conn.send([portable(prepare(job, now, book, limits)) for job in jobs])


def main(argv: list[str]) -> None:
    """Serve on the inherited descriptor argv[1]."""
    # A stop of the service reaches the whole process group: the parent decides when the
    # child ends (by closing the socket), so no batch in flight is cut short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve(Connection(int(argv[1])))


if __name__ == "__main__":
    # Run the imported module, not this `__main__` copy: the classes that cross the pipe
    # must pickle as gateway.parse.child.*, the names the parent knows.
    import importlib

    importlib.import_module("gateway.parse.child").main(sys.argv)
