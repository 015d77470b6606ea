"""The SLA scheduler: a small loop that wakes when the next reminder falls due (or early,
when incidents change), fires what is due through the store in one transaction, and wakes
the outbox to deliver what that queued.

A round costs what is due, not how many incidents are open: the store keeps an index of
each open incident's next due time (gateway.store.sla_index) and a round plans only the
incidents whose time has come (at most `batch` of them; a full batch means "go again at
once"), plus the out-of-hours digest when an opening has come. Every change to an incident
marks it for re-planning in its own transaction, so a round after a change plans that
incident again. The first round (and the first after a rulebook reload, which may move
support hours) marks every open incident for re-planning: the index never holds a time
computed by other rules.

The planning is pure (gateway.plan.sla); the once-only record is the store's
(gateway.store.reminders). The clock is injected, so tests move time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial

import structlog

from gateway.domain import Due
from gateway.plan.sla import (
    SlaSettings,
    digest_items,
    digest_window,
    incident_items,
    next_digest,
    next_due_by_incident,
)
from gateway.ports import Store
from gateway.run import metrics
from gateway.run.supervise import rounds
from gateway.run.worker import Clock, utcnow
from rules.book import Rulebook

log = structlog.get_logger("gateway.run.scheduler")

BATCH = 256  # incidents planned per round (one transaction of a few milliseconds)


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
        batch: int = BATCH,
    ) -> None:
        self._store = store
        self._book = rulebook
        self._settings = settings
        self._on_fired = on_fired
        self._clock = clock
        self._max_sleep_s = max_sleep_s
        self._retry_delay_s = retry_delay_s
        self._min_gap_s = min_gap_s
        self._batch = batch
        self._replan = True  # the first round re-plans every open incident
        self._digest_fired: datetime | None = None  # the opening whose digest is done
        self._wake = asyncio.Event()  # look again (after the gap, if only incidents changed)
        self._now = asyncio.Event()  # look again now
        self._stopping = False
        self.last_round_s = 0.0  # how long the last round took (spaces out `changed()`)

    def replace_rulebook(self, rulebook: Rulebook) -> None:
        """Use `rulebook` (a reload) from the next round on, which re-plans every open
        incident once (support hours may have moved)."""
        self._book = rulebook
        self._replan = True
        self.wake()

    def wake(self) -> None:
        """The clock was moved or the rules changed: look again now."""
        self._now.set()
        self._wake.set()

    def changed(self) -> None:
        """Incidents changed (after every processed batch; each change marked its incident
        for re-planning): look again, but at most once per `min_gap_s` (or ten times the
        last round's duration, if longer), so a storm of reports makes a few rounds that
        each re-plan many changed incidents, not one round per batch. Due times are minutes
        apart; a few seconds' delay changes nothing."""
        self._wake.set()

    def stop(self) -> None:
        """Return from run() after the round in flight."""
        self._stopping = True
        self.wake()

    async def run(self) -> None:
        """Fire due items until stopped, sleeping until the next is due or a wake-up.

        The sleep is capped (`max_sleep_s`) so a wall clock that jumps (suspend, NTP) is
        noticed soon enough. Each run (on PostgreSQL: each time this node takes the lease)
        starts by re-planning every open incident."""
        self._replan = True
        # The bank holidays may still be on their way from their helper process
        # (gateway.config.bank_holidays): wait for them off the event loop, not in a round.
        today = self._clock().date()
        await asyncio.to_thread(self._book.clock.is_bank_holiday, today)
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
        if wait_s <= 0:
            self._now.set()  # more is due already (a full batch): no gap before the next
            return 0.0
        return min(wait_s, self._max_sleep_s) + 0.01

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
        """One round: fire what is due at `now` for the incidents the index says are due
        (and the digest); returns what fired and the next due time."""
        at = now or self._clock()
        started = time.monotonic()
        if self._replan:
            marked = await self._store.replan_sla()
            self._replan = False
            log.info("sla.replan", incidents=marked)
        book, settings = self._book, self._settings
        fired, next_at = await self._store.fire_sla(
            partial(incident_items, now=at, book=book, settings=settings),
            partial(next_due_by_incident, now=at, book=book, settings=settings),
            at,
            self._batch,
        )
        fired += await self._digest(at)
        digest_at = next_digest(at, book, settings)
        if digest_at is not None and (next_at is None or digest_at < next_at):
            next_at = digest_at
        self.last_round_s = time.monotonic() - started
        if not fired:
            return [], next_at
        metrics.sla_fired(due.kind for due in fired)
        for due in fired:
            # The text (which may quote a tenant's title) is on the timeline, not in the log.
            log.info("sla.fired", subject=due.subject, kind=due.kind, due_at=due.due_at.isoformat())
        if any(due.plan.outbox for due in fired):
            self._on_fired(fired)
        return fired, next_at

    async def _digest(self, at: datetime) -> list[Due]:
        """The out-of-hours digest, once per opening (the store's key keeps it once across
        restarts; this process asks the store once per opening)."""
        window = digest_window(at, self._book, self._settings)
        if window is None or window[0] == self._digest_fired:
            return []
        opening, since = window
        fired = await self._store.fire_digest(
            partial(digest_items, now=at, book=self._book, settings=self._settings),
            since,
            opening,
            at,
        )
        self._digest_fired = opening
        return fired
