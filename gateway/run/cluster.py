"""Several nodes, one deployment: the work that must run once runs under a lease.

`Lease` keeps one named lease (gateway.store.postgres.leases) for this node: it takes it
when free, renews it every third of its time, and counts it lost as soon as its deadline
passes by this node's monotonic clock (the deadline is what the database granted, less a
margin), even before the database says so: a node that was paused past its lease stops
acting the moment it wakes. `singleton` runs a loop only while its lease is held and
cancels it when the lease is lost. What a lost lease cannot stop (a delivery already under
way) is fenced by the outbox claims' tokens in the store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import structlog

from gateway.domain import OutboxEntry, OutboxKind
from gateway.ports import TransientError
from gateway.run.supervise import backoff_s

log = structlog.get_logger("gateway.run.cluster")
_MARGIN = 0.2  # of the lease time: stop acting this much before the database would expire it


class Granted(Protocol):
    """What taking a lease returns: the fencing token and the seconds left."""

    @property
    def token(self) -> int:
        """The fencing token."""
        ...

    @property
    def remaining_s(self) -> float:
        """Seconds until the lease expires, by the database's clock."""
        ...


class LeaseStore(Protocol):
    """The store's lease operations (PostgresStore)."""

    async def acquire_lease(self, name: str, ttl_s: float) -> Granted | None:
        """Take or renew; None while another node holds it."""
        ...

    async def release_lease(self, name: str, token: int) -> None:
        """Give it up."""
        ...

    async def claim_valid(self, outbox_id: int, margin_s: float = 1.0) -> bool:
        """Whether this node still holds its claim on an outbox entry."""
        ...


class Lease:
    """One lease kept for this node (see the module docstring)."""

    def __init__(
        self,
        store: LeaseStore,
        name: str,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.ttl_s = ttl_s
        self.token: int | None = None
        self.gained = asyncio.Event()
        self.lost = asyncio.Event()
        self.lost.set()
        self._store = store
        self._clock = clock
        self._deadline = 0.0
        self._stopping = False

    def held(self) -> bool:
        """Whether this node may act under the lease right now."""
        return self.token is not None and self._clock() < self._deadline

    def stop(self) -> None:
        """Stop renewing (run() releases the lease and returns)."""
        self._stopping = True

    async def run(self) -> None:
        """Take and renew until stopped; release on the way out."""
        failures = 0
        try:
            while not self._stopping:
                try:
                    await self._round()
                    failures = 0
                    wait = self.ttl_s / 3
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the database is unreachable: keep trying, briefly
                    failures += 1
                    log.warning("lease.renew_failed", lease=self.name, error=type(exc).__name__)
                    wait = min(backoff_s(failures - 1, 0.2, self.ttl_s / 3), self.ttl_s / 3)
                self._check_deadline()
                until_deadline = self._deadline - self._clock() if self.held() else wait
                await asyncio.sleep(max(0.01, min(wait, until_deadline)))
                self._check_deadline()
        finally:
            await self._release()

    async def _round(self) -> None:
        started = self._clock()
        grant = await self._store.acquire_lease(self.name, self.ttl_s)
        if grant is None:
            self._lose("held_elsewhere")
            return
        deadline = started + min(grant.remaining_s, self.ttl_s) - self.ttl_s * _MARGIN
        if self.token != grant.token:
            self.token = grant.token
            log.info("lease.acquired", lease=self.name, token=grant.token)
        self._deadline = deadline
        if self.held():
            self.lost.clear()
            self.gained.set()

    def _check_deadline(self) -> None:
        if self.token is not None and not self.held():
            self._lose("expired")

    def _lose(self, why: str) -> None:
        if self.token is not None:
            log.warning("lease.lost", lease=self.name, token=self.token, reason=why)
        self.token = None
        self.gained.clear()
        self.lost.set()

    async def _release(self) -> None:
        token, self.token = self.token, None
        self.gained.clear()
        self.lost.set()
        if token is not None:
            try:
                await asyncio.shield(self._store.release_lease(self.name, token))
            except Exception as exc:  # it expires on its own
                log.warning("lease.release_failed", lease=self.name, error=type(exc).__name__)


async def singleton(
    lease: Lease,
    run: Callable[[], Awaitable[None]],
    stopping: Callable[[], bool],
    on_lost: Callable[[], None] | None = None,
    poll_s: float = 0.2,
) -> None:
    """Run `run()` only while `lease` is held: start it when the lease is gained, cancel it
    when it is lost, until `stopping()` (then let a running loop finish on its own)."""
    while not stopping():
        if not lease.held():
            if lease.gained.is_set():  # expired by the clock; the keeper has yet to notice
                await asyncio.sleep(poll_s)
                continue
            try:
                async with asyncio.timeout(poll_s):
                    await lease.gained.wait()
            except TimeoutError:
                pass
            continue
        task = asyncio.ensure_future(run())
        lost = asyncio.ensure_future(_until_lost(lease, poll_s))
        try:
            await asyncio.wait([task, lost], return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if task.done():
            task.result()  # a loop that ended: raise its error, or return if it was stopped
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        log.warning("lease.work_stopped", lease=lease.name)
        if on_lost is not None:
            on_lost()


async def _until_lost(lease: Lease, poll_s: float) -> None:
    # The event, and the monotonic deadline too: after a pause the clock says "lost"
    # before the renewing task has had a turn to notice.
    while lease.held() and not lease.lost.is_set():
        try:
            async with asyncio.timeout(poll_s):
                await lease.lost.wait()
        except TimeoutError:
            pass


Handler = Callable[[OutboxEntry], Awaitable[dict[str, Any]]]
STANDBY = "standby"  # a singleton's state on a node that does not hold its lease


class Cluster:
    """This node's leases and the wrappers the composition root puts around singleton
    loops, their health states and the outbox handlers."""

    def __init__(self, store: LeaseStore, ttl_s: float) -> None:
        self._store = store
        self.ttl_s = ttl_s
        self.leases: dict[str, Lease] = {}

    def lease(self, name: str) -> Lease:
        """The lease of that name (made on first use)."""
        if name not in self.leases:
            self.leases[name] = Lease(self._store, name, self.ttl_s)
        return self.leases[name]

    def state(self, name: str, inner: Callable[[], str]) -> Callable[[], str]:
        """A singleton's health state: its own while held here, "standby" otherwise."""
        lease = self.lease(name)
        return lambda: inner() if lease.held() else STANDBY

    def connected(self, name: str, inner: Callable[[], bool]) -> Callable[[], bool]:
        """A singleton link's connection as the outbox's gate sees it: its own while held
        here; up otherwise (its kinds are left to the node that holds it, never claimed
        here), so a standby node does not report that link as down."""
        lease = self.lease(name)
        return lambda: inner() if lease.held() else True

    def fenced(self, handlers: Mapping[OutboxKind, Handler]) -> dict[OutboxKind, Handler]:
        """Each handler checks, right before acting, that this node's claim on the entry
        still holds; a node that lost it (paused, cut off) does nothing and the entry's
        outcome is not recorded (the store refuses a stale token)."""

        def wrap(handler: Handler) -> Handler:
            async def checked(entry: OutboxEntry) -> dict[str, Any]:
                if not await self._store.claim_valid(entry.id):
                    raise TransientError("outbox claim lost to another node")
                return await handler(entry)

            return checked

        return {kind: wrap(h) for kind, h in handlers.items()}
