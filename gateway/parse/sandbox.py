"""Parsing and triage of untrusted mail in a child process, under a time budget.

Owns the one place where inbound mail bytes meet CPython's `email` package and the
rulebook. That package has quadratic and near-endless cases (tens of thousands of MIME
parts, deep nesting, header lines with thousands of encoded words), and a thread cannot be
stopped once it is stuck in one. So the work runs in a separate process:

* One child process holds the rulebook and answers one request per batch: the batch's
  messages in, one `Prepared` per message out (the parsed mail and its triage, or why it
  could not be read). The event loop only waits on a pipe from a helper thread, so it never
  stalls, and on a host with a spare CPU the parsing uses it. The child is a fresh
  interpreter running `gateway.parse.child` (never a fork: the daemon has threads; nor
  multiprocessing's "spawn", which re-imports the daemon's main module), so it loads only
  the parser and the rulebook.
* Each batch has a deadline: `budget_s` plus `per_message_s` for each message. When the
  child misses it, or dies (a crash, the OOM killer), it is killed and the batch is tried
  again one message at a time, each with `budget_s` on a fresh child. A message that
  overruns or kills the child on its own is the culprit: it comes back as unreadable
  ("parsing took too long" / "parser crashed"), which the pipeline turns into a P4
  ticket with the raw message kept. Every other message of the batch is processed
  normally. So a hostile message costs at most one batch deadline plus its own budget,
  and is never lost.
* Memory: a batch goes to the child in pieces of at most `max_exchange_bytes` of raw mail
  (and always at least one message), so the child holds one piece, not the whole batch.
* Hostile mail is cheap: the child refuses mail over the MIME limits (`MimeLimits`) before
  parsing it; after a lost batch, the plain messages (small, few parts) are retried
  together first, and each suspect one alone with `suspect_budget_s`, a fraction of the
  full budget: so a queue of pathological mail costs seconds, not minutes, before the rest
  of its batch (a P1 among it) is planned.
* The child ignores SIGINT and SIGTERM (a stop of the service reaches the whole process
  group) and exits when its pipe closes, so a stop never loses the batch in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path

import structlog

from gateway.parse.child import MailJob, MimeLimits, Prepared, prepare, restored
from rules.compiled import CompiledRulebook, TriageBook

__all__ = ["CRASHED", "TOO_SLOW", "MailJob", "MimeLimits", "ParseSandbox", "Prepared", "prepare"]

log = structlog.get_logger("gateway.parse.sandbox")
TOO_SLOW = "parsing took too long"
CRASHED = "the parser crashed"
_ROOT = str(Path(__file__).resolve().parent.parent)  # where `gateway` and `rules` live
_START_S = 30.0  # a fresh child must answer within this long
_PLAIN_BYTES = 256 * 1024  # a message this small, with few "--" lines, is not a suspect
_PLAIN_DASHES = 100


class _Child:
    """The child process (`python -m gateway.parse.child`) and our end of its socket."""

    def __init__(self, book: CompiledRulebook, limits: MimeLimits) -> None:
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, env.get("PYTHONPATH")]))
        try:
            self.proc = subprocess.Popen(  # noqa: S603  (our interpreter, fixed arguments)
                [sys.executable, "-m", "gateway.parse.child", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        finally:
            theirs.close()
        self.conn = Connection(ours.detach())
        self.conn.send((book, limits))

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    def is_alive(self) -> bool:
        """Whether the child is still running."""
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the child."""
        if self.is_alive():
            self.proc.kill()

    def join(self, timeout_s: float | None = None) -> None:
        """Wait for the child to exit (at most `timeout_s`)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout_s)


class _Lost(Exception):
    """The child missed its deadline or died; it has been killed."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


class ParseSandbox:
    """Runs `prepare` in a child process with a deadline per batch (see the module doc).

    Constructing it starts nothing; the child starts on first use (or `start()`), and is
    replaced after it is killed. `close()` ends it.
    """

    def __init__(
        self,
        rulebook: TriageBook,
        *,
        budget_s: float = 5.0,
        per_message_s: float = 0.1,
        suspect_budget_s: float | None = None,
        max_exchange_bytes: int = 16 * 1024 * 1024,
        limits: MimeLimits | None = None,
    ) -> None:
        self._book = rulebook.compiled  # what the child gets: plain values, no pydantic
        self._limits = limits or MimeLimits()
        self.suspect_budget_s = budget_s / 5 if suspect_budget_s is None else suspect_budget_s
        self.max_exchange_bytes = max_exchange_bytes
        self._book_version = 0  # the child is replaced when this moves (a reload)
        self._child_version = 0
        self.budget_s = budget_s
        self.per_message_s = per_message_s
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox")
        self._proc: _Child | None = None
        self.restarts = 0

    def replace_rulebook(self, rulebook: TriageBook) -> None:
        """Triage with `rulebook` from the next batch on: a fresh child is started for it."""
        self._book = rulebook.compiled
        self._book_version += 1

    async def start(self) -> None:
        """Start the child now rather than on the first batch, and wait until it answers
        (it has loaded the parser and the rulebook). A child that does not answer within
        the budget is killed; the first batch starts a fresh one."""
        await asyncio.get_running_loop().run_in_executor(self._thread, self._ping)

    async def prepare_all(self, jobs: list[MailJob], now: datetime) -> list[Prepared]:
        """Parse and triage a batch; never raises for what the messages contain."""
        if not jobs:
            return []
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._prepare_sync, jobs, now)

    async def close(self) -> None:
        """End the child and the helper thread."""
        await asyncio.get_running_loop().run_in_executor(self._thread, self._stop)
        self._thread.shutdown(wait=True)

    # -- the helper thread ------------------------------------------------------------------
    def _prepare_sync(self, jobs: list[MailJob], now: datetime) -> list[Prepared]:
        results: list[Prepared] = []
        for piece in _pieces(jobs, self.max_exchange_bytes):
            results.extend(self._prepare_piece(piece, now))
        return results

    def _prepare_piece(self, jobs: list[MailJob], now: datetime) -> list[Prepared]:
        deadline = self.budget_s + self.per_message_s * len(jobs)
        try:
            return self._exchange(jobs, now, deadline)
        except _Lost as lost:
            if len(jobs) == 1:
                return [Prepared(problem=lost.problem)]
            log.warning("sandbox.batch_lost", size=len(jobs), problem=lost.problem)
        # Find the culprit: the plain messages together first, then each suspect alone with
        # a smaller budget; a plain one that fails together is retried alone as well.
        done: dict[int, Prepared] = {}
        plain = [i for i, job in enumerate(jobs) if _plain(job)]
        if 1 < len(plain) < len(jobs):
            with contextlib.suppress(_Lost):
                together = self._exchange(
                    [jobs[i] for i in plain], now, self.budget_s + self.per_message_s * len(plain)
                )
                done.update(zip(plain, together, strict=True))
        for i, job in enumerate(jobs):
            if i in done:
                continue
            budget = self.budget_s if _plain(job) else self.suspect_budget_s
            try:
                [done[i]] = self._exchange([job], now, budget + self.per_message_s)
            except _Lost as lost:
                done[i] = Prepared(problem=lost.problem)
        return [done[i] for i in range(len(jobs))]

    def _ping(self) -> None:
        with contextlib.suppress(_Lost):  # _kill has logged it
            self._exchange([], datetime.now(UTC), self.budget_s)

    def _exchange(self, jobs: list[MailJob], now: datetime, deadline_s: float) -> list[Prepared]:
        try:
            conn = self._ensure()
            conn.send((jobs, now))
            if not conn.poll(deadline_s):
                self._kill(TOO_SLOW)
                raise _Lost(TOO_SLOW)
            results: list[Prepared] = conn.recv()
        except (EOFError, OSError) as exc:
            self._kill(CRASHED)
            raise _Lost(CRASHED) from exc
        if len(results) != len(jobs):  # cannot happen with our child; do not trust it
            self._kill(CRASHED)
            raise _Lost(CRASHED)
        return [restored(r) for r in results]

    def _ensure(self) -> Connection:
        if (
            self._proc is not None
            and self._proc.is_alive()
            and self._child_version == self._book_version
        ):
            return self._proc.conn
        self._stop()
        self._child_version = self._book_version
        self._proc = _Child(self._book, self._limits)
        # Wait until the fresh child has loaded the parser and rulebook (an empty request),
        # so that its start-up, slow on a loaded host, is not charged to the mail's budget.
        conn = self._proc.conn
        conn.send(([], datetime.now(UTC)))
        if not conn.poll(max(_START_S, self.budget_s)):
            self._kill(CRASHED)
            raise _Lost(CRASHED)
        conn.recv()
        return conn

    def _kill(self, why: str) -> None:
        log.warning("sandbox.killed", reason=why)
        self.restarts += 1
        if self._proc is not None:
            self._proc.kill()
        self._stop()

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.conn.close()  # the child exits when it reads EOF
            proc.join(5.0)
            if proc.is_alive():
                proc.kill()
                proc.join()


def _plain(job: MailJob) -> bool:
    """Small and with few lines that could start a MIME part: cheap to parse."""
    return len(job.raw) <= _PLAIN_BYTES and job.raw.count(b"\n--") <= _PLAIN_DASHES


def _pieces(jobs: list[MailJob], max_bytes: int) -> list[list[MailJob]]:
    """The batch cut into runs of at most `max_bytes` of raw mail (a larger message alone)."""
    pieces: list[list[MailJob]] = []
    size = 0
    for job in jobs:
        if not pieces or size + len(job.raw) > max_bytes:
            pieces.append([])
            size = 0
        pieces[-1].append(job)
        size += len(job.raw)
    return pieces
