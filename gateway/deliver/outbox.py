"""The outbox worker: delivers pages, tickets and mail at least once, records each exactly once.

An entry is marked done in the same transaction that records its effect (the page, the
ticket, the timeline line), so a crash before that commit means one more attempt — made
harmless by the idempotency each egress uses (PagerDuty dedup_key, a fixed Message-ID,
the built-in ticket's unique incident). Failures back off exponentially to a cap with
jitter, honour the peer's Retry-After, and after `max_attempts` go to the dead-letter state
(gateway.deliver.deadletter). The worker also polls every `poll_s` when idle, so an entry an
operator sent back with `outbox retry` is found without a signal.

A peer that is away is not a peer that refuses: when an egress raises `LinkDown`, the
entry is parked — no attempt counted, its place in line kept — and its link's gate
(gateway.deliver.links) holds back every entry of that link until the link is back, however long
that takes. Entries for one chat room, and the actions on one page, go out one after
another, in order (`gateway.payloads.lane_of`): within a round they form a lane, and across
rounds the store holds back what an earlier entry of the lane, waiting on a retry, precedes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog

from gateway.deliver.deadletter import AlertFor
from gateway.deliver.links import LinkGate
from gateway.deliver.timeline import worded
from gateway.domain import Attempt, OutboxEntry, OutboxKind
from gateway.payloads import PAGE_LANE_KINDS, lane_of
from gateway.ports import LinkDown, PermanentError, Store, TransientError
from gateway.run import metrics
from gateway.run.supervise import backoff_s, rounds
from gateway.run.worker import Clock, utcnow

log = structlog.get_logger("gateway.deliver.outbox")
Handler = Callable[[OutboxEntry], Awaitable[dict[str, Any]]]
_DEFER_POLL_S = 0.02
_GATE_POLL_S = 0.25  # how often a held-back link's state is looked at again
# Pages go first in a round (their lane kinds), then everything else.
_NOT_PAGES = frozenset(OutboxKind) - PAGE_LANE_KINDS


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try."""

    max_attempts: int = 12
    initial_s: float = 1.0
    max_s: float = 300.0
    attempt_timeout_s: float = 60.0

    def delay(self, attempts: int, retry_after_s: float | None) -> float:
        """Seconds before attempt number `attempts + 1`."""
        if retry_after_s is not None:
            return min(max(retry_after_s, self.initial_s), 3600.0)
        return backoff_s(attempts - 1, self.initial_s, self.max_s)


class OutboxWorker:
    """Delivers due entries through the handler registered for their kind."""

    def __init__(
        self,
        store: Store,
        handlers: Mapping[OutboxKind, Handler],
        policy: RetryPolicy,
        concurrency: int = 8,
        clock: Clock = utcnow,
        alert_for: AlertFor | None = None,
        poll_s: float = 5.0,
        busy: Callable[[], bool] | None = None,
        max_defer_s: float = 1.0,
        gates: Sequence[LinkGate] = (),
    ) -> None:
        self._store = store
        self.gates = list(gates)
        self._gate_of = {kind: gate for gate in gates for kind in gate.kinds}
        self._alert_for = alert_for
        self._poll_s = poll_s
        self._handlers = handlers
        self._policy = policy
        self._concurrency = concurrency
        self._clock = clock
        self._wake = asyncio.Event()
        self._stopping = False
        self.busy = busy  # intake is in a storm (InboxWorker.in_storm)
        self._max_defer_s = max_defer_s

    def wake(self) -> None:
        """Something new is in the outbox."""
        self._wake.set()

    def stop(self) -> None:
        """Finish the round in flight (so what was delivered is recorded), then return."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Deliver until stopped, sleeping until the next entry is due or a wake-up."""
        retry_s = min(self._policy.initial_s, self._poll_s, 3600.0) + 0.01
        await rounds(
            self._round,
            wake=self._wake,
            stopping=lambda: self._stopping,
            failed="outbox.loop_failed",
            retry_s=retry_s,
            before=self._let_intake_finish,
            logger=log,
        )

    async def _round(self) -> float:
        if await self.deliver_due():
            return 0.0
        next_due = await self._store.next_outbox_due(self._held_back())
        wait_s = 3600.0 if next_due is None else (next_due - self._clock()).total_seconds()
        # Poll now and then: `outbox retry` (another process) changes the due index.
        wait_s = min(wait_s, self._poll_s)
        if any(gate.is_down() for gate in self.gates):
            wait_s = min(wait_s, _GATE_POLL_S)  # a link may come back meanwhile
        return min(wait_s, 3600.0) + 0.01 if wait_s > 0 else 0.0

    async def _let_intake_finish(self) -> None:
        # As the inbox worker does: during a storm of incoming mail, intake (whose 250 waits
        # for a commit) goes first, and each round's settle transaction waits for a lull, at
        # most max_defer_s. The inbox worker defers too, so a storm queues little here.
        for _ in range(int(self._max_defer_s / _DEFER_POLL_S)):
            if self._stopping or self.busy is None or not self.busy():
                return
            await asyncio.sleep(_DEFER_POLL_S)

    async def deliver_due(self) -> int:
        """One round: every entry due now, `concurrency` at a time, each lane's outcomes
        recorded as it finishes (`_Settler`); returns how many were attempted."""
        entries = await self._due()
        if entries:
            settler = _Settler(self._store, self._clock)
            async with asyncio.TaskGroup() as group:
                for lane in _lanes(entries):
                    group.create_task(self._settled_lane(lane, settler))
            await settler.finish()
        return len(entries)

    async def _settled_lane(self, entries: list[OutboxEntry], settler: _Settler) -> None:
        await settler.add(await self._lane(entries))

    async def _due(self) -> list[OutboxEntry]:
        """Due pages first, then the rest in order. A round ends only when its slowest
        entry is done: in FIFO order, a burst of reports queued each page behind the tickets
        and acknowledgements of the reports before it (one round per 32 entries). Pages
        keep their own order among themselves, as every other lane does."""
        now, held = self._clock(), self._held_back()
        pages = await self._store.due_outbox(now, self._concurrency, held | _NOT_PAGES)
        room = self._concurrency - len(pages)
        rest = await self._store.due_outbox(now, room, held | PAGE_LANE_KINDS) if room > 0 else []
        return [*pages, *rest]

    def _held_back(self) -> frozenset[str]:
        """The kinds whose link is down and not due for another try."""
        return frozenset(kind for gate in self.gates if not gate.may_try() for kind in gate.kinds)

    async def _lane(self, entries: list[OutboxEntry]) -> list[Attempt]:
        """Entries that must go out in order, one after another. The lane stops at the first
        entry not delivered (the rest keep their place for the next round), and after an
        announcement (what follows in its thread needs the announcement recorded first)."""
        done: list[Attempt] = []
        for entry in entries:
            attempt = await self._attempt(entry)
            done.append(attempt)
            if attempt.result is None or entry.kind is OutboxKind.CHAT_ANNOUNCE:
                break
        return done

    async def drain(self, timeout_s: float) -> bool:
        """Deliver what is due until nothing is, or the time is up; True if drained."""
        try:
            async with asyncio.timeout(timeout_s):
                while await self.deliver_due():
                    pass
        except TimeoutError:
            return False
        return True

    async def _attempt(self, entry: OutboxEntry) -> Attempt:
        bound = log.bind(
            outbox_id=entry.id,
            kind=entry.kind,
            incident_id=entry.incident_id,
            attempt=entry.attempts + 1,
        )
        handler = self._handlers.get(entry.kind)
        try:
            if handler is None:
                raise PermanentError(f"no handler for {entry.kind}")
            async with (
                asyncio.timeout(self._policy.attempt_timeout_s),
                metrics.attempt_timer(entry.kind),
            ):
                result = await handler(entry)
        except asyncio.CancelledError:
            raise
        except LinkDown as exc:
            return self._parked(entry, exc.reason, bound)
        except PermanentError as exc:
            self._answered(entry)
            return self._failed(entry, exc.reason, None, bound, permanent=True)
        except TransientError as exc:
            self._answered(entry)
            return self._failed(entry, exc.reason, exc.retry_after_s, bound, permanent=False)
        except TimeoutError:
            return self._failed(entry, "timed out", None, bound, permanent=False)
        except Exception as exc:  # an adapter bug: keep the entry, retry later, shout
            bound.exception("outbox.handler_crashed")
            return self._failed(
                entry, f"internal error: {type(exc).__name__}", None, bound, permanent=False
            )
        self._answered(entry)
        bound.info("outbox.delivered")
        metrics.delivered(entry.kind, entry.payload)
        return Attempt(entry, result=result)

    def _answered(self, entry: OutboxEntry) -> None:
        gate = self._gate_of.get(entry.kind)
        if gate is not None and gate.down_since is not None:
            log.info("outbox.link_back", link=gate.name)
            gate.answered()

    def _parked(self, entry: OutboxEntry, reason: str, bound: Any) -> Attempt:
        gate = self._gate_of.get(entry.kind)
        if gate is not None:
            if gate.down_since is None:
                log.error("outbox.link_down", link=gate.name, reason=reason)
            gate.unreachable(reason)
        metrics.DELIVERY_FAILURES.inc(kind=entry.kind, result="parked")
        bound.info("outbox.parked", reason=reason)
        return Attempt(entry, error=reason, parked=True)

    def _failed(
        self,
        entry: OutboxEntry,
        reason: str,
        retry_after_s: float | None,
        bound: Any,
        *,
        permanent: bool,
    ) -> Attempt:
        attempts = entry.attempts + 1
        dead = permanent or attempts >= self._policy.max_attempts
        delay = self._policy.delay(attempts, retry_after_s)
        metrics.DELIVERY_FAILURES.inc(kind=entry.kind, result="dead" if dead else "retry")
        alert = None
        if dead:
            bound.error("outbox.dead_lettered", reason=reason)
            alert = self._alert_for(entry, reason, attempts) if self._alert_for else None
        else:
            bound.warning("outbox.retry_scheduled", reason=reason, delay_s=round(delay, 2))
        return Attempt(
            entry,
            error=reason,
            dead=dead,
            alert=alert,
            next_at=self._clock() + timedelta(seconds=delay),
        )


class _Settler:
    """Records a round's outcomes as its lanes finish, one settle transaction at a time:
    the lanes that finish while one commits go together into the next. What was delivered
    is recorded about one transaction after its delivery, not after the round's slowest
    entry (a node killed mid-round leaves less to be delivered again: the idempotency keys
    absorb what remains), and a round of many quick lanes still costs few transactions.
    A settle that fails is tried again with the next lane's, and last in `finish`, which
    raises if it still fails (the round's loop logs it and backs off; on several nodes the
    claims then run out and the entries are delivered again)."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store, self._clock = store, clock
        self._waiting: list[Attempt] = []
        self._lock = asyncio.Lock()

    async def add(self, attempts: list[Attempt]) -> None:
        """A finished lane's outcomes: recorded now, or with the next settle."""
        self._waiting += attempts
        # One turn of the event loop first: lanes whose answers arrived together (the same
        # provider answering a burst) join this settle rather than each making its own.
        await asyncio.sleep(0)
        async with self._lock:
            try:
                await self._settle()
            except Exception as exc:  # the store: kept for the next settle, and finish()
                log.warning("outbox.settle_deferred", error=type(exc).__name__)

    async def finish(self) -> None:
        """Record whatever is still waiting (raises if the store cannot)."""
        async with self._lock:
            await self._settle()

    async def _settle(self) -> None:
        batch, self._waiting = self._waiting, []
        if not batch:
            return
        now = self._clock()
        try:
            await self._store.settle_outbox([worded(a, now) for a in batch], now)
        except BaseException:
            self._waiting = batch + self._waiting
            raise


def _lanes(entries: list[OutboxEntry]) -> list[list[OutboxEntry]]:
    """Entries grouped by lane (in their order), every independent entry on its own."""
    keyed: dict[str, list[OutboxEntry]] = {}
    lanes: list[list[OutboxEntry]] = []
    for entry in entries:
        key = lane_of(entry.kind, entry.payload)
        if key is None:
            lanes.append([entry])
        elif key in keyed:
            keyed[key].append(entry)
        else:
            lanes.append(keyed.setdefault(key, [entry]))
    return lanes
