"""The composition root: the one place that imports adapters and wires the daemon together.

`App.run` owns the lifecycle: open the store, start the workers in a TaskGroup, start
intake, then on stop run it all down in reverse — stop intake (letting commits in flight
finish), process what was accepted, drain the outbox within a timeout, close egress, close
the store. Nothing accepted is lost by a stop: whatever is left is still in the store.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from contextlib import AsyncExitStack

import aiohttp
import structlog

from adapters.mail_out import FolderMailer, SmtpRelayMailer
from adapters.matrix import MatrixLink, RoomEvent
from adapters.pagerduty import PagerDutyPager
from adapters.smtp_intake import SmtpIntakeServer
from gateway.config import Config
from gateway.domain import Plan
from gateway.egress import LocalPager, make_handlers
from gateway.intake import ChatIntake, MailIntake
from gateway.outbox import OutboxWorker, RetryPolicy
from gateway.pipeline import Settings
from gateway.ports import MailSender, Pager
from gateway.relay import ChatSettings
from gateway.replies import Sender
from gateway.store import Store
from gateway.worker import Clock, InboxWorker, utcnow
from rules.book import Rulebook

log = structlog.get_logger("gateway.app")


def chat_rooms(config: Config) -> dict[str, str]:
    """Report rooms and the mailbox kind each feeds."""
    m = config.matrix
    return {} if m is None else {r.room: r.mailbox for r in m.report_rooms}


def pipeline_settings(config: Config) -> Settings:
    """The deployment facts the pure pipeline needs."""
    address = config.mail_out.from_address
    domain = address.rpartition("@")[2]
    m = config.matrix
    chat = None if m is None else ChatSettings(
        bot_user_id=m.user_id, incidents_room=m.incidents_room, report_rooms=chat_rooms(config),
        engineers=frozenset(m.engineers), min_power_level=m.min_power_level,
    )
    return Settings(
        sender=Sender(address=address, name=config.mail_out.from_name, msgid_domain=domain,
                      loop_token=f"chatops-gateway; {domain}"),
        pager_source=config.pagerduty.source if config.pagerduty else "chatops-gateway",
        signature=config.mail_out.from_name,
        chat=chat,
    )


async def _instance_id(store: Store) -> str:
    """A random id for this database, made once (prefixes chat transaction ids)."""
    value = await store.kv_get("instance_id")
    if value is None:
        value = secrets.token_hex(6)
        await store.kv_set("instance_id", value)
    return value


class App:
    """One daemon instance. Constructing it does nothing; `run` does everything."""

    def __init__(self, config: Config, rulebook: Rulebook, clock: Clock = utcnow) -> None:
        self.config = config
        self.rulebook = rulebook
        self.clock = clock
        self.ready = asyncio.Event()
        self.smtp_port: int | None = None
        self.matrix: MatrixLink | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, then shut down in order."""
        store = Store(self.config.database_path())
        await store.open()
        try:
            async with AsyncExitStack() as stack:
                pager, provider = await self._pager(stack)
                await self._serve(store, pager, provider, self._mailer(), stop)
        finally:
            await store.close()
            log.info("gateway.stopped")

    async def _pager(self, stack: AsyncExitStack) -> tuple[Pager, str]:
        pd = self.config.pagerduty
        if pd is None:
            return LocalPager(), "local"
        session = await stack.enter_async_context(aiohttp.ClientSession())
        key = self.config.read_secret(pd.routing_key)
        return PagerDutyPager(routing_key=key, base_url=pd.url, session=session,
                              timeout_s=pd.timeout_s), "pagerduty"

    def _mailer(self) -> MailSender:
        out = self.config.mail_out
        if out.mode == "folder" or out.smtp is None:
            return FolderMailer(self.config.mail_folder())
        relay = out.smtp
        password = self.config.read_secret(relay.password) if relay.password else None
        return SmtpRelayMailer(hostname=relay.host, port=relay.port, username=relay.username,
                               password=password, starttls=relay.starttls, use_tls=relay.tls,
                               timeout_s=relay.timeout_s)

    async def _serve(self, store: Store, pager: Pager, provider: str, mailer: MailSender,
                     stop: asyncio.Event) -> None:
        cfg = self.config
        policy = RetryPolicy(max_attempts=cfg.outbox.max_attempts,
                             initial_s=cfg.outbox.backoff_initial_s,
                             max_s=cfg.outbox.backoff_max_s)
        link = self._matrix(store)
        handlers = make_handlers(pager, mailer, provider, link, store,
                                 await _instance_id(store))
        outbox = OutboxWorker(store, handlers, policy, cfg.outbox.concurrency, self.clock)

        def planned(plans: Sequence[Plan]) -> None:
            if any(plan.outbox for plan in plans):
                outbox.wake()

        worker = InboxWorker(store, self.rulebook, pipeline_settings(cfg), planned, self.clock)
        intake = MailIntake(store, cfg.mailboxes.emergency, cfg.mailboxes.support, worker.wake,
                            self.clock)
        smtp = self._smtp(intake) if cfg.smtp.enabled else None
        chat_intake = ChatIntake(store, chat_rooms(cfg), worker.wake, self.clock)
        self.matrix = link
        await worker.start()  # the parse sandbox is up before the first message comes in
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(worker.run(), name="inbox-worker"),
                     group.create_task(outbox.run(), name="outbox-worker")]
            if link is not None:
                async def deliver(events: list[RoomEvent]) -> None:
                    await chat_intake.accept_all((e.room_id, e.event, e.sender_power)
                                                 for e in events)

                link.deliver_to(deliver)
                tasks.append(group.create_task(link.run(), name="matrix-sync"))
            if smtp is not None:
                await smtp.start()
                self.smtp_port = smtp.port
            self.ready.set()
            log.info("gateway.ready", smtp_port=self.smtp_port)
            await stop.wait()
            log.info("gateway.stopping")
            if smtp is not None:
                await smtp.stop()
            # Let the workers finish what they hold (a delivered page is recorded before
            # they return); the chat link just stops. Then drain what is left.
            worker.stop()
            outbox.stop()
            for task in tasks[2:]:
                task.cancel()
            _, late = await asyncio.wait(tasks, timeout=cfg.outbox.drain_timeout_s)
            for task in late:
                task.cancel()
            await self._drain(worker, outbox)
            await worker.close()
            if link is not None:
                await link.close()

    def _matrix(self, store: Store) -> MatrixLink | None:
        m = self.config.matrix
        if m is None:
            return None
        read = self.config.read_secret
        return MatrixLink(
            homeserver=m.homeserver, user_id=m.user_id,
            rooms=[m.incidents_room, *(r.room for r in m.report_rooms)], store=store,
            access_token=read(m.access_token) if m.access_token else None,
            password=read(m.password) if m.password else None, device_id=m.device_id,
            device_name=m.device_name, sync_timeout_s=m.sync_timeout_s,
            backoff_max_s=m.backoff_max_s,
        )

    def _smtp(self, intake: MailIntake) -> SmtpIntakeServer:
        s = self.config.smtp
        return SmtpIntakeServer(intake, host=s.host, port=s.port, hostname=s.hostname,
                                max_message_bytes=s.max_message_bytes,
                                max_recipients=s.max_recipients,
                                commit_timeout_s=s.commit_timeout_s)

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
