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
from typing import TYPE_CHECKING, Any

import structlog

from adapters.mail_out import FolderMailer, SmtpRelayMailer
from adapters.sdnotify import Notifier
from adapters.smtp_intake import SmtpIntakeServer
from gateway.config.model import Config
from gateway.config.settings import chat_rooms, pipeline_settings, sla_settings
from gateway.deliver.deadletter import alert_in
from gateway.deliver.egress import LocalPager, make_handlers
from gateway.deliver.external import (
    HandlerFactory,
    mirror_handlers,
    mirror_settings,
    security_rooms,
)
from gateway.deliver.outbox import OutboxWorker, RetryPolicy
from gateway.domain import Plan
from gateway.parse.sandbox import ParseSandbox
from gateway.plan.e2ee import PinnedDevice
from gateway.plan.tokens import new_key
from gateway.ports import MailSender, Pager, Store, TicketBackend
from gateway.run import metrics
from gateway.run.cluster import Cluster, singleton
from gateway.run.intake import ChatIntake, MailIntake
from gateway.run.scheduler import Scheduler
from gateway.run.service import INSTANCE_KEY, Loader, Service, endpoint_file
from gateway.run.worker import Clock, InboxWorker, utcnow
from gateway.store.factory import make_store
from rules.book import Rulebook
from rules.types import Mailbox

# Start-up time is mostly imports: an adapter (and the library behind it: matrix-nio,
# aiohttp, aioimaplib, dkimpy) is imported where it is built, only when it is configured.
if TYPE_CHECKING:
    from adapters.http_status import StatusServer
    from adapters.imap_intake import ImapIntake
    from adapters.matrix import MatrixLink, RoomEvent
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
    status: StatusServer | None = None
    link: MatrixLink | None = None
    imap: list[ImapIntake] = field(default_factory=list)


class App:
    """One daemon instance. Constructing it does nothing; `run` does everything."""

    def __init__(self, config: Config, rulebook: Rulebook, clock: Clock = utcnow,
                 loader: Loader | None = None) -> None:
        self.config = config
        self.rulebook = rulebook
        self.clock = clock
        self.ready = asyncio.Event()
        self.smtp_port: int | None = None
        self.matrix: MatrixLink | None = None
        self.imap: list[ImapIntake] = []
        self.loader = loader  # re-reads the configuration and rulebook on reload
        self.reload_wanted = asyncio.Event()
        self.service: Service | None = None
        self.http_port: int | None = None
        self.scheduler: Scheduler | None = None
        self.cluster: Cluster | None = None  # several nodes on PostgreSQL: leases, claims

    def request_reload(self) -> None:
        """SIGHUP: re-read the configuration and rulebook (see gateway.run.service)."""
        self.reload_wanted.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, then shut down in order."""
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
                pager, provider, routes = await self._pager(stack)
                egress = _Egress(pager, provider, routes, self._mailer(),
                                 await self._external(store, stack))
                await self._serve(store, egress, stop, sandbox)
        finally:
            await sandbox_up
            await sandbox.close()
            await store.close()
            log.info("gateway.stopped")

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
                    routing_key=self.config.read_secret(step.routing_key), base_url=pd.url,
                    session=session, timeout_s=pd.timeout_s)
        return PagerDutyPager(routing_key=key, base_url=pd.url, session=session,
                              timeout_s=pd.timeout_s), "pagerduty", routes

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
            tickets = ZendeskTickets(t.zendesk.url, t.zendesk.email, read(t.zendesk.token),
                                     session=session, timeout_s=t.zendesk.timeout_s)
        elif t.deskpro is not None and t.backend == "deskpro":
            tickets = DeskproTickets(
                t.deskpro.url, read(t.deskpro.api_key), session=session,
                fallback_requester=t.deskpro.requester or self.config.mail_out.from_address,
                timeout_s=t.deskpro.timeout_s)
        elif t.github is not None and t.backend == "github":
            tickets = GitHubIssues(t.github.repo, read(t.github.token), session=session,
                                   base_url=t.github.url, timeout_s=t.github.timeout_s)
        page = None if sp is None else Statuspage(
            sp.page_id, read(sp.api_key), session=session, base_url=sp.url,
            timeout_s=sp.timeout_s)
        return mirror_handlers(store, tickets, page, sp.page_id if sp else "")

    def _mailer(self) -> MailSender:
        out = self.config.mail_out
        if out.mode == "folder" or out.smtp is None:
            return FolderMailer(self.config.mail_folder())
        relay = out.smtp
        password = self.config.read_secret(relay.password) if relay.password else None
        return SmtpRelayMailer(hostname=relay.host, port=relay.port, username=relay.username,
                               password=password, starttls=relay.starttls, use_tls=relay.tls,
                               timeout_s=relay.timeout_s)

    async def _outbox(self, store: Store, egress: _Egress, link: MatrixLink | None
                      ) -> OutboxWorker:
        """The outbox worker with a handler for every kind of effect."""
        cfg = self.config
        policy = RetryPolicy(max_attempts=cfg.outbox.max_attempts,
                             initial_s=cfg.outbox.backoff_initial_s,
                             max_s=cfg.outbox.backoff_max_s)
        instance = await _instance_id(store)
        handlers = make_handlers(egress.pager, egress.mailer, egress.provider, link, store,
                                 instance, egress.routes)
        handlers.update(egress.mirror(instance))
        if self.cluster is not None:
            handlers = self.cluster.fenced(handlers)
        room = cfg.matrix.incidents_room if cfg.matrix else None
        return OutboxWorker(store, handlers, policy, cfg.outbox.concurrency, self.clock,
                            alert_for=alert_in(room), poll_s=cfg.outbox.poll_interval_s)

    async def _processing(self, store: Store, outbox: OutboxWorker, sandbox: ParseSandbox
                          ) -> tuple[InboxWorker, Scheduler]:
        """The inbox worker and the SLA scheduler; both wake the outbox when they plan."""
        cfg = self.config
        settings = pipeline_settings(cfg, await _thread_key(cfg, store))
        scheduler = Scheduler(store, self.rulebook, sla_settings(cfg, settings),
                              lambda _fired: outbox.wake(), self.clock)

        def planned(plans: Sequence[Plan]) -> None:
            if any(plan.outbox for plan in plans):
                outbox.wake()
            scheduler.changed()  # an incident may have changed: its clocks may have moved

        worker = InboxWorker(store, self.rulebook, settings, planned, self.clock, sandbox=sandbox,
                             mirror=mirror_settings(cfg, self.rulebook, settings.sender))
        return worker, scheduler

    async def _serve(self, store: Store, egress: _Egress, stop: asyncio.Event,
                     sandbox: ParseSandbox) -> None:
        """Serve until `stop`; the listeners and links are closed whether the stop was asked
        for or a task failed (then before the store closes, in run())."""
        edges = _Edges()
        try:
            await self._serve_until(store, egress, stop, sandbox, edges)
        finally:
            await self._close(edges)

    async def _serve_until(self, store: Store, egress: _Egress, stop: asyncio.Event,
                           sandbox: ParseSandbox, edges: _Edges) -> None:
        cfg = self.config
        cluster = self.cluster = _cluster(cfg, store)
        link = edges.link = self.matrix = self._matrix(store)
        outbox = await self._outbox(store, egress, link)
        worker, scheduler = await self._processing(store, outbox, sandbox)
        outbox.busy = worker.in_storm  # outbox rounds wait for a lull in a storm too
        self.scheduler = scheduler
        intake = MailIntake(store, cfg.mailboxes.emergency, cfg.mailboxes.support, worker.wake,
                            self.clock)
        smtp = self._smtp(intake) if cfg.smtp.enabled else None
        chat_intake = ChatIntake(store, chat_rooms(cfg), worker.wake, self.clock)
        edges.imap = self.imap = self._imap(store, intake)
        service = self.service = self._service(store, egress.provider, smtp, link)
        once = _Once(cluster, stop)
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(once("inbox", worker.run), name="inbox-worker"),
                     group.create_task(outbox.run(), name="outbox-worker")]
            timers = ([group.create_task(once("sla", scheduler.run), name="sla-scheduler")]
                      if cfg.sla.enabled else [])
            if link is not None:
                async def deliver(events: list[RoomEvent]) -> None:
                    await chat_intake.accept_all((e.room_id, e.event, e.sender_power)
                                                 for e in events)
                    metrics.ACCEPTED.inc(len(events), channel="matrix")

                link.deliver_to(deliver)
                tasks.append(group.create_task(once("matrix", link.run, link.connected.clear),
                                               name="matrix-sync"))
            tasks.extend(group.create_task(once(f"imap:{box.name}", box.run),
                                           name=f"imap-{box.name}") for box in self.imap)
            if cluster is not None:
                tasks += _cluster_tasks(group, cluster, store, link)
            if smtp is not None:
                edges.smtp = smtp
                await smtp.start()
                self.smtp_port = smtp.port
            edges.status = await self._status_endpoint(service)
            tasks += [group.create_task(service.watch(), name="service-watch"),
                      group.create_task(service.serve_reloads(
                          self.reload_wanted, self.loader, self._apply(worker, scheduler)),
                          name="reloads")]
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
            if smtp is not None:
                edges.smtp = None  # stopped here, first: intake ends before the drain
                await smtp.stop()
            await self._wind_down(worker, outbox, scheduler, tasks, timers)

    async def _close(self, edges: _Edges) -> None:
        """Stop listening and close the links, each bounded and each on its own: one that
        fails is logged and the rest are still closed."""
        closers: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        if edges.smtp is not None:
            closers.append(("smtp", edges.smtp.stop))
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

    def _service(self, store: Store, provider: str, smtp: SmtpIntakeServer | None,
                 link: MatrixLink | None) -> Service:
        """Readiness, STATUS lines and health: every intake and egress by its state."""
        cfg = self.config
        service = Service(store, cfg, Notifier(), self.clock, {
            "pager": provider, "mail": cfg.mail_out.mode, **({"chat": "matrix"} if link else {})})
        components: list[tuple[str, object]] = [("smtp", smtp), ("matrix", link)]
        components += [(f"imap:{box.name}", box) for box in self.imap]
        for name, part in components:
            if part is not None:
                state: Callable[[], str] = partial(getattr, part, "state")
                lease = "matrix" if name == "matrix" else name
                if self.cluster is not None and name != "smtp":
                    state = self.cluster.state(lease, state)
                service.add(name, state)
        if hasattr(store, "watch"):  # a database server: its link is a component too
            service.add("store", partial(getattr, store, "state"))
        return service

    async def _wind_down(self, worker: InboxWorker, outbox: OutboxWorker, scheduler: Scheduler,
                         tasks: list[asyncio.Task[None]],
                         timers: list[asyncio.Task[None]]) -> None:
        """Let the workers (the first two tasks) and the scheduler finish what they hold — a
        delivered page is recorded before they return — stop the rest, then drain."""
        worker.stop()
        outbox.stop()
        scheduler.stop()
        for task in tasks[2:]:
            task.cancel()
        _, late = await asyncio.wait([*tasks, *timers],
                                     timeout=self.config.outbox.drain_timeout_s)
        for task in late:
            task.cancel()
        await self._drain(worker, outbox)

    def _apply(self, worker: InboxWorker, scheduler: Scheduler
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

        server = StatusServer(service.report, service.metrics_text, host=h.host, port=h.port)
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
            homeserver=m.homeserver, user_id=m.user_id,
            rooms=[m.incidents_room, *(r.room for r in m.report_rooms),
                   *security_rooms(self.config),
                   *(s.room for s in self.config.escalation if s.room)], store=store,
            access_token=read(m.access_token) if m.access_token else None,
            password=read(m.password) if m.password else None, device_id=m.device_id,
            device_name=m.device_name, sync_timeout_s=m.sync_timeout_s,
            backoff_max_s=m.backoff_max_s, crypto=self._matrix_crypto(),
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
            pickle_key=self.config.read_secret(m.pickle_key), trust=m.trust,
            engineers=m.engineers,
            pinned=[PinnedDevice(d.user, d.device, d.ed25519) for d in m.trusted_devices])

    def _imap(self, store: Store, intake: MailIntake) -> list[ImapIntake]:
        if not self.config.imap:
            return []
        from adapters.imap_intake import ImapIntake  # noqa: PLC0415  (lazy, see above)

        return [
            ImapIntake(
                name=box.name, host=box.host, port=box.effective_port(), tls=box.tls,
                user=box.user, password=self.config.read_secret(box.password),
                mailbox=Mailbox(box.mailbox), sink=intake, kv=store, clock=self.clock,
                folder=box.folder, processed_folder=box.processed_folder,
                ca_file=self.config.imap_ca_file(box), idle_renew_s=box.idle_renew_s,
                poll_interval_s=box.poll_interval_s, timeout_s=box.timeout_s,
                backoff_max_s=box.backoff_max_s, auth_retry_s=box.auth_retry_s,
            )
            for box in self.config.imap
        ]

    def _smtp(self, intake: MailIntake) -> SmtpIntakeServer:
        s = self.config.smtp
        return SmtpIntakeServer(intake, host=s.host, port=s.port, hostname=s.hostname,
                                max_message_bytes=s.max_message_bytes,
                                max_recipients=s.max_recipients,
                                commit_timeout_s=s.commit_timeout_s,
                                max_connections=s.max_connections,
                                idle_timeout_s=s.idle_timeout_s)

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


def _cluster_tasks(group: asyncio.TaskGroup, cluster: Cluster, store: Store,
                   link: MatrixLink | None) -> list[asyncio.Task[None]]:
    """The lease keepers and the store's watch; chat is claimed only by the Matrix node."""
    if link is not None and hasattr(store, "skip_kinds"):
        chat = frozenset({"chat.announce", "chat.send"})
        matrix = cluster.lease("matrix")
        store.skip_kinds = lambda: frozenset() if matrix.held() else chat
    tasks = [group.create_task(lease.run(), name=f"lease-{name}")
             for name, lease in cluster.leases.items()]
    watch = getattr(store, "watch", None)
    if watch is not None:
        tasks.append(group.create_task(watch(), name="store-watch"))
    return tasks


@dataclass(frozen=True)
class _Once:
    """Runs a loop under its lease on several nodes, or simply runs it on one."""

    cluster: Cluster | None
    stop: asyncio.Event

    def __call__(self, name: str, run: Callable[[], Coroutine[Any, Any, None]],
                 on_lost: Callable[[], None] | None = None) -> Coroutine[Any, Any, None]:
        if self.cluster is None:
            return run()
        # The lease is made now, before the keepers are started (_cluster_tasks).
        return singleton(self.cluster.lease(name), run, self.stop.is_set, on_lost)
