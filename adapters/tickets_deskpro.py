"""Deskpro (API v2) behind the TicketBackend port.

A ticket is created with its subject, requester, first message, urgency and two labels: a
fixed `chatops-gateway` one and our key. Before creating, the tickets with the key's label
are listed (`/ticket_labels/{label}/tickets`), so a create that happened before a crash is
found. Mirrored messages are agent notes (never emailed to the requester) ending with a
`[ref: key]` line that is looked for before posting. Authentication is an API key
(`Authorization: key <id>:<secret>`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

import aiohttp

from adapters.http_api import JsonApi, obj
from gateway.ports import NewTicket, PermanentError, TicketHandle, ref_marker

URGENCY = {"P1": 10, "P2": 8, "P3": 5, "P4": 2}
STATUSES = {"solved": "resolved", "open": "awaiting_agent"}
_MAX_PAGES = 20


class DeskproTickets:
    """Tickets in one Deskpro helpdesk, as the API key's agent."""

    name = "deskpro"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        session: aiohttp.ClientSession,
        fallback_requester: str,
        timeout_s: float = 15.0,
    ) -> None:
        self._api = JsonApi(
            "Deskpro",
            base_url,
            session,
            timeout_s=timeout_s,
            headers={"Authorization": f"key {api_key}"},
            secrets=(api_key,),
        )
        self._fallback = fallback_requester

    def __repr__(self) -> str:
        return f"DeskproTickets(base_url={self._api.base_url!r})"

    def link(self, ticket_id: str) -> str:
        """The agent interface's view of a ticket."""
        return f"{self._api.base_url}/agent/#app.tickets,t.o:{ticket_id}"

    async def create(self, ticket: NewTicket) -> TicketHandle:
        """Find the ticket labelled with our key, or create it."""
        found = await self._api.call("GET", f"/api/v2/ticket_labels/{quote(ticket.key)}/tickets")
        for existing in obj(found.body, "data") or []:
            return self._handle(existing)
        requester = ticket.requester_email() or self._fallback
        body = (
            ticket.body
            if requester == ticket.requester
            else (f"Reported by {ticket.requester}.\n\n{ticket.body}")
        )
        answer = await self._api.call(
            "POST",
            "/api/v2/tickets",
            json_body={
                "subject": ticket.title,
                "person": {"email": requester},
                "message": {"message": body, "format": "text"},
                "urgency": URGENCY.get(ticket.priority, 5),
                "labels": ["chatops-gateway", ticket.key],
            },
        )
        return self._handle(obj(answer.body, "data"))

    def _handle(self, ticket: Any) -> TicketHandle:
        ticket_id = obj(ticket, "id")
        if ticket_id is None:
            raise PermanentError("Deskpro answered without a ticket id")
        return TicketHandle(str(ticket_id), self.link(str(ticket_id)))

    async def comment(
        self, external_id: str, body: str, key: str, since: datetime | None
    ) -> Mapping[str, Any]:
        """An agent note, unless the marked one is already on the ticket."""
        path = f"/api/v2/tickets/{external_id}/messages"
        for page in range(1, _MAX_PAGES + 1):
            answer = await self._api.call("GET", path, params={"page": str(page), "count": "100"})
            if any(
                ref_marker(key) in str(obj(m, "message") or "")
                for m in obj(answer.body, "data") or []
            ):
                return {"comment": "already there"}
            total = obj(answer.body, "meta", "pagination", "total_pages") or 1
            if page >= int(total):
                break
        await self._api.call(
            "POST",
            path,
            json_body={
                "message": f"{body}\n\n{ref_marker(key)}",
                "format": "text",
                "is_agent_note": True,
            },
        )
        return {"comment": "added"}

    async def update(
        self, external_id: str, *, status: str | None = None, title: str | None = None
    ) -> Mapping[str, Any]:
        """Resolve or reopen, and/or change the subject."""
        fields: dict[str, Any] = {}
        if title:
            fields["subject"] = title
        if status:
            fields["status"] = STATUSES.get(status, status)
        if fields:
            await self._api.call("PUT", f"/api/v2/tickets/{external_id}", json_body=fields)
        return {"updated": sorted(fields)}
