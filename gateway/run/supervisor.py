"""Supervision of the daemon's long-running tasks: none may end without the daemon noticing.

A *link* task (an IMAP intake, the Matrix sync loop) is restartable: if it returns or
raises while the daemon is not stopping, that is logged at error level, the component is
marked `failed` (so /healthz turns unhealthy), and it is started again after a backoff
that doubles from `initial_s` to `max_s` (reset after a run longer than `max_s`). An
*essential* task (the inbox and outbox workers, the service watch, reloads) cannot be
restarted in place: if one ends, the daemon is told to stop and exits non-zero, so the
service manager restarts it (`Restart=on-failure`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from gateway.run import metrics

log = structlog.get_logger("gateway.run.supervisor")


class Link(Protocol):
    """A restartable component: a run loop and the state health shows."""

    state: str

    def run(self) -> Awaitable[None]: ...


class Supervisor:
    """Watches every long-running task of one daemon run."""

    def __init__(
        self,
        stopping: Callable[[], bool],
        request_stop: Callable[[], None],
        initial_s: float = 1.0,
        max_s: float = 60.0,
    ) -> None:
        self._stopping = stopping
        self._request_stop = request_stop
        self._initial_s, self._max_s = initial_s, max_s
        self.restarts: dict[str, int] = {}
        self.fatal: str | None = None  # why the daemon was stopped, if a task could not go on

    async def link(self, name: str, part: Link) -> None:
        """Run `part` until the daemon stops, restarting it whenever it ends early."""
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            started = loop.time()
            reason = await self._outcome(part.run())
            if self._stopping():
                return
            failures = 1 if loop.time() - started > self._max_s else failures + 1
            delay = min(self._max_s, self._initial_s * 2.0 ** (failures - 1))
            part.state = "failed"
            self.restarts[name] = self.restarts.get(name, 0) + 1
            metrics.RECONNECTS.inc(component=name)
            log.error(
                "link.task_ended", component=name, reason=reason, restart_in_s=round(delay, 2)
            )
            await asyncio.sleep(delay)
            log.info("link.task_restarted", component=name)

    async def essential(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run a task that must live as long as the daemon; stop the daemon if it ends."""
        reason = await self._outcome(run())
        if self._stopping():
            return
        self.fatal = f"{name} {reason}"
        log.critical("gateway.task_ended", component=name, reason=reason)
        self._request_stop()

    async def _outcome(self, run: Awaitable[None]) -> str:
        """How a run ended ("returned", "raised X"); re-raises our own cancellation."""
        try:
            await run
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._stopping() or task is None or task.cancelling():
                raise
            return "raised a stray CancelledError"
        except Exception as exc:
            log.exception("link.task_crashed")
            return f"raised {type(exc).__name__}"
        return "returned"


class GatewayFailed(RuntimeError):
    """The daemon stopped because a task it cannot run without ended (exit non-zero)."""
