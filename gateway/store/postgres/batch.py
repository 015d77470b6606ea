"""Processing a batch of accepted messages on PostgreSQL in few round trips.

The whole batch is one transaction under the write lock (gateway.store.postgres.inbox), in
pipeline mode (gateway.store.postgres.trips): the writes of a plan go without waiting for
an answer, and only the reads the planner makes while it decides (the message's thread,
its sender's history, the open alerts, the answer limit) wait, for everything sent before
them. Which messages of the batch are still pending and the next incident number are read
once, with the lock; the number is then counted on as incidents are opened. Each message
is a savepoint, sent along with its writes: a message whose planning fails is rolled back
to it and falls back alone (rescue plan, then the plain fallback), as one at a time.

A statement the database refuses shows only at the next read or at the COMMIT, perhaps
during a later message. Then the whole batch is rolled back and `stepwise` (the caller's
message-at-a-time path, each savepoint waited for) processes it again, which gives each
message its own outcome. Nothing of the first try is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import psycopg
import structlog

from gateway.domain import Digest, Plan, PlanContext, SenderHistory, ThreadKeys, Work
from gateway.store.db import ts
from gateway.store.postgres import trips
from gateway.store.postgres.incidents import (
    apply_plan,
    find_thread,
    list_incidents,
    load_incident,
    recent_open_incidents,
)
from gateway.store.postgres.schema import WRITE_LOCK, Conn

T = TypeVar("T")
Stepwise = Callable[[Conn, Sequence[Work], datetime], list[Plan]]
log = structlog.get_logger("gateway.store.postgres")


@dataclass(frozen=True)
class Lookups:
    """The inbox's own reads and writes a plan needs (gateway.store.postgres.inbox)."""

    history: Callable[..., SenderHistory]
    answer_fits: Callable[..., bool]
    open_alert_ids: Callable[[Conn], list[int]]
    record_digest: Callable[[Conn, int, Digest], None]


def process(
    conn: Conn, batch: Sequence[Work], now: datetime, lookups: Lookups, stepwise: Stepwise
) -> list[Plan]:
    """Each message's thread, plan and effects in one transaction, in few round trips;
    the batch again through `stepwise` if the database refused a statement."""
    try:
        with trips.transaction(conn):
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            row = conn.execute(
                "SELECT (SELECT COALESCE(MAX(id), 0) + 1 FROM incidents),"
                " ARRAY(SELECT id FROM inbox WHERE id = ANY(%s) AND state = 'pending')",
                ([w.inbox_id for w in batch],),
            ).fetchone()
            if row is None:
                raise RuntimeError("a SELECT without FROM returns a row")
            run = _Batch(conn, now, int(row[0]), {int(i) for i in row[1]}, lookups)
            return [run.one(work) for work in batch]
    except psycopg.OperationalError:
        raise  # the connection is gone: nothing of the batch is kept
    except psycopg.Error as exc:
        log.warning("inbox.batch_retried", error=type(exc).__name__, messages=len(batch))
        return stepwise(conn, batch, now)


class _Batch:
    """The messages of one batch, planned and applied one after another."""

    def __init__(
        self, conn: Conn, now: datetime, next_id: int, pending: set[int], lookups: Lookups
    ) -> None:
        self.conn = conn
        self.now = now
        self.next_id = next_id  # what MAX(id) + 1 would say now: counted on locally
        self.pending = pending
        self.refused: list[psycopg.Error] = []
        self._lookups = lookups
        self._alerts: list[int] | None = None  # the open alert incidents, until one changes

    def one(self, work: Work) -> Plan:
        """One message under its savepoint; its fallback if planning fails."""
        if work.inbox_id not in self.pending:
            return Plan(outcome="already processed")
        self.conn.execute("SAVEPOINT gw_message")
        try:
            plan = self._apply(work.inbox_id, work.keys, work.make_plan)
        except Exception as exc:
            self._raise_refused(exc)
            self.conn.execute("ROLLBACK TO SAVEPOINT gw_message")
            plan = self._fall_back(work, f"processing failed: {type(exc).__name__}")
        self.conn.execute("RELEASE SAVEPOINT gw_message")
        return plan

    def _fall_back(self, work: Work, problem: str) -> Plan:
        """The rescue plan (emergency mail: a P1 for a person), else the plain fallback."""
        if work.rescue is not None:
            rescue = work.rescue
            try:
                return self._apply(work.inbox_id, None, lambda ctx: rescue(problem, ctx))
            except Exception as exc:  # the rescue failed as well: the plain fallback
                self._raise_refused(exc)
                self.conn.execute("ROLLBACK TO SAVEPOINT gw_message")
                log.error("inbox.rescue_failed", inbox_id=work.inbox_id, error=type(exc).__name__)
        fallback = work.fallback(problem)
        return self._apply(work.inbox_id, None, lambda _ctx: fallback)

    def _raise_refused(self, exc: Exception) -> None:
        """A database error is the batch's, not the message's: it is redone stepwise."""
        if isinstance(exc, psycopg.Error):
            raise exc
        if self.refused:
            raise self.refused[0]

    def _guard(self, fn: Callable[..., T]) -> Callable[..., T]:
        """A lookup for the planner that remembers a database error even if the planner
        catches it (the batch must then be redone, whatever the plan says)."""

        def guarded(*args: Any) -> T:
            try:
                return fn(*args)
            except psycopg.Error as exc:
                self.refused.append(exc)
                raise

        return guarded

    def _alert_ids(self) -> list[int]:
        """The open alert incidents, read once per batch: only a plan that opens an alert
        incident or changes an incident's status, flags or merging changes them (under the
        write lock nothing else does), and such a plan makes them be read again."""
        if self._alerts is None:
            self._alerts = self._lookups.open_alert_ids(self.conn)
        return list(self._alerts)

    def _apply(
        self, inbox_id: int, keys: ThreadKeys | None, make_plan: Callable[[PlanContext], Plan]
    ) -> Plan:
        conn, h = self.conn, self._lookups
        context = PlanContext(
            thread=find_thread(conn, keys) if keys else None,
            next_id=self.next_id,
            find=self._guard(lambda iid: load_incident(conn, iid, with_timeline=False)),
            open_incidents=self._guard(lambda: list_incidents(conn, open_only=True)),
            history=self._guard(partial(h.history, conn, inbox_id)),
            recent_open=self._guard(partial(recent_open_incidents, conn)),
            answers=self._guard(partial(h.answer_fits, conn)),
            alert_ids=self._guard(self._alert_ids),
        )
        plan = make_plan(context)
        if self.refused:
            raise self.refused[0]
        opened = plan.new_incident is not None
        if _may_change_alerts(plan):
            self._alerts = None
        apply_plan(conn, plan, self.now, new_id=self.next_id if opened else None)
        if plan.digest is not None:
            h.record_digest(conn, inbox_id, plan.digest)
        # a held message waits apart for an operator (gateway.store.postgres.held)
        conn.execute(
            "UPDATE inbox SET state = %s, outcome = %s, processed_at = %s WHERE id = %s",
            ("held" if plan.held else "done", plan.outcome, ts(self.now), inbox_id),
        )
        if opened:
            self.next_id += 1
        self.pending.discard(inbox_id)
        return plan


_ALERT_COLUMNS = frozenset({"status", "flags", "merged_into"})


def _may_change_alerts(plan: Plan) -> bool:
    """Whether applying `plan` may change which incidents are open alerts."""
    n = plan.new_incident
    return (
        (n is not None and "alert" in n.flags)
        or bool(_ALERT_COLUMNS & set(plan.changes))
        or plan.merge_source is not None
        or plan.reopen
    )
