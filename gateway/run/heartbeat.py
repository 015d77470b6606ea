"""The heartbeat: a dead man's switch for an outside monitor.

Every `interval_s` the daemon asks itself for its health report; only when it is healthy
(every configured intake and egress up, the canary through, nothing stuck) does it ping the
monitor's URL. The monitor pages when the pings stop — a dead host, a hung or crashed
daemon, a link down for longer than `[health] down_grace_s` — which no check inside the
daemon can do. With a `fail_url`, an unhealthy daemon pings that instead, so the monitor
need not wait out its grace period.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog

from gateway.ports import PermanentError, TransientError

log = structlog.get_logger("gateway.run.heartbeat")


class Pinger(Protocol):
    """Pings the outside monitor (adapters.heartbeat_http)."""

    async def ping(self, healthy: bool, summary: str) -> bool:
        """Ping the success URL (or, when not healthy, the failure URL); False when there is
        no URL for that case. Raises TransientError/PermanentError when the ping fails."""
        ...


class Heartbeat:
    """Sends the pings; `state` is "ok", "unhealthy" (pings held back) or "unreachable"
    (the monitor did not take the last ping)."""

    def __init__(
        self, report: Callable[[], Awaitable[dict[str, Any]]], pinger: Pinger, interval_s: float
    ) -> None:
        self._report, self._pinger, self._interval_s = report, pinger, interval_s
        self.state = "starting"
        self.pings = 0
        self.held_back = 0

    async def run(self) -> None:
        """Until cancelled: one beat now, then one every `interval_s`."""
        while True:
            await self.beat()
            await asyncio.sleep(self._interval_s)

    async def beat(self) -> None:
        """Ping when healthy (else the failure URL, if any)."""
        health = await self._report()
        # Only while every configured link is up: a link reconnecting holds this beat back.
        healthy = bool(health.get("healthy")) and not health.get("down")
        summary = "; ".join(health.get("problems", [])) or (
            "reconnecting: " + ", ".join(health["down"]) if health.get("down") else "healthy"
        )
        try:
            sent = await self._pinger.ping(healthy, summary)
        except (TransientError, PermanentError) as exc:
            if self.state != "unreachable":
                log.warning("heartbeat.failed", reason=exc.reason)
            self.state = "unreachable"
            return
        if healthy:
            self.pings += 1
            if self.state != "ok":
                log.info("heartbeat.sending")
            self.state = "ok"
        else:
            self.held_back += 1
            if self.state != "unhealthy":
                log.warning("heartbeat.held_back", problems=summary, fail_ping=sent)
            self.state = "unhealthy"
