"""The durable store as the event loop sees it: one SQLite connection driven by one thread.

All writes are serialised on that thread, so the pipeline's read-decide-write steps never
race. Messages accepted by intake are committed in groups: while one commit is on its way
to disk, newly arrived messages queue up and share the next commit (and its fsync). A
caller is answered only after its own message is on disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

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
    Work,
)
from gateway.ports import StoreClosed
from gateway.store import (
    db,
    inbox,
    incidents,
    outbox,
    reminders,
    retention,
    schema,
)
from gateway.store.sla_index import SQLITE_INDEX

T = TypeVar("T")


class SqliteStore:
    """The Store port on SQLite: an async facade over the table modules, with group commit
    for intake."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._conn: sqlite3.Connection | None = None
        self._pending: list[tuple[NewMessage, asyncio.Future[Accepted]]] = []
        self._flush_task: asyncio.Task[None] | None = None
        self._closed = False

    async def open(self) -> None:
        """Create the folder and the database if needed, and migrate the schema."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        self._conn = await self._run(self._connect)

    def _connect(self) -> sqlite3.Connection:
        conn = schema.connect(str(self.path))
        schema.migrate(conn)
        return conn

    async def close(self) -> None:
        """Fail queued accepts, wait for the thread, close the connection."""
        if self._flush_task is not None:
            await self._flush_task
        self._closed = True
        for _, fut in self._pending:
            if not fut.done():
                fut.set_exception(StoreClosed("store closed"))
        self._pending.clear()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await self._run(conn.close)
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._conn is None or self._closed:
            raise StoreClosed("store closed")
        return await self._run(fn, self._conn, *args)

    # -- intake -----------------------------------------------------------------------------
    async def accept(self, message: NewMessage, timeout_s: float | None = None) -> Accepted:
        """Durably store one message; returns once it is committed (group commit).

        With `timeout_s`, a message still queued when the time is up is withdrawn and
        TimeoutError raised: it will never be committed, so the caller may say 4xx. One
        whose commit is already under way waits for that commit's outcome instead
        (bounded by SQLite's busy timeout), so a failure answer never hides a commit."""
        if self._closed:
            raise StoreClosed("store closed")
        fut: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
        self._pending.append((message, fut))
        if self._flush_task is None or self._flush_task.done():
            # Owned by the store and awaited by close(); it ends when the queue is empty.
            # A task (not the caller) drains the queue, so a client that hangs up mid-commit
            # cannot strand the messages of the others.
            self._flush_task = asyncio.get_running_loop().create_task(self._flush())
        if timeout_s is None:
            return await fut
        timer = asyncio.get_running_loop().call_later(timeout_s, self._withdraw, fut)
        try:
            return await fut
        finally:
            timer.cancel()

    def _withdraw(self, fut: asyncio.Future[Accepted]) -> None:
        # Time is up: a message still queued is taken out and will never be committed.
        # One already in a commit is left to it; its waiter gets the commit's outcome.
        queued = [item for item in self._pending if item[1] is fut]
        if queued and not fut.done():
            self._pending.remove(queued[0])
            fut.set_exception(TimeoutError("not committed in time"))

    async def _flush(self) -> None:
        # Commit everything queued, then whatever queued up meanwhile, until empty.
        while self._pending and not self._closed:
            # One turn of the event loop first: the sessions it serves add their messages
            # to this commit (about 1.5x larger groups under load, so fewer fsyncs).
            await asyncio.sleep(0)
            batch, self._pending = self._pending, []
            await self._commit(batch)

    async def _commit(self, batch: list[tuple[NewMessage, asyncio.Future[Accepted]]]) -> None:
        try:
            results = await self._call(inbox.accept_many, [m for m, _ in batch])
        except Exception as exc:  # every waiter gets the failure; intake answers 451
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (_, fut), result in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(result)

    # -- pipeline ---------------------------------------------------------------------------
    async def pending_inbox(self, limit: int = 64, max_bytes: int | None = None) -> list[InboxRow]:
        """Accepted messages waiting to be processed, oldest first (at most `max_bytes` of
        raw content, but at least one message)."""
        return await self._call(inbox.pending_inbox, limit, max_bytes)

    async def process(self, batch: Sequence[Work], now: datetime) -> list[Plan]:
        """Thread lookup, plan and apply for a batch, in one transaction (inbox.process)."""
        return await self._call(inbox.process, batch, now)

    # -- outbox -----------------------------------------------------------------------------
    async def due_outbox(
        self, now: datetime, limit: int, skip: Collection[str] = ()
    ) -> list[OutboxEntry]:
        """Entries due for an attempt (none of the `skip` kinds)."""
        return await self._call(outbox.due_outbox, now, limit, skip)

    async def next_outbox_due(self, skip: Collection[str] = ()) -> datetime | None:
        """When the next pending entry (none of the `skip` kinds) is due."""
        return await self._call(outbox.next_outbox_due, skip)

    async def settle_outbox(self, attempts: Sequence[Attempt], now: datetime) -> None:
        """Record a round of delivery attempts and their effects, atomically."""
        await self._call(outbox.settle_outbox, attempts, now)

    # -- SLA scheduler ----------------------------------------------------------------------
    async def fire_sla(
        self, plan: Planner, next_due: NextDue, now: datetime, limit: int
    ) -> tuple[list[Due], datetime | None]:
        """Fire the due SLA items of the incidents the index says are due, exactly once
        each, and index their next times (gateway.store.reminders.fire_due)."""
        return await self._call(reminders.fire_due, plan, next_due, now, limit)

    async def fire_digest(
        self, plan: Planner, since: datetime | None, until: datetime, now: datetime
    ) -> list[Due]:
        """Fire the out-of-hours digest once (gateway.store.reminders.fire_digest)."""
        return await self._call(reminders.fire_digest, plan, since, until, now)

    async def replan_sla(self) -> int:
        """Mark every open incident for re-planning by the next SLA round."""
        return await self._call(reminders.replan_all)

    async def sla_schedule(self) -> dict[int, datetime | None]:
        """Each indexed incident's next SLA due time (None: to be re-planned)."""
        return await self._call(SQLITE_INDEX.schedule)

    # -- reads ------------------------------------------------------------------------------
    async def incident(self, incident_id: int) -> Incident | None:
        """One incident with reporters and timeline."""
        return await self._call(incidents.load_incident, incident_id)

    async def chat_root(self, incident_id: int) -> str | None:
        """The chat event that roots an incident's thread, once announced."""
        return await self._call(incidents.chat_root, incident_id)

    async def ticket(self, incident_id: int) -> TicketRow | None:
        """The incident's recorded ticket (backend, external id, link), if created yet."""
        return await self._call(incidents.ticket, incident_id)

    async def statuspage(self, incident_id: int) -> PageRow | None:
        """The incident's Statuspage incident, if one was opened."""
        return await self._call(incidents.statuspage, incident_id)

    async def incidents(self, *, open_only: bool = False) -> list[Incident]:
        """All incidents, or the open ones (newest first)."""
        return await self._call(lambda c: incidents.list_incidents(c, open_only=open_only))

    async def sla_snapshot(self) -> tuple[list[Incident], set[tuple[str, str, str]]]:
        """The open incidents (no timelines, read in bulk) and the keys (subject, kind,
        due_at) of every SLA item already fired, for the scheduler's look-ahead."""
        return await self._call(reminders.snapshot)

    async def kv_get(self, key: str) -> str | None:
        """A persisted small value."""
        return await self._call(db.kv_get, key)

    async def kv_set(self, key: str, value: str) -> None:
        """Persist a small value durably."""
        await self._call(db.kv_set, key, value)

    async def outbox_rows(self, state: str | None = None) -> list[dict[str, Any]]:
        """Outbox entries for operators."""
        return await self._call(outbox.outbox_rows, state)

    async def queue_stats(self) -> QueueStats:
        """Inbox and outbox depth, read-only (health checks and metrics)."""
        return await self._call(outbox.queue_stats)

    async def prune_canaries(self, before: datetime) -> int:
        """Delete the self-test's rows processed before `before` (gateway.store.retention)."""
        return await self._call(retention.prune_canaries, before)
