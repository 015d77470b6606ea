"""The composition root: the one place that imports adapters and wires the daemon together.

`App.run` owns the lifecycle: open the store, start the workers in a TaskGroup, start
intake, then on stop run it all down in reverse — stop intake (letting commits in flight
finish), process what was accepted, drain the outbox within a timeout, close egress, close
the store. Nothing accepted is lost by a stop: whatever is left is still in the store.
"""

from __future__ import annotations

import asyncio
import gc
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from adapters.mail_out import FolderMailer, SmtpRelayMailer
from adapters.matrix_events import legacy_inbox_message
from adapters.sdnotify import Notifier
from adapters.smtp_intake import SmtpIntakeServer
from adapters.smtp_limits import SmtpLimits
from gateway.config.model import Config
from gateway.config.settings import chat_rooms, pipeline_settings, sla_settings
from gateway.deliver.alarm_egress import alarm_handler
from gateway.deliver.deadletter import alert_in
from gateway.deliver.egress import LocalPager, make_handlers
from gateway.deliver.external import (
    HandlerFactory,
    mirror_handlers,
    mirror_settings,
    security_rooms,
)
from gateway.deliver.links import LinkGate, egress_gates
from gateway.deliver.outbox import OutboxWorker, RetryPolicy
from gateway.domain import ChatMessage, OutboxKind, Plan
from gateway.parse.sandbox import ParseSandbox
from gateway.plan.alarm_rooms import alarm_rooms
from gateway.plan.alert_plan import AlertSettings
from gateway.plan.e2ee import PinnedDevice
from gateway.plan.tokens import new_key
from gateway.ports import (
    MailSender,
    Pager,
    PermanentError,
    Store,
    TicketBackend,
    TransientError,
)
from gateway.run import logs, metrics
from gateway.run.alert_intake import AlertIntake
from gateway.run.alert_work import WebhookSettings
from gateway.run.canary import CanaryMonitor, canary_key, recogniser
from gateway.run.cluster import Cluster, singleton
from gateway.run.failure import failure_page
from gateway.run.heartbeat import Heartbeat
from gateway.run.intake import ChatIntake, MailIntake
from gateway.run.scheduler import Scheduler
from gateway.run.service import INSTANCE_KEY, Loader, Service, endpoint_file
from gateway.run.supervisor import GatewayFailed, Supervisor
from gateway.run.worker import Clock, InboxWorker, utcnow
from gateway.store.factory import make_store
from rules.book import Rulebook
from rules.types import Mailbox

# Start-up time is mostly imports: an adapter (and the library behind it: matrix-nio,
# aiohttp, aioimaplib, dkimpy) is imported where it is built, only when it is configured.
if TYPE_CHECKING:
    from adapters.alerts_http import AlertWebhookServer
    from adapters.http_status import StatusServer
    from adapters.imap_intake import ImapIntake
    from adapters.matrix import MatrixLink
    from adapters.matrix_crypto import MatrixCrypto

log = structlog.get_logger("gateway.app")


async def _thread_key(config: Config, store: Store) -> str:
    """The configured threading key, else one generated once and kept in the store."""
    if config.threading.key is not None:
        return config.read_secret(config.threading.key)
    value = await store.kv_get("threading_key")
    if value is None:
        value = new_key()
        await store.kv_set("threading_key", value)
    return value


async def _instance_id(store: Store) -> str:
    """A random id for this database, made once (prefixes chat transaction ids)."""
    value = await store.kv_get(INSTANCE_KEY)
    if value is None:
        value = secrets.token_hex(6)
        await store.kv_set(INSTANCE_KEY, value)
    return value


_SETTLE_S = 30.0  # longest READY waits for intake links to connect or report a retry


@dataclass(frozen=True)
class _Egress:
    """What the outbox delivers through, built once the store is open."""

    pager: Pager
    provider: str  # "pagerduty" or "local"
    routes: Mapping[str, Pager]  # escalation routing keys, by route name
    mailer: MailSender
    mirror: HandlerFactory  # ticket backend and status page handlers, by instance id


@dataclass
class _Edges:
    """The listeners and links started while serving, closed in reverse in every case."""

    smtp: SmtpIntakeServer | None = None
    alerts: AlertWebhookServer | None = None
    status: StatusServer | None = None
    link: MatrixLink | None = None
    imap: list[ImapIntake] = field(default_factory=list)


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
                pager, provider, routes = await self._pager(stack)
                egress = _Egress(
                    pager, provider, routes, self._mailer(), await self._external(store, stack)
                )
                await self._serve(store, egress, stop, sandbox)
        finally:
            await sandbox_up
            await sandbox.close()
            await store.close()
            log.info("gateway.stopped")
        if self.supervisor is not None and self.supervisor.fatal is not None:
            raise GatewayFailed(self.supervisor.fatal)

    async def _pager(self, stack: AsyncExitStack) -> tuple[Pager, str, dict[str, Pager]]:
        """The pager, its provider's name, and the escalation routes' pagers."""
        pd = self.config.pagerduty
        if pd is None:
            return LocalPager(), "local", {}
        import aiohttp  # noqa: PLC0415  (lazy, see above)

        from adapters.pagerduty import PagerDutyPager  # noqa: PLC0415

        session = await stack.enter_async_context(aiohttp.ClientSession())
        key = self.config.read_secret(pd.routing_key)
        routes: dict[str, Pager] = {}
        for index, step in enumerate(self.config.escalation):
            if step.routing_key is not None:
                routes[f"escalation-{index + 1}"] = PagerDutyPager(
                    routing_key=self.config.read_secret(step.routing_key),
                    base_url=pd.url,
                    session=session,
                    timeout_s=pd.timeout_s,
                )
        return (
            PagerDutyPager(
                routing_key=key, base_url=pd.url, session=session, timeout_s=pd.timeout_s
            ),
            "pagerduty",
            routes,
        )

    async def _external(self, store: Store, stack: AsyncExitStack) -> HandlerFactory:
        """The configured ticket backend and status page, sharing one HTTP session."""
        t, sp, read = self.config.tickets, self.config.statuspage, self.config.read_secret
        if t.backend == "builtin" and sp is None:
            return lambda _prefix: {}
        import aiohttp  # noqa: PLC0415  (lazy, see above)

        from adapters.statuspage import Statuspage  # noqa: PLC0415
        from adapters.tickets_deskpro import DeskproTickets  # noqa: PLC0415
        from adapters.tickets_github import GitHubIssues  # noqa: PLC0415
        from adapters.tickets_zendesk import ZendeskTickets  # noqa: PLC0415

        session = await stack.enter_async_context(aiohttp.ClientSession())
        tickets: TicketBackend | None = None
        if t.zendesk is not None and t.backend == "zendesk":
            tickets = ZendeskTickets(
                t.zendesk.url,
                t.zendesk.email,
                read(t.zendesk.token),
                session=session,
                timeout_s=t.zendesk.timeout_s,
            )
        elif t.deskpro is not None and t.backend == "deskpro":
            tickets = DeskproTickets(
                t.deskpro.url,
                read(t.deskpro.api_key),
                session=session,
                fallback_requester=t.deskpro.requester or self.config.mail_out.from_address,
                timeout_s=t.deskpro.timeout_s,
            )
        elif t.github is not None and t.backend == "github":
            tickets = GitHubIssues(
                t.github.repo,
                read(t.github.token),
                session=session,
                base_url=t.github.url,
                timeout_s=t.github.timeout_s,
            )
        page = (
            None
            if sp is None
            else Statuspage(
                sp.page_id,
                read(sp.api_key),
                session=session,
                base_url=sp.url,
                timeout_s=sp.timeout_s,
            )
        )
        return mirror_handlers(store, tickets, page, sp.page_id if sp else "")

    def _mailer(self) -> MailSender:
        out = self.config.mail_out
        if out.mode == "folder" or out.smtp is None:
            return FolderMailer(self.config.mail_folder())
        relay = out.smtp
        password = self.config.read_secret(relay.password) if relay.password else None
        return SmtpRelayMailer(
            hostname=relay.host,
            port=relay.port,
            username=relay.username,
            password=password,
            starttls=relay.starttls,
            use_tls=relay.tls,
            timeout_s=relay.timeout_s,
        )

    async def _outbox(self, store: Store, egress: _Egress, link: MatrixLink | None) -> OutboxWorker:
        """The outbox worker with a handler for every kind of effect."""
        cfg = self.config
        policy = RetryPolicy(
            max_attempts=cfg.outbox.max_attempts,
            initial_s=cfg.outbox.backoff_initial_s,
            max_s=cfg.outbox.backoff_max_s,
        )
        instance = await _instance_id(store)
        handlers = make_handlers(
            egress.pager, egress.mailer, egress.provider, link, store, instance, egress.routes
        )
        handlers.update(egress.mirror(instance))
        if self.canary is not None:
            handlers[OutboxKind.CANARY] = self.canary.handler
        if link is not None:
            handlers[OutboxKind.CHAT_ALARM] = alarm_handler(link, store, f"{instance}a")
        if self.cluster is not None:
            handlers = self.cluster.fenced(handlers)
        room = cfg.matrix.incidents_room if cfg.matrix else None
        chat_up = link.connected.is_set if link else None
        if chat_up is not None and self.cluster is not None:  # Matrix runs under its lease
            chat_up = self.cluster.connected("matrix", chat_up)
        self.gates = egress_gates(
            [
                *(["pager"] if cfg.pagerduty else []),
                *(["mail"] if cfg.mail_out.mode != "folder" and cfg.mail_out.smtp else []),
                *(["chat"] if link else []),
            ],
            cfg.outbox.backoff_initial_s,
            cfg.outbox.backoff_max_s,
            {"chat": chat_up} if chat_up is not None else None,
        )
        return OutboxWorker(
            store,
            handlers,
            policy,
            cfg.outbox.concurrency,
            self.clock,
            alert_for=alert_in(room),
            poll_s=cfg.outbox.poll_interval_s,
            gates=self.gates,
        )

    async def _processing(
        self, store: Store, outbox: OutboxWorker, sandbox: ParseSandbox
    ) -> tuple[InboxWorker, Scheduler]:
        """The inbox worker and the SLA scheduler; both wake the outbox when they plan."""
        cfg = self.config
        settings = pipeline_settings(cfg, await _thread_key(cfg, store))
        scheduler = Scheduler(
            store,
            self.rulebook,
            sla_settings(cfg, settings),
            lambda _fired: outbox.wake(),
            self.clock,
        )

        def planned(plans: Sequence[Plan]) -> None:
            if any(plan.outbox for plan in plans):
                outbox.wake()
            scheduler.changed()  # an incident may have changed: its clocks may have moved

        hook = cfg.pagerduty.webhook if cfg.pagerduty else None
        webhooks = WebhookSettings(
            AlertSettings(
                settings.sender, settings.pager_source, settings.chat, alarm_rooms(cfg.alerts)
            ),
            hook.on_resolved if hook else "resolve",
        )
        worker = InboxWorker(
            store,
            self.rulebook,
            settings,
            planned,
            self.clock,
            sandbox=sandbox,
            mirror=mirror_settings(cfg, self.rulebook, settings.sender),
            webhooks=webhooks,
        )
        return worker, scheduler

    async def _serve(
        self, store: Store, egress: _Egress, stop: asyncio.Event, sandbox: ParseSandbox
    ) -> None:
        """Serve until `stop`; the listeners and links are closed whether the stop was asked
        for or a task failed (then before the store closes, in run())."""
        edges = _Edges()
        try:
            await self._serve_until(store, egress, stop, sandbox, edges)
        finally:
            await self._close(edges)

    async def _serve_until(
        self,
        store: Store,
        egress: _Egress,
        stop: asyncio.Event,
        sandbox: ParseSandbox,
        edges: _Edges,
    ) -> None:
        cfg = self.config
        cluster = self.cluster = _cluster(cfg, store)
        link = edges.link = self.matrix = self._matrix(store)
        key = canary_key(await _thread_key(cfg, store))
        self.canary = self._canary(key, store, getattr(store, "canary_through", None))
        outbox = await self._outbox(store, egress, link)
        worker, scheduler = await self._processing(store, outbox, sandbox)
        worker.canary = recogniser(key)  # even with the self-test off: ours are never reports
        worker.legacy_chat = legacy_inbox_message  # chat rows stored before chat was neutral
        outbox.busy = worker.in_storm  # outbox rounds wait for a lull in a storm too
        self.scheduler = scheduler
        intake = MailIntake(
            store, cfg.mailboxes.emergency, cfg.mailboxes.support, worker.wake, self.clock
        )
        smtp = self._smtp(intake) if cfg.smtp.enabled else None
        chat_intake = ChatIntake(store, chat_rooms(cfg), worker.wake, self.clock)
        edges.imap = self.imap = self._imap(store, intake)
        service = self.service = self._service(store, egress.provider, smtp, link)
        self.heartbeat = await self._heartbeat(service)
        # Every long-running task is supervised: none may end unnoticed (run.supervisor);
        # on several nodes the singleton loops run under their leases (run.cluster).
        sup = self.supervisor = Supervisor(stop.is_set, stop.set)
        once = _Once(cluster, stop)
        alerts = self._alert_listener(AlertIntake(store, worker.wake, self.clock), service)
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(
                    sup.essential("inbox-worker", once.bound("inbox", worker.run)),
                    name="inbox-worker",
                ),
                group.create_task(sup.essential("outbox-worker", outbox.run), name="outbox-worker"),
            ]
            timers = (
                [
                    group.create_task(
                        sup.essential("sla-scheduler", once.bound("sla", scheduler.run)),
                        name="sla-scheduler",
                    )
                ]
                if cfg.sla.enabled
                else []
            )
            if link is not None:

                async def deliver(events: list[ChatMessage]) -> None:
                    await chat_intake.accept_all(events)
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
            if cluster is not None:
                tasks += _cluster_tasks(group, cluster, store, link, worker.wake)
            await self._start_listeners(smtp, alerts, edges)
            edges.status = await self._status_endpoint(service)
            tasks += self._watch_ourselves(group, sup, intake)
            tasks += [
                group.create_task(
                    sup.essential("service-watch", service.watch), name="service-watch"
                ),
                group.create_task(
                    sup.essential(
                        "reloads",
                        partial(
                            service.serve_reloads,
                            self.reload_wanted,
                            self.loader,
                            self._apply(worker, scheduler),
                        ),
                    ),
                    name="reloads",
                ),
            ]
            await service.announce_ready(_SETTLE_S)
            self.ready.set()
            # What start-up built lives as long as the process: leave it out of every later
            # garbage collection, which then only walks what serving allocates.
            gc.collect()
            gc.freeze()
            log.info("gateway.ready", smtp_port=self.smtp_port, http_port=self.http_port)
            await stop.wait()
            log.info("gateway.stopping")
            service.stopping()
            await self._stop_listeners(edges)  # first: intake ends before the drain
            await self._wind_down(worker, outbox, scheduler, tasks, timers)

    async def _start_listeners(
        self, smtp: SmtpIntakeServer | None, alerts: AlertWebhookServer | None, edges: _Edges
    ) -> None:
        """Open the SMTP and webhook listeners (each recorded for _close if start fails)."""
        if smtp is not None:
            edges.smtp = smtp
            await smtp.start()
            self.smtp_port = smtp.port
        if alerts is not None:
            edges.alerts = alerts
            await alerts.start()
            self.alerts_port = alerts.port

    @staticmethod
    async def _stop_listeners(edges: _Edges) -> None:
        """Stop accepting mail and webhooks (stopped here, so _close leaves them alone)."""
        smtp, alerts = edges.smtp, edges.alerts
        edges.smtp = edges.alerts = None
        if smtp is not None:
            await smtp.stop()
        if alerts is not None:
            await alerts.stop()

    async def _close(self, edges: _Edges) -> None:
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
                async with asyncio.timeout(self.config.outbox.drain_timeout_s):
                    await close()
            except Exception as exc:  # closing the rest matters more
                log.error("gateway.close_failed", component=name, error=type(exc).__name__)

    def _canary(
        self, key: bytes, store: Store, elsewhere: Callable[[str], Awaitable[bool]] | None
    ) -> CanaryMonitor | None:
        """The end-to-end self-test (gateway.run.canary), unless turned off; on several
        nodes a canary another node's outbox delivered counts (`elsewhere`)."""
        c, boxes = self.config.canary, self.config.mailboxes
        if not c.enabled:
            return None
        rcpt = (boxes.support or boxes.emergency)[0]
        return CanaryMonitor(
            key,
            self._submit_canary,
            self.config.mail_out.from_address,
            rcpt,
            c.interval_s,
            c.deadline_s,
            elsewhere,
            prune=store.prune_canaries,
            clock=self.clock,
        )

    async def _submit_canary(self, mail_from: str, rcpt_to: str, raw: bytes) -> None:
        """Through the SMTP listener when there is one, else straight into the inbox."""
        if self.smtp_port is not None:
            from adapters.canary_smtp import LoopbackSubmit  # noqa: PLC0415  (lazy)

            await LoopbackSubmit(self.config.smtp.host, self.smtp_port)(mail_from, rcpt_to, raw)
        elif self._intake is not None:
            await self._intake.accept(mail_from, [rcpt_to], raw)

    async def _heartbeat(self, service: Service) -> Heartbeat | None:
        """Pings to an outside monitor while healthy (gateway.run.heartbeat), if configured."""
        hb = self.config.heartbeat
        if hb is None or self._stack is None:
            return None
        import aiohttp  # noqa: PLC0415  (lazy, see above)

        from adapters.heartbeat_http import HttpPinger  # noqa: PLC0415

        session = await self._stack.enter_async_context(aiohttp.ClientSession())
        pinger = HttpPinger(
            hb.url, session=session, method=hb.method, fail_url=hb.fail_url, timeout_s=hb.timeout_s
        )
        return Heartbeat(service.report, pinger, hb.interval_s)

    def _watch_ourselves(
        self, group: asyncio.TaskGroup, sup: Supervisor, intake: MailIntake
    ) -> list[asyncio.Task[None]]:
        """The canary and the heartbeat, supervised like the links."""
        self._intake = intake
        tasks = []
        if self.canary is not None:
            tasks.append(group.create_task(sup.link("canary", self.canary), name="canary"))
        if self.heartbeat is not None:
            tasks.append(group.create_task(sup.link("heartbeat", self.heartbeat), name="heartbeat"))
        return tasks

    def _service(
        self, store: Store, provider: str, smtp: SmtpIntakeServer | None, link: MatrixLink | None
    ) -> Service:
        """Readiness, STATUS lines and health: every intake and egress by its state."""
        cfg = self.config
        service = Service(
            store,
            cfg,
            Notifier(),
            self.clock,
            {"pager": provider, "mail": cfg.mail_out.mode, **({"chat": "matrix"} if link else {})},
        )
        components: list[tuple[str, object]] = [("smtp", smtp), ("matrix", link)]
        components += [(f"imap:{box.name}", box) for box in self.imap]
        components.append(("canary", self.canary))
        for name, part in components:
            if part is not None:
                state: Callable[[], str] = partial(getattr, part, "state")
                if self.cluster is not None and name not in ("smtp", "canary"):
                    state = self.cluster.state(name, state)
                service.add(name, state, getattr(part, "problem", None))
        if hasattr(store, "watch"):  # a database server: its link is a component too
            service.add("store", partial(getattr, store, "state"))
        service.gates = self.gates
        return service

    async def _wind_down(
        self,
        worker: InboxWorker,
        outbox: OutboxWorker,
        scheduler: Scheduler,
        tasks: list[asyncio.Task[None]],
        timers: list[asyncio.Task[None]],
    ) -> None:
        """Let the workers (the first two tasks) and the scheduler finish what they hold — a
        delivered page is recorded before they return — stop the rest, then drain."""
        worker.stop()
        outbox.stop()
        scheduler.stop()
        for task in tasks[2:]:
            task.cancel()
        _, late = await asyncio.wait([*tasks, *timers], timeout=self.config.outbox.drain_timeout_s)
        for task in late:
            task.cancel()
        await self._drain(worker, outbox)

    def _apply(
        self, worker: InboxWorker, scheduler: Scheduler
    ) -> Callable[[Config, Rulebook], None]:
        def apply(_config: Config, rulebook: Rulebook) -> None:
            self.rulebook = rulebook
            worker.replace_rulebook(rulebook)
            scheduler.replace_rulebook(rulebook)

        return apply

    async def _status_endpoint(self, service: Service) -> StatusServer | None:
        """Serve /healthz and /metrics; a taken port is logged, never fatal (intake matters
        more). The bound address is written to the state folder for `status`."""
        h = self.config.http
        if not h.enabled:
            return None
        from adapters.http_status import StatusServer  # noqa: PLC0415  (lazy, see above)

        server = StatusServer(
            service.report,
            service.metrics_text,
            host=h.host,
            port=h.port,
            max_connections=h.max_connections,
            idle_timeout_s=h.idle_timeout_s,
        )
        try:
            await server.start()
        except OSError as exc:
            log.error("http.bind_failed", host=h.host, port=h.port, error=exc.strerror)
            return None
        self.http_port = server.port
        endpoint = f"http://{h.host}:{server.port}\n"
        await asyncio.to_thread(endpoint_file(self.config).write_text, endpoint)
        return server

    def _matrix(self, store: Store) -> MatrixLink | None:
        m = self.config.matrix
        if m is None:
            return None
        from adapters.matrix import MatrixLink  # noqa: PLC0415  (lazy, see above)

        read = self.config.read_secret
        return MatrixLink(
            homeserver=m.homeserver,
            user_id=m.user_id,
            rooms=[
                m.incidents_room,
                *(r.room for r in m.report_rooms),
                *security_rooms(self.config),
                *(s.room for s in self.config.escalation if s.room),
                *alarm_rooms(self.config.alerts).rooms(),
            ],
            store=store,
            access_token=read(m.access_token) if m.access_token else None,
            password=read(m.password) if m.password else None,
            device_id=m.device_id,
            device_name=m.device_name,
            sync_timeout_s=m.sync_timeout_s,
            backoff_max_s=m.backoff_max_s,
            crypto=self._matrix_crypto(),
            undecryptable_wait_s=m.undecryptable_wait_s,
        )

    def _matrix_crypto(self) -> MatrixCrypto | None:
        """End-to-end encryption for the Matrix link, when configured (docs/matrix-e2ee.md)."""
        m = self.config.matrix
        if m is None or m.encryption != "on" or m.pickle_key is None:
            return None
        from adapters.matrix_crypto import MatrixCrypto  # noqa: PLC0415  (see TYPE_CHECKING)

        return MatrixCrypto(
            store_dir=self.config.state_dir() / "matrix-crypto",
            pickle_key=self.config.read_secret(m.pickle_key),
            trust=m.trust,
            engineers=m.engineers,
            pinned=[PinnedDevice(d.user, d.device, d.ed25519) for d in m.trusted_devices],
        )

    def _imap(self, store: Store, intake: MailIntake) -> list[ImapIntake]:
        if not self.config.imap:
            return []
        from adapters.imap_intake import ImapIntake  # noqa: PLC0415  (lazy, see above)

        return [
            ImapIntake(
                name=box.name,
                host=box.host,
                port=box.effective_port(),
                tls=box.tls,
                user=box.user,
                password=self.config.read_secret(box.password),
                mailbox=Mailbox(box.mailbox),
                sink=intake,
                kv=store,
                clock=self.clock,
                folder=box.folder,
                processed_folder=box.processed_folder,
                ca_file=self.config.imap_ca_file(box),
                idle_renew_s=box.idle_renew_s,
                poll_interval_s=box.poll_interval_s,
                timeout_s=box.timeout_s,
                backoff_max_s=box.backoff_max_s,
                auth_retry_s=box.auth_retry_s,
            )
            for box in self.config.imap
        ]

    def _alert_listener(self, intake: AlertIntake, service: Service) -> AlertWebhookServer | None:
        """The alert and PagerDuty webhook listener, when `[alerts]` is configured (its
        state is in the health report as "alerts")."""
        a = self.config.alerts
        if a is None or not a.enabled:
            return None
        from adapters.alerts_http import (  # noqa: PLC0415  (lazy, see above)
            AlertWebhookServer,
            SourceAuth,
        )
        from adapters.pagerduty_webhook import PagerDutyHook  # noqa: PLC0415
        from rules.alert_rules import AlertSource  # noqa: PLC0415

        read = self.config.read_secret
        sources = [
            SourceAuth(
                s.name,
                AlertSource(s.kind),
                s.auth,
                read(s.secret).encode(),
                s.hmac_header,
                s.rate_per_minute,
                s.hmac_timestamp_header,
                s.hmac_max_age_s,
            )
            for s in a.sources
        ]
        hook = self.config.pagerduty.webhook if self.config.pagerduty else None
        pd = (
            None
            if hook is None
            else PagerDutyHook(tuple(read(x).encode() for x in hook.secrets), hook.max_age_s)
        )
        server = AlertWebhookServer(
            intake,
            sources,
            host=a.host,
            port=a.port,
            max_body_bytes=a.max_body_bytes,
            rate_per_minute=a.rate_per_minute,
            commit_timeout_s=a.commit_timeout_s,
            pagerduty=pd,
            clock=self.clock,
        )
        service.add("alerts", partial(getattr, server, "state"))
        return server

    def _smtp(self, intake: MailIntake) -> SmtpIntakeServer:
        s = self.config.smtp
        return SmtpIntakeServer(
            intake,
            host=s.host,
            port=s.port,
            hostname=s.hostname,
            max_message_bytes=s.max_message_bytes,
            max_recipients=s.max_recipients,
            commit_timeout_s=s.commit_timeout_s,
            max_connections=s.max_connections,
            idle_timeout_s=s.idle_timeout_s,
            limits=SmtpLimits(
                max_junk_commands=s.max_junk_commands,
                max_errors=s.max_errors,
                max_connections_per_client=s.max_connections_per_client,
                max_session_s=s.max_session_s,
                max_data_bytes_in_flight=s.max_data_bytes_in_flight,
            ),
        )

    async def _drain(self, worker: InboxWorker, outbox: OutboxWorker) -> None:
        timeout = self.config.outbox.drain_timeout_s
        try:
            async with asyncio.timeout(timeout):
                while await worker.process_pending():
                    pass
        except TimeoutError:
            log.warning("inbox.drain_incomplete")
        if not await outbox.drain(timeout):
            log.warning("outbox.drain_incomplete")


def _cluster(config: Config, store: Store) -> Cluster | None:
    """Leases and claims when the store is shared by several nodes (PostgreSQL)."""
    pg = config.state.postgresql
    if config.state.backend != "postgresql" or pg is None or not hasattr(store, "acquire_lease"):
        return None
    return Cluster(store, pg.lease_s)  # type: ignore[arg-type]  # checked just above


def _cluster_tasks(
    group: asyncio.TaskGroup,
    cluster: Cluster,
    store: Store,
    link: MatrixLink | None,
    wake_inbox: Callable[[], None],
) -> list[asyncio.Task[None]]:
    """The lease keepers, the store's watch and its listener (mail accepted by any node
    wakes this node's inbox worker); chat is claimed only by the Matrix node."""
    if link is not None and hasattr(store, "skip_kinds"):
        chat = frozenset({OutboxKind.CHAT_ANNOUNCE, OutboxKind.CHAT_SEND, OutboxKind.CHAT_ALARM})
        matrix = cluster.lease("matrix")
        store.skip_kinds = lambda: frozenset() if matrix.held() else chat
    tasks = [
        group.create_task(lease.run(), name=f"lease-{name}")
        for name, lease in cluster.leases.items()
    ]
    watch = getattr(store, "watch", None)
    if watch is not None:
        tasks.append(group.create_task(watch(), name="store-watch"))
    listen = getattr(store, "listen", None)
    if listen is not None:
        inbox = cluster.lease("inbox")
        store.notify_accepts = lambda: not inbox.held()  # type: ignore[attr-defined]
        tasks.append(group.create_task(listen(wake_inbox), name="store-listen"))
    return tasks


@dataclass(frozen=True)
class _Once:
    """Runs a loop under its lease on several nodes, or simply runs it on one."""

    cluster: Cluster | None
    stop: asyncio.Event

    def __call__(
        self,
        name: str,
        run: Callable[[], Coroutine[Any, Any, None]],
        on_lost: Callable[[], None] | None = None,
    ) -> Coroutine[Any, Any, None]:
        if self.cluster is None:
            return run()
        return singleton(self.cluster.lease(name), run, self.stop.is_set, on_lost)

    def bound(
        self,
        name: str,
        run: Callable[[], Coroutine[Any, Any, None]],
        on_lost: Callable[[], None] | None = None,
    ) -> Callable[[], Coroutine[Any, Any, None]]:
        """`run` under its lease, for the supervisor to start (and restart). The lease is
        made now, before the keepers are started (_cluster_tasks)."""
        if self.cluster is None:
            return run
        self.cluster.lease(name)
        return lambda: self(name, run, on_lost)

    def part(self, name: str, part: _Part, on_lost: Callable[[], None] | None = None) -> _Part:
        """A supervised link (gateway.run.supervisor) that runs under its lease."""
        if self.cluster is None:
            return part
        return _Leased(part, self.bound(name, part.run, on_lost))


class _Part(Protocol):
    state: str

    def run(self) -> Coroutine[Any, Any, None]: ...


class _Leased:
    """A link whose run loop runs under its lease; its state is the link's own."""

    def __init__(self, part: _Part, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._part, self._run = part, run

    @property
    def state(self) -> str:
        return self._part.state

    @state.setter
    def state(self, value: str) -> None:
        self._part.state = value

    def run(self) -> Coroutine[Any, Any, None]:
        return self._run()


async def notify_failure(config: Config, unit: str, reason: str) -> list[str]:
    """`chatops-gateway notify-failure` (the unit's OnFailure= hook): page that the service
    failed for good, and ping the heartbeat's failure URL; returns what was notified.
    Raises TransientError/PermanentError when nothing could be."""
    import aiohttp  # noqa: PLC0415  (lazy, see above)

    from adapters.heartbeat_http import HttpPinger  # noqa: PLC0415
    from adapters.pagerduty import PagerDutyPager  # noqa: PLC0415

    done: list[str] = []
    errors: list[TransientError | PermanentError] = []
    pd, nf, hb = config.pagerduty, config.notify_failure, config.heartbeat
    key = nf.routing_key or (pd.routing_key if pd else None)
    async with aiohttp.ClientSession() as session:
        if key is not None:
            pager = PagerDutyPager(
                routing_key=config.read_secret(key),
                base_url=pd.url if pd else "https://events.pagerduty.com",
                session=session,
                timeout_s=pd.timeout_s if pd else 10.0,
            )
            page = failure_page(unit, reason, pd.source if pd else "chatops-gateway", nf.severity)
            try:
                await pager.trigger(page)
                done.append("pagerduty")
            except (TransientError, PermanentError) as exc:
                errors.append(exc)
        if hb is not None and hb.fail_url is not None:
            pinger = HttpPinger(
                hb.url,
                session=session,
                method=hb.method,
                fail_url=hb.fail_url,
                timeout_s=hb.timeout_s,
            )
            try:
                await pinger.ping(False, f"{unit} failed: {reason}")
                done.append("heartbeat")
            except (TransientError, PermanentError) as exc:
                errors.append(exc)
    if not done:
        raise (
            errors[0]
            if errors
            else PermanentError(
                "nothing to notify: configure [pagerduty] (or [notify_failure] routing_key) "
                "or [heartbeat] fail_url"
            )
        )
    return done
