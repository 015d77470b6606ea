"""Turning outbox entries into calls on the egress ports, and the built-in (local) egresses.

The payload formats of each outbox kind are known here and in the pipeline only; adapters
see ports' plain arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import structlog

from gateway.deliver.outbox import Handler
from gateway.domain import ChatPost, OutboxEntry, OutboxKind
from gateway.payloads import ChatAnnounce, ChatSend, MailSend, PageFollow, PageTrigger
from gateway.ports import (
    ChatSender,
    MailSender,
    Pager,
    PageRequest,
    PermanentError,
    Store,
    TransientError,
)

log = structlog.get_logger("gateway.deliver.egress")


class LocalPager:
    """The embedded default when no PagerDuty routing key is configured: the page is recorded
    in the store (by the outbox's completion) and logged loudly, so nothing is silently lost."""

    async def trigger(self, page: PageRequest) -> Mapping[str, Any]:
        """Record only."""
        log.warning(
            "incident.page_recorded_locally", dedup_key=page.dedup_key, severity=page.severity
        )
        return {"provider": "local"}

    async def acknowledge(self, dedup_key: str) -> Mapping[str, Any]:
        """Record only."""
        return {"provider": "local"}

    async def resolve(self, dedup_key: str) -> Mapping[str, Any]:
        """Record only."""
        return {"provider": "local"}


def make_handlers(
    pager: Pager,
    mailer: MailSender,
    provider: str,
    chat: ChatSender | None = None,
    store: Store | None = None,
    txn_prefix: str = "gw",
    routes: Mapping[str, Pager] | None = None,
) -> dict[OutboxKind, Handler]:
    """One handler per outbox kind; a page with a `route` goes to that pager (escalation)."""

    async def page(entry: OutboxEntry) -> dict[str, Any]:
        p = cast(PageTrigger, entry.payload)
        route = p.get("route")
        target = pager
        if route is not None:
            if routes is None or route not in routes:
                raise PermanentError(f"no pager configured for route {route}")
            target = routes[route]
        result = await target.trigger(
            PageRequest(
                dedup_key=p["dedup_key"],
                summary=p["summary"],
                severity=p["severity"],
                source=p["source"],
                details=p["details"],
            )
        )
        return {"provider": provider, **result}

    async def ticket(entry: OutboxEntry) -> dict[str, Any]:
        # Built-in tickets: the row is written by the outbox completion, in its transaction.
        return {"backend": "builtin", "external_id": f"T-{entry.incident_id}"}

    async def mail(entry: OutboxEntry) -> dict[str, Any]:
        p = cast(MailSend, entry.payload)
        data = str(p["data"]).encode("ascii", "surrogateescape")
        result = await mailer.send(data, p["mail_from"], p["rcpt_to"])
        return dict(result)

    async def follow(entry: OutboxEntry) -> dict[str, Any]:
        key = cast(PageFollow, entry.payload)["dedup_key"]
        if entry.kind is OutboxKind.PAGE_ACKNOWLEDGE:
            return {"provider": provider, **await pager.acknowledge(key)}
        return {"provider": provider, **await pager.resolve(key)}

    handlers: dict[OutboxKind, Handler] = {
        OutboxKind.PAGE_TRIGGER: page,
        OutboxKind.PAGE_ACKNOWLEDGE: follow,
        OutboxKind.PAGE_RESOLVE: follow,
        OutboxKind.TICKET_CREATE: ticket,
        OutboxKind.MAIL_SEND: mail,
    }
    if chat is not None and store is not None:
        handlers.update(_chat_handlers(chat, store, txn_prefix))
    return handlers


def _chat_handlers(chat: ChatSender, store: Store, prefix: str) -> dict[OutboxKind, Handler]:
    # Transaction ids come from the outbox row (stable across retries and restarts) and this
    # database's instance id (so a new database never collides with an old one's ids).
    async def announce(entry: OutboxEntry) -> dict[str, Any]:
        p = cast(ChatAnnounce, entry.payload)
        return dict(
            await chat.send(ChatPost(p["room_id"], p["body"]), txn_id=f"{prefix}-{entry.id}")
        )

    async def send(entry: OutboxEntry) -> dict[str, Any]:
        p = cast(ChatSend, entry.payload)
        root = p.get("thread_root")
        if p.get("incident_thread"):
            root = await store.chat_root(entry.incident_id) if entry.incident_id else None
            if root is None:
                # The announcement that roots the thread is not out yet: try again shortly.
                raise TransientError("waiting for the incident's announcement", 1.0)
        post = ChatPost(p["room_id"], p["body"], root, p.get("reply_to"))
        return dict(await chat.send(post, txn_id=f"{prefix}-{entry.id}"))

    return {OutboxKind.CHAT_ANNOUNCE: announce, OutboxKind.CHAT_SEND: send}
