"""Turning outbox entries into calls on the egress ports, and the built-in (local) egresses.

The payload formats of each outbox kind are known here and in the pipeline only; adapters
see ports' plain arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from gateway.domain import OutboxEntry, OutboxKind
from gateway.outbox import Handler
from gateway.ports import MailSender, Pager, PageRequest

log = structlog.get_logger("gateway.egress")


class LocalPager:
    """The embedded default when no PagerDuty routing key is configured: the page is recorded
    in the store (by the outbox's completion) and logged loudly, so nothing is silently lost."""

    async def trigger(self, page: PageRequest) -> Mapping[str, Any]:
        """Record only."""
        log.warning("incident.page_recorded_locally", dedup_key=page.dedup_key,
                    severity=page.severity)
        return {"provider": "local"}

    async def acknowledge(self, dedup_key: str) -> Mapping[str, Any]:
        """Record only."""
        return {"provider": "local"}

    async def resolve(self, dedup_key: str) -> Mapping[str, Any]:
        """Record only."""
        return {"provider": "local"}


def make_handlers(pager: Pager, mailer: MailSender, provider: str) -> dict[OutboxKind, Handler]:
    """One handler per outbox kind."""

    async def page(entry: OutboxEntry) -> dict[str, Any]:
        p = entry.payload
        result = await pager.trigger(PageRequest(
            dedup_key=p["dedup_key"], summary=p["summary"], severity=p["severity"],
            source=p["source"], details=p["details"],
        ))
        return {"provider": provider, **result}

    async def ticket(entry: OutboxEntry) -> dict[str, Any]:
        # Built-in tickets: the row is written by the outbox completion, in its transaction.
        return {"backend": "builtin", "external_id": f"T-{entry.incident_id}"}

    async def mail(entry: OutboxEntry) -> dict[str, Any]:
        p = entry.payload
        data = str(p["data"]).encode("ascii", "surrogateescape")
        result = await mailer.send(data, p["mail_from"], p["rcpt_to"])
        return dict(result)

    return {OutboxKind.PAGE_TRIGGER: page, OutboxKind.TICKET_CREATE: ticket,
            OutboxKind.MAIL_SEND: mail}
