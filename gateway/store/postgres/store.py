"""PostgresStore: the Store port on PostgreSQL, as the event loop sees it.

psycopg 3 with its connection pool. The pure planner looks things up while it decides
(PlanContext's callbacks are plain functions), so the transactions that run it are driven
synchronously: each call borrows a pooled connection on one of the store's threads, as
SqliteStore drives its one connection on its thread. Accepted messages are committed in
groups (a caller is answered only after its own COMMIT returned); a message still queued
when its time is up is withdrawn, never committed.

Several nodes share one database: outbox entries are claimed with fencing tokens
(gateway.store.postgres.outbox), leases keep singleton work on one node
(gateway.store.postgres.leases), and processing runs under an advisory lock. `state` says
whether the database answers; `watch` checks it with capped backoff while it does not.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
import weakref
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

import psycopg
import structlog
from psycopg_pool import ConnectionPool, PoolTimeout

from gateway.domain import (
    Accepted,
    Attempt,
    Due,
    InboxRow,
    Incident,
    NewMessage,
    NextDue,
    OutboxEntry,
    PageRow,
    Plan,
    Planner,
    QueueStats,
    TicketRow,
    TimelineEvent,
    Work,
)
from gateway.ports import LinkState, StoreClosed, StoreUnavailable
from gateway.run.supervise import backoff_s
from gateway.store.dialect import POSTGRES
from gateway.store.postgres import (
    crypto_files,
    inbox,
    incidents,
    leases,
    outbox,
    reminders,
    schema,
    sla_index,
)
from gateway.store.retention import prune_canaries

T = TypeVar("T")
log = structlog.get_logger("gateway.store.postgres")

# Errors that mean "the database is not answering" (not a bug in our SQL).
UNREACHABLE = (psycopg.OperationalError, PoolTimeout)
# A pooled connection idle for longer is checked with a round trip before use (the TCP
# keepalives below would have noticed a silent peer within about this long).
CHECK_IDLE_S = 5.0
# An outbox claim counts as held by this node's monotonic clock until this share of
# `claim_s` has passed since the claim was asked for (as leases do: gateway.run.cluster);
# after that, the database is asked.
CLAIM_SURE = 0.8


class DurabilityError(RuntimeError):
    """The server would answer COMMIT before the commit is on disk."""


def node_name(prefix: str | None = None) -> str:
    """This process's name in leases and claims: unique even for two daemons on one host."""
    return f"{prefix or socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class PostgresStore:
    """The Store port on PostgreSQL (see the module docstring)."""

    def __init__(
        self,
        dsn: str,
        password: str | None = None,
        *,
        node: str | None = None,
        pool_size: int = 8,
        connect_timeout_s: float = 5.0,
        claim_s: float = 90.0,
    ) -> None:
        self.node = node or node_name()
        self.claim_s = claim_s  # an outbox claim outlives the longest attempt
        self._timeout_s = connect_timeout_s
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(1, round(connect_timeout_s)),
            "application_name": "chatops-gateway",
            # A dead peer (a partition, a crashed host) is noticed in seconds, not hours.
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 2,
            "tcp_user_timeout": int(connect_timeout_s * 2000),
        }
        if password is not None:
            kwargs["password"] = password
        self._dsn, self._kwargs = dsn, kwargs
        self._pool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=pool_size,
            kwargs=kwargs,
            open=False,
            timeout=connect_timeout_s,
            check=self._check,
            reset=self._returned,
            reconnect_timeout=0,
            name="gateway",
        )
        self._executor = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="pgstore")
        self._pending: list[tuple[NewMessage, asyncio.Future[Accepted]]] = []
        self._flush_task: asyncio.Task[None] | None = None
        # outbox id -> this node's claim token, and until when (monotonic) it surely holds
        self._claims: dict[int, tuple[int, float]] = {}
        self._idle_since: weakref.WeakKeyDictionary[schema.Conn, float] = (
            weakref.WeakKeyDictionary()
        )
        self._closed = False
        self._opened = False
        self._state = LinkState.STARTING
        # Kinds this node cannot deliver right now (chat, while another node holds the
        # Matrix lease): left for the node that can.
        self.skip_kinds: Callable[[], frozenset[str]] = frozenset
        # Whether accepts notify the other nodes: while this node processes the inbox
        # itself, its intake wakes its worker and nobody else needs to hear (a NOTIFY
        # serialises the commits of every transaction that sends one).
        self.notify_accepts: Callable[[], bool] = lambda: True

    @property
    def state(self) -> str:
        """ "connected", or "failed" while the database does not answer (health: unhealthy)."""
        return self._state

    # -- lifecycle --------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect, check the durability setting, migrate the schema."""
        # The pool logs each failed reconnection as a warning; the store reports the outage
        # once (store.unreachable) and /healthz shows it.
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
        await self._run(self._pool.open, True, self._timeout_s)
        self._opened = True
        await self._call(self._prepare)

    @staticmethod
    def _prepare(conn: schema.Conn) -> None:
        row = conn.execute("SHOW synchronous_commit").fetchone()
        if row is not None and row[0] == "off":
            raise DurabilityError(
                "synchronous_commit is off: a COMMIT would return before the "
                "data is on disk, and 250 must mean kept"
            )
        schema.migrate(conn)

    async def close(self) -> None:
        """Fail queued accepts, finish the commit under way, close the pool."""
        if self._flush_task is not None:
            await self._flush_task
        self._closed = True
        for _, fut in self._pending:
            if not fut.done():
                fut.set_exception(StoreClosed("store closed"))
        self._pending.clear()
        # Also after a failed open: the pool's workers may be retrying in the background.
        await self._run(self._pool.close)
        self._executor.shutdown(wait=True)

    def _returned(self, conn: schema.Conn) -> None:
        self._idle_since[conn] = time.monotonic()

    def _check(self, conn: schema.Conn) -> None:
        """Before a pooled connection is used: a round trip only for one idle for a while.
        One used a moment ago is checked locally: whatever the server sent meanwhile is
        read, and a server that shut down, restarted or crashed has closed the connection
        (the keepalives notice a silent peer). A round trip per use would double the round
        trips of the short transactions the store makes."""
        idle = self._idle_since.get(conn)
        if idle is None or time.monotonic() - idle > CHECK_IDLE_S:
            ConnectionPool.check_connection(conn)
            return
        # The first read takes what the server sent (a closing server's FATAL message), the
        # second sees the end of the stream behind it; either raises once it is closed.
        conn.pgconn.consume_input()
        conn.pgconn.consume_input()
        if conn.pgconn.status != psycopg.pq.ConnStatus.OK or conn.broken:
            raise psycopg.OperationalError("the connection is closed")

    async def watch(self, interval_s: float = 2.0, backoff_max_s: float = 10.0) -> None:
        """Check the database every `interval_s`; while it does not answer, again after a
        capped, jittered backoff (the pool reconnects on the next use that succeeds)."""
        failures = 0
        while not self._closed:
            try:
                await self._call(lambda conn: conn.execute("SELECT 1").fetchone())
            except StoreUnavailable:
                failures += 1
                await asyncio.sleep(backoff_s(failures - 1, 0.25, backoff_max_s))
                continue
            except StoreClosed:
                return
            failures = 0
            await asyncio.sleep(interval_s)

    async def listen(self, wake: Callable[[], None], backoff_max_s: float = 10.0) -> None:
        """Call `wake` whenever another node committed accepted messages: each accept
        notifies `inbox.INBOX_CHANNEL` in its commit, with the node's name (this node's own
        intake wakes its worker itself). The node holding the inbox lease then starts on
        mail another node took in at once, not at its next poll.
        A connection of its own; lost, it is made again with capped, jittered backoff, and
        `wake` is called on every (re)connection for what came in meanwhile."""
        failures = 0
        while not self._closed:
            try:
                conn = await psycopg.AsyncConnection.connect(self._dsn, **self._kwargs)
            except psycopg.Error:
                failures += 1
                await asyncio.sleep(backoff_s(failures - 1, 0.25, backoff_max_s))
                continue
            try:
                await conn.execute(f"LISTEN {inbox.INBOX_CHANNEL}")
                failures = 0
                wake()
                async for note in conn.notifies():
                    if note.payload != self.node:
                        wake()
            except psycopg.Error as exc:  # the worker's poll still finds the mail meanwhile
                log.info("store.listen_lost", error=type(exc).__name__)
                failures += 1
                await asyncio.sleep(backoff_s(failures - 1, 0.25, backoff_max_s))
            finally:
                await conn.close()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _with_conn(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            with self._pool.connection() as conn:
                result = fn(conn, *args)
        except UNREACHABLE as exc:
            self._down()
            raise StoreUnavailable(f"the database did not answer ({type(exc).__name__})") from exc
        self._up()
        return result

    def _down(self) -> None:
        if self._state != LinkState.FAILED:
            log.error("store.unreachable", backend="postgresql")
        self._state = LinkState.FAILED

    def _up(self) -> None:
        if self._state != LinkState.CONNECTED:
            log.info("store.connected", backend="postgresql")
        self._state = LinkState.CONNECTED

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed or not self._opened:
            raise StoreClosed("store closed")
        return await self._run(self._with_conn, fn, *args)

    # -- intake -----------------------------------------------------------------------------
    async def accept(self, message: NewMessage, timeout_s: float | None = None) -> Accepted:
        """Durably store one message; returns once its group's COMMIT returned. With
        `timeout_s`, a message still queued when the time is up is withdrawn (never
        committed) and TimeoutError raised; one in a commit gets that commit's outcome."""
        if self._closed:
            raise StoreClosed("store closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Accepted] = loop.create_future()
        self._pending.append((message, fut))
        if self._flush_task is None or self._flush_task.done():
            # Owned by the store and awaited by close(); it ends when the queue is empty.
            self._flush_task = loop.create_task(self._flush())
        if timeout_s is None:
            return await fut
        timer = loop.call_later(timeout_s, self._withdraw, fut)
        try:
            return await fut
        finally:
            timer.cancel()

    def _withdraw(self, fut: asyncio.Future[Accepted]) -> None:
        queued = [item for item in self._pending if item[1] is fut]
        if queued and not fut.done():
            self._pending.remove(queued[0])
            fut.set_exception(TimeoutError("not committed in time"))

    async def _flush(self) -> None:
        while self._pending and not self._closed:
            await asyncio.sleep(0)  # let the sessions being served join this commit
            batch, self._pending = self._pending, []
            try:
                results = await self._call(
                    inbox.accept_many,
                    [m for m, _ in batch],
                    self.node if self.notify_accepts() else None,
                )
            except Exception as exc:  # every waiter gets the failure; intake answers 451
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)

    # -- pipeline ---------------------------------------------------------------------------
    async def pending_inbox(self, limit: int = 64, max_bytes: int | None = None) -> list[InboxRow]:
        """Accepted messages waiting to be processed, oldest first (at most `max_bytes` of
        raw content, but at least one message)."""
        return await self._call(inbox.pending_inbox, limit, max_bytes)

    async def process(self, batch: Sequence[Work], now: datetime) -> list[Plan]:
        """Thread lookup, plan and apply for a batch, in one transaction."""
        return await self._call(inbox.process, batch, now)

    # -- outbox -----------------------------------------------------------------------------
    async def due_outbox(
        self, now: datetime, limit: int, skip: Collection[str] = ()
    ) -> list[OutboxEntry]:
        """Claim the entries due for an attempt (none another node holds a claim on, none of
        the `skip` kinds whose link is down, none this node leaves to another)."""
        asked = time.monotonic()
        claimed = await self._call(
            outbox.claim_due,
            now,
            limit,
            self.node,
            self.claim_s,
            sorted({*self.skip_kinds(), *skip}),
        )
        sure_until = asked + self.claim_s * CLAIM_SURE
        for entry, token in claimed:
            self._claims[entry.id] = (token, sure_until)
        return [entry for entry, _ in claimed]

    async def claim_valid(self, outbox_id: int, margin_s: float = 1.0) -> bool:
        """Whether this node still holds its claim on an entry (checked before its effect).
        Well within the claim's time by this node's monotonic clock, which runs on while
        the process is paused, it does: nothing takes a claim from its holder before it
        expires. Nearer the end, the database is asked."""
        claim = self._claims.get(outbox_id)
        if claim is None:
            return False
        token, sure_until = claim
        if time.monotonic() + margin_s < sure_until:
            return True
        return await self._call(outbox.claim_valid, outbox_id, token, margin_s)

    async def next_outbox_due(self, skip: Collection[str] = ()) -> datetime | None:
        """When the next pending entry (none of the `skip` kinds) is due."""
        return await self._call(
            outbox.next_outbox_due, self.node, sorted({*self.skip_kinds(), *skip})
        )

    async def settle_outbox(self, attempts: Sequence[Attempt], now: datetime) -> None:
        """Record a round of attempts; one whose claim was lost records nothing."""
        tokens = {
            a.entry.id: self._claims[a.entry.id][0] for a in attempts if a.entry.id in self._claims
        }
        await self._call(outbox.settle, attempts, tokens, now)
        for a in attempts:
            self._claims.pop(a.entry.id, None)

    async def canary_through(self, nonce: str) -> bool:
        """Whether a node delivered the self-test's entry with this nonce (gateway.run.canary:
        the node that sent it waits for it, another node may have claimed it)."""
        return await self._call(outbox.canary_through, nonce)

    async def retry_dead(
        self, outbox_id: int, now: datetime, note: Callable[[int, str, datetime], TimelineEvent]
    ) -> str | None:
        """Send a dead entry back for delivery (None), or say why not."""
        return await self._call(outbox.retry_dead, outbox_id, now, note)

    # -- SLA scheduler ----------------------------------------------------------------------
    async def fire_sla(
        self, plan: Planner, next_due: NextDue, now: datetime, limit: int
    ) -> tuple[list[Due], datetime | None]:
        """Fire the due SLA items of the incidents the index says are due, exactly once
        each, and index their next times."""
        return await self._call(reminders.fire_due, plan, next_due, now, limit)

    async def fire_digest(
        self, plan: Planner, since: datetime | None, until: datetime, now: datetime
    ) -> list[Due]:
        """Fire the out-of-hours digest once."""
        return await self._call(reminders.fire_digest, plan, since, until, now)

    async def replan_sla(self) -> int:
        """Mark every open incident for re-planning by the next SLA round."""
        return await self._call(reminders.replan_all)

    async def sla_schedule(self) -> dict[int, datetime | None]:
        """Each indexed incident's next SLA due time (None: to be re-planned)."""
        return await self._call(sla_index.schedule)

    async def sla_snapshot(self) -> tuple[list[Incident], set[tuple[str, str, str]]]:
        """The open incidents and the keys of the SLA items already fired."""
        return await self._call(reminders.snapshot)

    # -- leases -----------------------------------------------------------------------------
    async def acquire_lease(self, name: str, ttl_s: float) -> leases.Grant | None:
        """Take or renew a lease for this node; None while another node holds it."""
        return await self._call(leases.acquire, name, self.node, ttl_s)

    async def release_lease(self, name: str, token: int) -> None:
        """Give a lease up."""
        await self._call(leases.release, name, self.node, token)

    async def lease_holders(self) -> list[tuple[str, str, int, float]]:
        """Every lease: name, holder, token, seconds left."""
        return await self._call(leases.holders)

    async def load_crypto_files(self) -> dict[str, bytes]:
        """The Matrix bot device's crypto store as last saved (gateway.store.postgres.
        crypto_files)."""
        return await self._call(crypto_files.load)

    async def save_crypto_files(self, token: int, files: dict[str, bytes]) -> bool:
        """Save changed files of the crypto store while this node holds the `matrix` lease
        with `token`; False when it no longer does."""
        return await self._call(crypto_files.save, self.node, token, files)

    # -- reads ------------------------------------------------------------------------------
    async def incident(self, incident_id: int) -> Incident | None:
        """One incident with reporters and timeline."""
        return await self._call(incidents.load_incident, incident_id)

    async def incidents(self, *, open_only: bool = False) -> list[Incident]:
        """All incidents, or the open ones (newest first)."""
        return await self._call(lambda c: incidents.list_incidents(c, open_only=open_only))

    async def chat_root(self, incident_id: int) -> str | None:
        """The chat event that roots an incident's thread, once announced."""
        return await self._call(incidents.chat_root, incident_id)

    async def ticket(self, incident_id: int) -> TicketRow | None:
        """The incident's recorded ticket, if created yet."""
        return await self._call(incidents.ticket, incident_id)

    async def statuspage(self, incident_id: int) -> PageRow | None:
        """The incident's Statuspage incident, if one was opened."""
        return await self._call(incidents.statuspage, incident_id)

    async def kv_get(self, key: str) -> str | None:
        """A persisted small value."""
        return await self._call(reminders.kv_get, key)

    async def kv_set(self, key: str, value: str) -> None:
        """Persist a small value (committed before returning)."""
        await self._call(reminders.kv_set, key, value)

    async def outbox_rows(self, state: str | None = None) -> list[dict[str, Any]]:
        """Outbox entries for operators."""
        return await self._call(outbox.outbox_rows, state)

    async def queue_stats(self) -> QueueStats:
        """Inbox and outbox depth."""
        return await self._call(outbox.queue_stats)

    async def prune_canaries(self, before: datetime) -> int:
        """Delete the self-test's rows processed before `before` (any node's)."""
        return await self._call(prune_canaries, before, POSTGRES)
