"""Running as a service: readiness, the service manager's notifications, reload, health.

`Service` knows the daemon's components (each reports a state such as listening, connected,
backing_off or bad_credentials), tells the service manager READY once none is still
starting, keeps its STATUS line current, pings its watchdog from the event loop, and serves
reloads: the configuration and rulebook are read off the loop and, when valid, swapped in;
when not, every error is logged and the running ones are kept. It also builds the health
report and metrics text the status endpoint serves.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import structlog

from gateway.config.model import Config, ConfigError
from gateway.config.warnings import config_warnings
from gateway.deliver.links import LinkGate
from gateway.domain import QueueStats
from gateway.ports import Store
from gateway.run import health, logs, metrics
from gateway.run.worker import Clock
from rules.book import Rulebook, RulebookError

log = structlog.get_logger("gateway.run.service")

Loader = Callable[[], tuple[Config, Rulebook]]
Apply = Callable[[Config, Rulebook], None]
# Sections a reload applies live; a change anywhere else is reported as needing a restart.
LIVE_SECTIONS = frozenset({"rules", "log"})


INSTANCE_KEY = "instance_id"  # this database's random id, made once (gateway.app)


def endpoint_file(config: Config) -> Path:
    """Where the running daemon writes its status endpoint's address (for `status`)."""
    return config.state_dir() / "http-endpoint"


def write_endpoint(config: Config, url: str) -> None:
    """Record the status endpoint's address for `status`, atomically: a reader sees the
    old address or the new one, never a part of it."""
    path = endpoint_file(config)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(url + "\n", encoding="utf-8")
    os.replace(partial, path)


class Notify(Protocol):
    """The service manager's side (adapters.sdnotify.Notifier)."""

    def ready(self, status: str) -> None: ...
    def status(self, status: str) -> None: ...
    def reloading(self) -> None: ...
    def stopping(self) -> None: ...
    async def run_watchdog(self) -> None: ...


class Service:
    """Lifecycle glue between the daemon, the service manager and the status endpoint."""

    def __init__(
        self, store: Store, config: Config, notify: Notify, clock: Clock, egress: dict[str, str]
    ) -> None:
        self._store = store
        self.config = config
        self._notify = notify
        self._clock = clock
        self._egress = egress
        self._states: dict[str, Callable[[], str]] = {}
        self._details: dict[str, Callable[[], str]] = {}
        self._last_status = ""
        self.gates: Sequence[LinkGate] = ()  # the outbox's egress links (gateway.deliver.links)
        self._downtime = health.Downtime()

    def add(
        self, name: str, state: Callable[[], str], detail: Callable[[], str] | None = None
    ) -> None:
        """A component whose state readiness and health depend on (`detail`: what is
        wrong, shown with a degraded state)."""
        self._states[name] = state
        if detail is not None:
            self._details[name] = detail

    def links(self) -> dict[str, str]:
        """Each egress link's state ("ok", "unreachable", "disconnected")."""
        return {gate.name: gate.state() for gate in self.gates}

    def down_for(self, states: dict[str, str]) -> dict[str, float]:
        """Record the components' and egress links' states; how long each down one has
        been down (seconds)."""
        seen = {**states, **{f"egress:{k}": v for k, v in self.links().items()}}
        return self._downtime.observe(seen, time.monotonic())

    def states(self) -> dict[str, str]:
        """Every component's current state."""
        return {name: state() for name, state in self._states.items()}

    async def announce_ready(self, settle_timeout_s: float) -> None:
        """READY=1 once no component is starting (each is up or in a reported retry
        state), or after `settle_timeout_s` with the laggards named in STATUS."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settle_timeout_s
        # Components expose a plain `.state`, not an event: poll it briefly.
        while health.STARTING in self.states().values() and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        states = self.states()
        if health.STARTING in states.values():
            log.warning("gateway.ready_while_starting", components=states)
        self._last_status = health.summary(states)
        self._notify.ready(self._last_status)

    def stopping(self) -> None:
        """STOPPING=1."""
        self._notify.stopping()

    async def watch(self, interval_s: float = 1.0) -> None:
        """Ping the watchdog and keep STATUS current, until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._notify.run_watchdog())
            while True:
                states = self.states()
                self.down_for(states)  # down links are timed from when they went down
                line = health.summary(states)
                if line != self._last_status:
                    self._last_status = line
                    self._notify.status(line)
                await asyncio.sleep(interval_s)

    # -- reload ---------------------------------------------------------------------------
    async def serve_reloads(self, wanted: asyncio.Event, load: Loader | None, apply: Apply) -> None:
        """Reload each time `wanted` is set (requests made meanwhile merge), until cancelled."""
        while True:
            await wanted.wait()
            wanted.clear()
            await self.reload(load, apply)

    async def reload(self, load: Loader | None, apply: Apply) -> bool:
        """One reload: read off the loop, apply if valid; True if applied."""
        self._notify.reloading()
        try:
            if load is None:
                raise ConfigError(["no configuration file to reload (started on defaults)"])
            config, rulebook = await asyncio.to_thread(load)
        except (ConfigError, RulebookError) as exc:
            metrics.RELOADS.inc(result="rejected")
            log.error("gateway.reload_rejected", errors=exc.errors)
            self._notify.ready(self._last_status)
            return False
        restart = sorted(
            key
            for key, value in config.model_dump().items()
            if key not in LIVE_SECTIONS and value != self.config.model_dump().get(key)
        )
        apply(config, rulebook)
        for line in config_warnings(config):  # as at start: a reload must not hide a risk
            log.warning("config.warning", problem=line)
        if config.log != self.config.log:
            logs.configure(config.log.level, config.log.format)
        self.config = self.config.model_copy(update={k: getattr(config, k) for k in LIVE_SECTIONS})
        metrics.RELOADS.inc(result="ok")
        log.info("gateway.reloaded", rules=len(rulebook.rules), needs_restart=restart)
        self._notify.ready(self._last_status)
        return True

    # -- health and metrics ---------------------------------------------------------------
    async def report(self) -> dict[str, Any]:
        """The health report (see gateway.run.health)."""
        states = self.states()
        down = self.down_for(states)
        details = {name: detail() for name, detail in self._details.items()}
        try:
            stats = await self._store.queue_stats()
        except asyncio.CancelledError:
            raise
        except Exception:  # a database server that does not answer: say so, with the rest
            report = health.report(
                states,
                {},
                QueueStats(0, 0, None, {}, 0),
                self._clock(),
                self.config.http.outbox_stuck_s,
                down_for=down,
                grace_s=self.config.health.down_grace_s,
                details=details,
            )
            report["healthy"] = False
            report["problems"].append("store: unreachable")
            return report
        report = health.report(
            states,
            health.egress_states(stats, self._egress, self.links()),
            stats,
            self._clock(),
            self.config.http.outbox_stuck_s,
            down_for=down,
            grace_s=self.config.health.down_grace_s,
            details=details,
        )
        # Which daemon this is: `status` compares it with the state it was pointed at, so it
        # never describes another daemon that happens to answer on the same address.
        report["instance"] = await self._store.kv_get(INSTANCE_KEY)
        return report

    async def metrics_text(self) -> str:
        """Counters and the report's gauges in the Prometheus text format."""
        return metrics.render(health.gauges(await self.report()))
