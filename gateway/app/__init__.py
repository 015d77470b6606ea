"""The composition root: the one place that imports adapters and wires the daemon together.

`App.run` owns the lifecycle: open the store, start the workers in a TaskGroup, start
intake, then on stop run it all down in reverse — stop intake (letting commits in flight
finish), process what was accepted, drain the outbox within a timeout, close egress, close
the store. Nothing accepted is lost by a stop: whatever is left is still in the store.

The wiring is split by what it builds: gateway.app.egress (pager, mail, mirrors, the
outbox), gateway.app.intake (SMTP, IMAP, Matrix, alert webhooks), gateway.app.workers (inbox
worker, SLA scheduler), gateway.app.status (health, status endpoint, heartbeat, canary),
gateway.app.leases (several nodes), gateway.app.lifecycle (the run-down) and
gateway.app.warm (what is loaded right after READY). Start-up time
is mostly imports: an adapter and the library behind it are imported where it is built,
only when it is configured, and what READY does not need (the status endpoint's HTTP
server) is loaded right after it.
"""

from __future__ import annotations

import asyncio
import gc
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import structlog

from adapters.matrix_events import legacy_inbox_message
from adapters.smtp_intake import SmtpIntakeServer
from gateway.app.egress import Egress, open_egress, outbox_worker
from gateway.app.failure import notify_failure
from gateway.app.intake import alert_listener, imap_links, matrix_link, smtp_server
from gateway.app.leases import Once, cluster_for, cluster_tasks, leased_files
from gateway.app.lifecycle import Edges, close_edges, start_listeners, stop_listeners, wind_down
from gateway.app.status import canary_for, heartbeat, service_for, status_endpoint
from gateway.app.warm import warm_up
from gateway.app.workers import instance_id, processing, thread_key
from gateway.config.model import Config
from gateway.config.settings import chat_rooms
from gateway.deliver.links import LinkGate
from gateway.deliver.outbox import OutboxWorker
from gateway.domain import ChatMessage
from gateway.parse.sandbox import ParseSandbox
from gateway.ports import Store
from gateway.run import logs, metrics
from gateway.run.alert_intake import AlertIntake
from gateway.run.canary import CanaryMonitor, canary_key, recogniser
from gateway.run.cluster import Cluster
from gateway.run.heartbeat import Heartbeat
from gateway.run.intake import ChatIntake, MailIntake
from gateway.run.scheduler import Scheduler
from gateway.run.service import Loader, Service
from gateway.run.supervisor import GatewayFailed, Supervisor
from gateway.run.worker import Clock, InboxWorker, utcnow
from gateway.store.factory import make_store
from rules.book import Rulebook

if TYPE_CHECKING:
    from collections.abc import Callable

    from adapters.alerts_http import AlertWebhookServer
    from adapters.imap_intake import ImapIntake
    from adapters.matrix import MatrixLink

__all__ = ["App", "notify_failure"]

log = structlog.get_logger("gateway.app")

_SETTLE_S = 30.0  # longest READY waits for intake links to connect or report a retry


@dataclass(frozen=True)
class _Work:
    """What processes accepted work, built before anything is started."""

    worker: InboxWorker
    outbox: OutboxWorker
    scheduler: Scheduler
    intake: MailIntake
    chat: ChatIntake
    service: Service
    smtp: SmtpIntakeServer | None


class App:
    """One daemon instance. Constructing it does nothing; `run` does everything."""

    def __init__(
        self,
        config: Config,
        rulebook: Rulebook,
        clock: Clock = utcnow,
        loader: Loader | None = None,
    ) -> None:
        self.config = config
        self.rulebook = rulebook
        self.clock = clock
        self.ready = asyncio.Event()
        self.smtp_port: int | None = None
        self.alerts_port: int | None = None
        self.matrix: MatrixLink | None = None
        self.imap: list[ImapIntake] = []
        self.loader = loader  # re-reads the configuration and rulebook on reload
        self.reload_wanted = asyncio.Event()
        self.service: Service | None = None
        self.http_port: int | None = None
        self.scheduler: Scheduler | None = None
        self.cluster: Cluster | None = None  # several nodes on PostgreSQL: leases, claims
        self.gates: list[LinkGate] = []  # the egress links the outbox waits for when down
        self.supervisor: Supervisor | None = None
        self.canary: CanaryMonitor | None = None
        self.heartbeat: Heartbeat | None = None
        self._stack: AsyncExitStack | None = None
        self._intake: MailIntake | None = None

    def request_reload(self) -> None:
        """SIGHUP: re-read the configuration and rulebook (see gateway.run.service)."""
        self.reload_wanted.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, then shut down in order."""
        logs.quiet_accept_errors(asyncio.get_running_loop())
        # The parse sandbox's child loads the parser and rulebook while the rest starts
        # (mail accepted meanwhile is durable and waits for it in the inbox).
        sandbox = ParseSandbox(self.rulebook)
        sandbox_up = asyncio.create_task(sandbox.start(), name="parse-sandbox-start")
        store = make_store(self.config)
        try:
            # Written mail and the status endpoint live here whichever store is used.
            await asyncio.to_thread(self.config.state_dir().mkdir, 0o750, True, True)
            await store.open()
            async with AsyncExitStack() as stack:
                self._stack = stack
                egress = await open_egress(self.config, store, stack)
                await self._serve(store, egress, stop, sandbox)
        finally:
            await sandbox_up
            await sandbox.close()
            await store.close()
            log.info("gateway.stopped")
        if self.supervisor is not None and self.supervisor.fatal is not None:
            raise GatewayFailed(self.supervisor.fatal)

    async def _serve(
        self, store: Store, egress: Egress, stop: asyncio.Event, sandbox: ParseSandbox
    ) -> None:
        """Serve until `stop`; the listeners and links are closed whether the stop was asked
        for or a task failed (then before the store closes, in run())."""
        edges = Edges()
        try:
            work = await self._build(store, egress, sandbox, edges)
            await self._serve_until(store, work, stop, edges)
        finally:
            await close_edges(edges, self.config.outbox.drain_timeout_s)

    async def _build(
        self, store: Store, egress: Egress, sandbox: ParseSandbox, edges: Edges
    ) -> _Work:
        """Every part, wired, none started: links, outbox, workers, intake, health."""
        cfg = self.config
        self.cluster = cluster_for(cfg, store)
        link = edges.link = self.matrix = matrix_link(cfg, store, leased_files(self.cluster, store))
        key = canary_key(await thread_key(cfg, store))
        self.canary = canary_for(cfg, self.clock, key, self._submit_canary, store)
        outbox, self.gates = outbox_worker(
            cfg,
            self.clock,
            store,
            egress,
            link,
            await instance_id(store),
            (self.canary, self.cluster),
        )
        worker, scheduler = await self._processing(store, outbox, sandbox)
        worker.canary = recogniser(key)  # even with the self-test off: ours are never reports
        worker.legacy_chat = legacy_inbox_message  # chat rows stored before chat was neutral
        outbox.busy = worker.in_storm  # outbox rounds wait for a lull in a storm too
        self.scheduler = scheduler
        intake = MailIntake(
            store, cfg.mailboxes.emergency, cfg.mailboxes.support, worker.wake, self.clock
        )
        edges.imap = self.imap = imap_links(cfg, self.clock, store, intake)
        smtp = smtp_server(cfg, intake) if cfg.smtp.enabled else None
        service = self.service = service_for(
            cfg,
            self.clock,
            store,
            egress.provider,
            (smtp, link, self.imap),
            (self.canary, self.cluster, self.gates),
        )
        self.heartbeat = await heartbeat(cfg, service, self._stack)
        chat = ChatIntake(store, chat_rooms(cfg), worker.wake, self.clock)
        return _Work(worker, outbox, scheduler, intake, chat, service, smtp)

    async def _processing(
        self, store: Store, outbox: OutboxWorker, sandbox: ParseSandbox
    ) -> tuple[InboxWorker, Scheduler]:
        """The inbox worker and the SLA scheduler (gateway.app.workers)."""
        return await processing(self.config, self.rulebook, self.clock, store, outbox, sandbox)

    async def _serve_until(
        self, store: Store, work: _Work, stop: asyncio.Event, edges: Edges
    ) -> None:
        cfg, link, service = self.config, edges.link, work.service
        # Every long-running task is supervised: none may end unnoticed (run.supervisor);
        # on several nodes the singleton loops run under their leases (run.cluster).
        sup = self.supervisor = Supervisor(stop.is_set, stop.set)
        once = Once(self.cluster, stop)
        alerts = alert_listener(
            cfg, self.clock, AlertIntake(store, work.worker.wake, self.clock), service
        )
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(
                    sup.essential("inbox-worker", once.bound("inbox", work.worker.run)),
                    name="inbox-worker",
                ),
                group.create_task(
                    sup.essential("outbox-worker", work.outbox.run), name="outbox-worker"
                ),
            ]
            timers = (
                [
                    group.create_task(
                        sup.essential("sla-scheduler", once.bound("sla", work.scheduler.run)),
                        name="sla-scheduler",
                    )
                ]
                if cfg.sla.enabled
                else []
            )
            tasks += self._links(group, sup, once, link, work.chat)
            if self.cluster is not None:
                tasks += cluster_tasks(
                    group, self.cluster, store, link is not None, work.worker.wake
                )
            await self._listen(work.smtp, alerts, edges, service)
            tasks += self._watch_ourselves(group, sup, work)
            await service.announce_ready(_SETTLE_S)
            # Loaded after READY=1: the status endpoint's HTTP server (its clients wait
            # in the listener's backlog meanwhile), then what first uses will need.
            if edges.status is not None:
                await edges.status.serve()
            await warm_up(cfg, self.rulebook)
            self.ready.set()
            # What start-up built lives as long as the process: leave it out of every later
            # garbage collection, which then only walks what serving allocates. (The
            # command's entry point turned collection off for start-up: back on now.)
            gc.collect()
            gc.freeze()
            gc.enable()
            log.info("gateway.ready", smtp_port=self.smtp_port, http_port=self.http_port)
            await stop.wait()
            log.info("gateway.stopping")
            service.stopping()
            await stop_listeners(edges)  # first: intake ends before the drain
            await wind_down(
                (work.worker, work.outbox, work.scheduler),
                tasks,
                timers,
                cfg.outbox.drain_timeout_s,
            )

    def _links(
        self,
        group: asyncio.TaskGroup,
        sup: Supervisor,
        once: Once,
        link: MatrixLink | None,
        chat: ChatIntake,
    ) -> list[asyncio.Task[None]]:
        """The Matrix sync and the IMAP watchers, supervised (under their leases)."""
        tasks = []
        if link is not None:

            async def deliver(events: list[ChatMessage]) -> None:
                await chat.accept_all(events)
                metrics.ACCEPTED.inc(len(events), channel="matrix")

            link.deliver_to(deliver)
            tasks.append(
                group.create_task(
                    sup.link("matrix", once.part("matrix", link, link.connected.clear)),
                    name="matrix-sync",
                )
            )
        tasks.extend(
            group.create_task(
                sup.link(f"imap:{box.name}", once.part(f"imap:{box.name}", box)),
                name=f"imap-{box.name}",
            )
            for box in self.imap
        )
        return tasks

    async def _listen(
        self,
        smtp: SmtpIntakeServer | None,
        alerts: AlertWebhookServer | None,
        edges: Edges,
        service: Service,
    ) -> None:
        """SMTP and webhook listeners, then the status endpoint's (bound, not yet served)."""
        await start_listeners(smtp, alerts, edges)
        self.smtp_port = None if smtp is None else smtp.port
        self.alerts_port = None if alerts is None else alerts.port
        edges.status = await status_endpoint(self.config, service)
        self.http_port = None if edges.status is None else edges.status.port

    def _watch_ourselves(
        self, group: asyncio.TaskGroup, sup: Supervisor, work: _Work
    ) -> list[asyncio.Task[None]]:
        """The canary, the heartbeat, the service's watch and the reloads, supervised."""
        self._intake = work.intake
        service = work.service
        tasks = []
        if self.canary is not None:
            tasks.append(group.create_task(sup.link("canary", self.canary), name="canary"))
        if self.heartbeat is not None:
            tasks.append(group.create_task(sup.link("heartbeat", self.heartbeat), name="heartbeat"))
        reloads = partial(service.serve_reloads, self.reload_wanted, self.loader, self._apply(work))
        tasks += [
            group.create_task(sup.essential("service-watch", service.watch), name="service-watch"),
            group.create_task(sup.essential("reloads", reloads), name="reloads"),
        ]
        return tasks

    def _apply(self, work: _Work) -> Callable[[Config, Rulebook], None]:
        def apply(_config: Config, rulebook: Rulebook) -> None:
            self.rulebook = rulebook
            work.worker.replace_rulebook(rulebook)
            work.scheduler.replace_rulebook(rulebook)

        return apply

    async def _submit_canary(self, mail_from: str, rcpt_to: str, raw: bytes) -> None:
        """Through the SMTP listener when there is one, else straight into the inbox."""
        if self.smtp_port is not None:
            from adapters.canary_smtp import LoopbackSubmit  # noqa: PLC0415  (lazy)

            await LoopbackSubmit(self.config.smtp.host, self.smtp_port)(mail_from, rcpt_to, raw)
        elif self._intake is not None:
            await self._intake.accept(mail_from, [rcpt_to], raw)
