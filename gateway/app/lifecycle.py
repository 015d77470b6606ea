"""The run-down: stop intake, let the workers finish, drain, close every link.

Owns the order in which a stop (asked for, or a failed task) takes the daemon down:
listeners stop first (commits in flight finish), the workers and the scheduler finish what
they hold, whatever was accepted is processed and the outbox drained within
`[outbox] drain_timeout_s`, then each listener and link is closed on its own, bounded, one
failure never keeping the rest open. Nothing accepted is lost: what is left stays in the
store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from adapters.smtp_intake import SmtpIntakeServer
from gateway.deliver.outbox import OutboxWorker
from gateway.run.scheduler import Scheduler
from gateway.run.worker import InboxWorker

if TYPE_CHECKING:
    from adapters.alerts_http import AlertWebhookServer
    from adapters.http_status import StatusServer
    from adapters.imap_intake import ImapIntake
    from adapters.matrix import MatrixLink

log = structlog.get_logger("gateway.app")


@dataclass
class Edges:
    """The listeners and links started while serving, closed in reverse in every case."""

    smtp: SmtpIntakeServer | None = None
    alerts: AlertWebhookServer | None = None
    status: StatusServer | None = None
    link: MatrixLink | None = None
    imap: list[ImapIntake] = field(default_factory=list)


async def start_listeners(
    smtp: SmtpIntakeServer | None, alerts: AlertWebhookServer | None, edges: Edges
) -> None:
    """Open the SMTP and webhook listeners (each recorded for close_edges if start fails)."""
    if smtp is not None:
        edges.smtp = smtp
        await smtp.start()
    if alerts is not None:
        edges.alerts = alerts
        await alerts.start()


async def stop_listeners(edges: Edges) -> None:
    """Stop accepting mail and webhooks (stopped here, so close_edges leaves them alone)."""
    smtp, alerts = edges.smtp, edges.alerts
    edges.smtp = edges.alerts = None
    if smtp is not None:
        await smtp.stop()
    if alerts is not None:
        await alerts.stop()


async def close_edges(edges: Edges, timeout_s: float) -> None:
    """Stop listening and close the links, each bounded and each on its own: one that
    fails is logged and the rest are still closed."""
    closers: list[tuple[str, Callable[[], Awaitable[None]]]] = []
    if edges.smtp is not None:
        closers.append(("smtp", edges.smtp.stop))
    if edges.alerts is not None:
        closers.append(("alerts", edges.alerts.stop))
    if edges.status is not None:
        closers.append(("status", edges.status.stop))
    if edges.link is not None:
        closers.append(("matrix", edges.link.close))
    closers += [(f"imap:{box.name}", box.close) for box in edges.imap]
    for name, close in closers:
        try:
            async with asyncio.timeout(timeout_s):
                await close()
        except Exception as exc:  # closing the rest matters more
            log.error("gateway.close_failed", component=name, error=type(exc).__name__)


async def wind_down(
    processing: tuple[InboxWorker, OutboxWorker, Scheduler],
    tasks: list[asyncio.Task[None]],
    timers: list[asyncio.Task[None]],
    timeout_s: float,
) -> None:
    """Let the workers (the first two tasks) and the scheduler finish what they hold — a
    delivered page is recorded before they return — stop the rest, then drain."""
    worker, outbox, scheduler = processing
    worker.stop()
    outbox.stop()
    scheduler.stop()
    for task in tasks[2:]:
        task.cancel()
    _, late = await asyncio.wait([*tasks, *timers], timeout=timeout_s)
    for task in late:
        task.cancel()
    await _drain(worker, outbox, timeout_s)


async def _drain(worker: InboxWorker, outbox: OutboxWorker, timeout_s: float) -> None:
    """Process and deliver what is pending, within `timeout_s` each. A store that does not
    answer (a database down) ends the drain with a warning: what is pending is durable
    and waits for the next start, and a requested stop still ends cleanly."""
    try:
        async with asyncio.timeout(timeout_s):
            while await worker.process_pending():
                pass
        if not await outbox.drain(timeout_s):
            log.warning("outbox.drain_incomplete")
    except TimeoutError:
        log.warning("inbox.drain_incomplete")
    except Exception as exc:  # the store is unreachable: nothing more can be recorded now
        log.warning("gateway.drain_skipped", error=type(exc).__name__)
