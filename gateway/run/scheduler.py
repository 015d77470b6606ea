"""The SLA scheduler: a small loop that wakes when the next reminder falls due (or early,
when incidents change), fires what is due through the store in one transaction, and wakes
the outbox to deliver what that queued.

The planning is pure (gateway.plan.sla); the once-only record is the store's
(gateway.store.reminders).
The clock is injected, so tests move time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial

import structlog

from gateway.domain import Due, Incident, Planner, Waker
from gateway.plan.sla import SlaSettings, due_now, next_due
from gateway.ports import Store
from gateway.run import metrics
from gateway.run.supervise import rounds
from gateway.run.worker import Clock, utcnow
from gateway.store.db import ts
from rules.book import Rulebook

log = structlog.get_logger("gateway.run.scheduler")


class Scheduler:
    """Fires SLA reminders, escalations, holding replies and digests at their due times."""

    def __init__(
        self,
        store: Store,
        rulebook: Rulebook,
        settings: SlaSettings,
        on_fired: Callable[[Sequence[Due]], None],
        clock: Clock = utcnow,
        max_sleep_s: float = 60.0,
        retry_delay_s: float = 5.0,
        min_gap_s: float = 1.0,
    ) -> None:
        self._store = store
        self._book = rulebook
        self._settings = settings
        self._on_fired = on_fired
        self._clock = clock
        self._max_sleep_s = max_sleep_s
        self._retry_delay_s = retry_delay_s
        self._min_gap_s = min_gap_s
        self._wake = asyncio.Event()  # look again (after the gap, if only incidents changed)
        self._now = asyncio.Event()  # look again now
        self._stopping = False
        self.last_round_s = 0.0  # how long the last round took (spaces out `changed()`)

    def replace_rulebook(self, rulebook: Rulebook) -> None:
        """Use `rulebook` (a reload) from the next pass on."""
        self._book = rulebook
        self.wake()

    def wake(self) -> None:
        """The clock was moved or the rules changed: look again now."""
        self._now.set()
        self._wake.set()

    def changed(self) -> None:
        """Incidents changed (after every processed batch): look again, but at most once
        per `min_gap_s` (or ten times the last round's duration, if longer), so a storm of
        reports does not make every batch re-read and re-plan every open incident. Due times
        are minutes apart; a few seconds' delay changes nothing."""
        self._wake.set()

    def stop(self) -> None:
        """Return from run() after the round in flight."""
        self._stopping = True
        self.wake()

    async def run(self) -> None:
        """Fire due items until stopped, sleeping until the next is due or a wake-up.

        The sleep is capped (`max_sleep_s`) so a wall clock that jumps (suspend, NTP) is
        noticed soon enough."""
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def before() -> None:
            nonlocal started
            self._now.clear()
            started = loop.time()

        async def after() -> None:
            # Rounds for changes are spaced by at least ten times what a round costs, so a
            # store with many open incidents is not planned over continuously.
            gap_s = max(self._min_gap_s, 10 * self.last_round_s)
            await self._coalesce(started + gap_s - loop.time())

        retry_s = min(self._retry_delay_s, self._max_sleep_s) + 0.01
        await rounds(
            self._round,
            wake=self._wake,
            stopping=lambda: self._stopping,
            failed="sla.round_failed",
            retry_s=retry_s,
            before=before,
            after=after,
            logger=log,
        )

    async def _round(self) -> float:
        _, next_at = await self.fire()
        wait_s = (
            self._max_sleep_s if next_at is None else ((next_at - self._clock()).total_seconds())
        )
        return min(wait_s, self._max_sleep_s) + 0.01 if wait_s > 0 else 0.0

    async def _coalesce(self, gap_s: float) -> None:
        # Woken only by `changed()` soon after the last round: wait out the gap (an urgent
        # wake-up or a stop ends it).
        if gap_s > 0 and not self._now.is_set():
            try:
                async with asyncio.timeout(gap_s):
                    await self._now.wait()
            except TimeoutError:
                pass

    async def fire(self, now: datetime | None = None) -> tuple[list[Due], datetime | None]:
        """One round: fire everything due at `now`; returns what fired and the next due time."""
        at = now or self._clock()
        plan = partial(due_now, now=at, book=self._book, settings=self._settings)
        wake = partial(next_due, now=at, book=self._book, settings=self._settings)
        # Most rounds find nothing due. Planning over every open incident is CPU work: do it
        # on a snapshot, off the store's thread (which intake's commits need), and open a
        # write transaction (which plans again, on what it reads) only when something is due.
        started = time.monotonic()
        anything_due, next_at = await _look(plan, wake, *await self._store.sla_snapshot())
        if not anything_due:
            self.last_round_s = time.monotonic() - started
            return [], next_at
        fired, next_at = await self._store.fire_reminders(plan, wake, at)
        metrics.sla_fired(due.kind for due in fired)
        self.last_round_s = time.monotonic() - started
        for due in fired:
            # The text (which may quote a tenant's title) is on the timeline, not in the log.
            log.info("sla.fired", subject=due.subject, kind=due.kind, due_at=due.due_at.isoformat())
        if any(due.plan.outbox for due in fired):
            self._on_fired(fired)
        return fired, next_at


_CHUNK = 100  # incidents planned between turns given to the event loop (a few ms)


async def _look(
    plan: Planner, wake: Waker, incidents: Sequence[Incident], fired: set[tuple[str, str, str]]
) -> tuple[bool, datetime | None]:
    """Whether anything not yet fired is due, and the next due time, on a snapshot.

    Planned a hundred incidents at a time on the event loop, which gets a turn in between:
    a thread would hold the GIL for the whole round (100 ms with 2,000 open incidents) and
    hold up intake. Both answers combine over parts: each incident's items are its own,
    and the digest's key and the global times do not depend on which part is planned."""
    new, nexts = False, []
    for start in range(0, len(incidents) or 1, _CHUNK):
        part = incidents[start : start + _CHUNK]
        new = new or any((d.subject, d.kind, ts(d.due_at)) not in fired for d in plan(part))
        nexts.append(wake(part))
        await asyncio.sleep(0)
    return new, min((at for at in nexts if at is not None), default=None)
