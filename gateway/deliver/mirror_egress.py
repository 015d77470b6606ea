"""Outbox handlers for external tickets and the status page: payloads in, port calls out.

A ticket is keyed by this database's instance id and the incident id, so the backend can
find a ticket created just before a crash instead of opening a second one; a comment is
keyed by its outbox entry. Comments and updates wait for the ticket's creation to be
recorded, and skip incidents whose ticket lives elsewhere (made before the backend changed).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from gateway.deliver.outbox import Handler
from gateway.domain import OutboxEntry, OutboxKind, TicketRow
from gateway.payloads import StatuspageOpen, TicketCreate, TicketUpdate
from gateway.ports import (
    NewTicket,
    PublicIncident,
    StatusPage,
    Store,
    TicketBackend,
    TransientError,
)


def _since(entry: OutboxEntry) -> datetime | None:
    at = entry.payload.get("at")
    return datetime.fromisoformat(str(at)) if at else None


def ticket_key(prefix: str, incident_id: int | None) -> str:
    """The unique marker of an incident's ticket in the external tracker."""
    return f"chatops-{prefix}-{incident_id}"


def ticket_handlers(backend: TicketBackend, store: Store, prefix: str) -> dict[OutboxKind, Handler]:
    """Create, comment and update through `backend`."""

    async def create(entry: OutboxEntry) -> dict[str, Any]:
        p = cast(TicketCreate, entry.payload)
        handle = await backend.create(
            NewTicket(
                key=ticket_key(prefix, entry.incident_id),
                title=str(p["title"]),
                body=str(p["body"]),
                requester=str(p["requester"]),
                priority=str(p["priority"]),
                since=_since(entry),
            )
        )
        return {"backend": backend.name, "external_id": handle.external_id, "link": handle.link}

    async def ticket(entry: OutboxEntry) -> TicketRow | None:
        row = await store.ticket(entry.incident_id) if entry.incident_id else None
        if row is None:
            raise TransientError("waiting for the incident's ticket to be created", 2.0)
        return row if row.backend == backend.name else None

    async def comment(entry: OutboxEntry) -> dict[str, Any]:
        row = await ticket(entry)
        if row is None:
            return {"skipped": "the ticket is in another backend"}
        result = await backend.comment(
            row.external_id, str(entry.payload["body"]), f"{prefix}-m{entry.id}", _since(entry)
        )
        return {"backend": backend.name, **result}

    async def update(entry: OutboxEntry) -> dict[str, Any]:
        row = await ticket(entry)
        if row is None:
            return {"skipped": "the ticket is in another backend"}
        p = cast(TicketUpdate, entry.payload)
        if p.get("comment"):
            await backend.comment(
                row.external_id, str(p["comment"]), f"{prefix}-m{entry.id}", _since(entry)
            )
        result = await backend.update(row.external_id, status=p.get("status"), title=p.get("title"))
        return {"backend": backend.name, **result}

    return {
        OutboxKind.TICKET_CREATE: create,
        OutboxKind.TICKET_COMMENT: comment,
        OutboxKind.TICKET_UPDATE: update,
    }


def statuspage_handlers(page: StatusPage, page_id: str, store: Store) -> dict[OutboxKind, Handler]:
    """Open, update and resolve the incident's status-page incident."""

    async def open_(entry: OutboxEntry) -> dict[str, Any]:
        existing = await store.statuspage(entry.incident_id) if entry.incident_id else None
        if existing is not None and existing.status != "resolved":
            return {"skipped": f"already on the status page ({existing.external_id})"}
        p = cast(StatuspageOpen, entry.payload)
        handle = await page.open(
            PublicIncident(
                name=str(p["name"]),
                body=str(p["body"]),
                component_ids=tuple(str(c) for c in p["component_ids"]),
                since=_since(entry),
            )
        )
        return {"page_id": page_id, "external_id": handle.external_id, "link": handle.link}

    async def follow(entry: OutboxEntry) -> dict[str, Any]:
        existing = await store.statuspage(entry.incident_id) if entry.incident_id else None
        if existing is None or existing.status == "resolved":
            return {"skipped": "no open status-page incident"}
        body = str(entry.payload["body"])
        if entry.kind is OutboxKind.STATUSPAGE_UPDATE:
            return dict(await page.update(existing.external_id, body, _since(entry)))
        return dict(await page.resolve(existing.external_id, body))

    return {
        OutboxKind.STATUSPAGE_OPEN: open_,
        OutboxKind.STATUSPAGE_UPDATE: follow,
        OutboxKind.STATUSPAGE_RESOLVE: follow,
    }
