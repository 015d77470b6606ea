"""Wiring of the daemon's view of itself: health and readiness, the status endpoint, the
heartbeat to an outside monitor and the end-to-end canary.

Owns which components the health report lists (every intake and egress link by its state),
the /healthz and /metrics listener, and the two self-checks. aiohttp is imported only for
the heartbeat here; the status endpoint's listener is bound before READY and its HTTP
server (aiohttp) attached right after it (adapters.http_status).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from functools import partial
from typing import TYPE_CHECKING

import structlog

from adapters.sdnotify import Notifier
from adapters.smtp_intake import SmtpIntakeServer
from gateway.config.model import Config
from gateway.deliver.links import LinkGate
from gateway.ports import Store
from gateway.run.canary import CanaryMonitor
from gateway.run.cluster import Cluster
from gateway.run.heartbeat import Heartbeat
from gateway.run.service import Service, write_endpoint
from gateway.run.worker import Clock

if TYPE_CHECKING:
    from adapters.http_status import StatusServer
    from adapters.imap_intake import ImapIntake
    from adapters.matrix import MatrixLink

log = structlog.get_logger("gateway.app")

Submit = Callable[[str, str, bytes], Awaitable[None]]


def service_for(
    config: Config,
    clock: Clock,
    store: Store,
    provider: str,
    links: tuple[SmtpIntakeServer | None, MatrixLink | None, Sequence[ImapIntake]],
    watched: tuple[CanaryMonitor | None, Cluster | None, list[LinkGate]],
) -> Service:
    """Readiness, STATUS lines and health: every intake and egress by its state."""
    smtp, link, imap = links
    canary, cluster, gates = watched
    service = Service(
        store,
        config,
        Notifier(),
        clock,
        {"pager": provider, "mail": config.mail_out.mode, **({"chat": "matrix"} if link else {})},
    )
    components: list[tuple[str, object]] = [("smtp", smtp), ("matrix", link)]
    components += [(f"imap:{box.name}", box) for box in imap]
    components.append(("canary", canary))
    for name, part in components:
        if part is not None:
            state: Callable[[], str] = partial(getattr, part, "state")
            if cluster is not None and name not in ("smtp", "canary"):
                state = cluster.state(name, state)
            service.add(name, state, getattr(part, "problem", None))
    if hasattr(store, "watch"):  # a database server: its link is a component too
        service.add("store", partial(getattr, store, "state"))
    service.gates = gates
    return service


async def status_endpoint(config: Config, service: Service) -> StatusServer | None:
    """Bind the /healthz and /metrics listener; a taken port is logged, never fatal (intake
    matters more). The bound address is written to the state folder for `status`. Until
    `StatusServer.serve` runs, connections wait in the listener's backlog."""
    h = config.http
    if not h.enabled:
        return None
    from adapters.http_status import StatusServer  # noqa: PLC0415  (lazy: no aiohttp yet)

    server = StatusServer(
        service.report,
        service.metrics_text,
        host=h.host,
        port=h.port,
        max_connections=h.max_connections,
        idle_timeout_s=h.idle_timeout_s,
    )
    try:
        server.bind()
    except OSError as exc:
        log.error("http.bind_failed", host=h.host, port=h.port, error=exc.strerror)
        return None
    await asyncio.to_thread(write_endpoint, config, f"http://{h.host}:{server.port}")
    return server


async def heartbeat(
    config: Config, service: Service, stack: AsyncExitStack | None
) -> Heartbeat | None:
    """Pings to an outside monitor while healthy (gateway.run.heartbeat), if configured."""
    hb = config.heartbeat
    if hb is None or stack is None:
        return None
    import aiohttp  # noqa: PLC0415  (lazy: only with a heartbeat)

    from adapters.heartbeat_http import HttpPinger  # noqa: PLC0415

    session = await stack.enter_async_context(aiohttp.ClientSession())
    pinger = HttpPinger(
        hb.url, session=session, method=hb.method, fail_url=hb.fail_url, timeout_s=hb.timeout_s
    )
    return Heartbeat(service.report, pinger, hb.interval_s)


def canary_for(
    config: Config, clock: Clock, key: bytes, submit: Submit, store: Store
) -> CanaryMonitor | None:
    """The end-to-end self-test (gateway.run.canary), unless turned off; on several
    nodes a canary another node's outbox delivered counts (the store's `canary_through`)."""
    c, boxes = config.canary, config.mailboxes
    if not c.enabled:
        return None
    rcpt = (boxes.support or boxes.emergency)[0]
    elsewhere: Callable[[str], Awaitable[bool]] | None = getattr(store, "canary_through", None)
    return CanaryMonitor(
        key,
        submit,
        config.mail_out.from_address,
        rcpt,
        c.interval_s,
        c.deadline_s,
        elsewhere,
        prune=store.prune_canaries,
        clock=clock,
    )
