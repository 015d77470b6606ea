"""Wiring of egress: the pager, outbound mail, ticket and status page backends, the outbox.

Owns what the outbox delivers through and the outbox worker itself: which adapter serves
each configured backend, the HTTP sessions they share (entered on the run's exit stack, so
they close after the drain), the handler for every kind of effect, and the gates the outbox
waits on while a link is down. aiohttp and the HTTP adapters are imported only when a
remote backend is configured.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

from adapters.mail_folder import FolderMailer
from gateway.config.model import Config
from gateway.deliver.alarm_egress import alarm_handler
from gateway.deliver.deadletter import alert_in
from gateway.deliver.egress import LocalPager, make_handlers
from gateway.deliver.external import HandlerFactory, mirror_handlers
from gateway.deliver.links import LinkGate, egress_gates
from gateway.deliver.outbox import OutboxWorker, RetryPolicy
from gateway.domain import OutboxKind
from gateway.ports import MailSender, Pager, Store, TicketBackend
from gateway.run.canary import CanaryMonitor
from gateway.run.cluster import Cluster
from gateway.run.worker import Clock

if TYPE_CHECKING:  # imported where it is built, only when [matrix] is configured
    from adapters.matrix import MatrixLink


@dataclass(frozen=True)
class Egress:
    """What the outbox delivers through, built once the store is open."""

    pager: Pager
    provider: str  # "pagerduty" or "local"
    routes: Mapping[str, Pager]  # escalation routing keys, by route name
    mailer: MailSender
    mirror: HandlerFactory  # ticket backend and status page handlers, by instance id


async def open_egress(config: Config, store: Store, stack: AsyncExitStack) -> Egress:
    """The configured pager, mailer and mirrors; their sessions close with `stack`."""
    pager, provider, routes = await _pager(config, stack)
    return Egress(pager, provider, routes, _mailer(config), await _external(config, store, stack))


async def _pager(config: Config, stack: AsyncExitStack) -> tuple[Pager, str, dict[str, Pager]]:
    """The pager, its provider's name, and the escalation routes' pagers."""
    pd = config.pagerduty
    if pd is None:
        return LocalPager(), "local", {}
    import aiohttp  # noqa: PLC0415  (lazy: only with a remote backend)

    from adapters.pagerduty import PagerDutyPager  # noqa: PLC0415

    session = await stack.enter_async_context(aiohttp.ClientSession())
    routes: dict[str, Pager] = {}
    for index, step in enumerate(config.escalation):
        if step.routing_key is not None:
            routes[f"escalation-{index + 1}"] = PagerDutyPager(
                routing_key=config.read_secret(step.routing_key),
                base_url=pd.url,
                session=session,
                timeout_s=pd.timeout_s,
            )
    pager = PagerDutyPager(
        routing_key=config.read_secret(pd.routing_key),
        base_url=pd.url,
        session=session,
        timeout_s=pd.timeout_s,
    )
    return pager, "pagerduty", routes


async def _external(config: Config, store: Store, stack: AsyncExitStack) -> HandlerFactory:
    """The configured ticket backend and status page, sharing one HTTP session."""
    t, sp, read = config.tickets, config.statuspage, config.read_secret
    if t.backend == "builtin" and sp is None:
        return lambda _prefix: {}
    import aiohttp  # noqa: PLC0415  (lazy: only with a remote backend)

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
            fallback_requester=t.deskpro.requester or config.mail_out.from_address,
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
            sp.page_id, read(sp.api_key), session=session, base_url=sp.url, timeout_s=sp.timeout_s
        )
    )
    return mirror_handlers(store, tickets, page, sp.page_id if sp else "")


def _mailer(config: Config) -> MailSender:
    out = config.mail_out
    if out.mode == "folder" or out.smtp is None:
        return FolderMailer(config.mail_folder())
    from adapters.mail_out import SmtpRelayMailer  # noqa: PLC0415  (aiosmtplib: a relay only)

    relay = out.smtp
    password = config.read_secret(relay.password) if relay.password else None
    return SmtpRelayMailer(
        hostname=relay.host,
        port=relay.port,
        username=relay.username,
        password=password,
        starttls=relay.starttls,
        use_tls=relay.tls,
        timeout_s=relay.timeout_s,
    )


def outbox_worker(
    config: Config,
    clock: Clock,
    store: Store,
    egress: Egress,
    link: MatrixLink | None,
    instance: str,
    extras: tuple[CanaryMonitor | None, Cluster | None],
) -> tuple[OutboxWorker, list[LinkGate]]:
    """The outbox worker with a handler for every kind of effect, and its link gates.

    `link` is the Matrix link (its `connected` event tells whether chat is up); `extras`
    are the canary (its handler) and the cluster (fenced handlers, chat under its lease)."""
    canary, cluster = extras
    policy = RetryPolicy(
        max_attempts=config.outbox.max_attempts,
        initial_s=config.outbox.backoff_initial_s,
        max_s=config.outbox.backoff_max_s,
    )
    handlers = make_handlers(
        egress.pager, egress.mailer, egress.provider, link, store, instance, egress.routes
    )
    handlers.update(egress.mirror(instance))
    if canary is not None:
        handlers[OutboxKind.CANARY] = canary.handler
    if link is not None:
        handlers[OutboxKind.CHAT_ALARM] = alarm_handler(link, store, f"{instance}a")
    if cluster is not None:
        handlers = cluster.fenced(handlers)
    gates = _gates(config, link, cluster)
    room = config.matrix.incidents_room if config.matrix else None
    worker = OutboxWorker(
        store,
        handlers,
        policy,
        config.outbox.concurrency,
        clock,
        alert_for=alert_in(room),
        poll_s=config.outbox.poll_interval_s,
        gates=gates,
    )
    return worker, gates


def _gates(config: Config, link: MatrixLink | None, cluster: Cluster | None) -> list[LinkGate]:
    """The egress links the outbox waits for while they are down."""
    chat_up = link.connected.is_set if link is not None else None
    if chat_up is not None and cluster is not None:  # Matrix runs under its lease
        chat_up = cluster.connected("matrix", chat_up)
    out = config.mail_out
    return egress_gates(
        [
            *(["pager"] if config.pagerduty else []),
            *(["mail"] if out.mode != "folder" and out.smtp else []),
            *(["chat"] if link else []),
        ],
        config.outbox.backoff_initial_s,
        config.outbox.backoff_max_s,
        {"chat": chat_up} if chat_up is not None else None,
    )
