"""Zendesk Support (Tickets API) behind the TicketBackend port.

Creates with requester, subject, a private first comment, priority, tags and our key as the
ticket's `external_id`; the create carries the same key as `Idempotency-Key`, and before
creating we list tickets by `external_id`, so a create that happened before a crash is found
(also after the idempotency key's lifetime). Comments are private (the gateway already writes
to reporters) and end with a `[ref: key]` line that is looked for before posting. 429 and
409 (a concurrent update) are retried after Retry-After by the outbox.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from adapters.http_api import JsonApi, obj
from gateway.ports import NewTicket, PermanentError, TicketHandle, ref_marker

PRIORITIES = {"P1": "urgent", "P2": "high", "P3": "normal", "P4": "low"}
_MAX_PAGES = 10


class ZendeskTickets:
    """Tickets in one Zendesk account, as one agent (email + API token)."""

    name = "zendesk"

    def __init__(
        self,
        base_url: str,
        email: str,
        token: str,
        *,
        session: aiohttp.ClientSession,
        timeout_s: float = 15.0,
        tags: tuple[str, ...] = ("chatops-gateway",),
    ) -> None:
        basic = base64.b64encode(f"{email}/token:{token}".encode()).decode()
        self._api = JsonApi(
            "Zendesk",
            base_url,
            session,
            timeout_s=timeout_s,
            headers={"Authorization": f"Basic {basic}"},
            secrets=(token, basic),
            retry_statuses=(429, 409),
        )
        self._email = email
        self._tags = tags

    def __repr__(self) -> str:
        return f"ZendeskTickets(base_url={self._api.base_url!r})"

    def link(self, ticket_id: str) -> str:
        """The agent's view of a ticket."""
        return f"{self._api.base_url}/agent/tickets/{ticket_id}"

    async def create(self, ticket: NewTicket) -> TicketHandle:
        """Find the ticket whose external_id is our key, or create it idempotently."""
        found = await self._api.call(
            "GET", "/api/v2/tickets.json", params={"external_id": ticket.key}
        )
        for existing in obj(found.body, "tickets") or []:
            return self._handle(existing)
        fields: dict[str, Any] = {
            "subject": ticket.title,
            "external_id": ticket.key,
            "comment": {"body": ticket.body, "public": False},
            "priority": PRIORITIES.get(ticket.priority, "normal"),
            "tags": [*self._tags, ticket.priority.lower()],
        }
        if ticket.requester_email():
            fields["requester"] = {"email": ticket.requester, "name": ticket.requester}
        answer = await self._api.call(
            "POST",
            "/api/v2/tickets.json",
            json_body={"ticket": fields},
            headers={"Idempotency-Key": ticket.key},
        )
        return self._handle(obj(answer.body, "ticket"))

    def _handle(self, ticket: Any) -> TicketHandle:
        ticket_id = obj(ticket, "id")
        if ticket_id is None:
            raise PermanentError("Zendesk answered without a ticket id")
        return TicketHandle(str(ticket_id), self.link(str(ticket_id)))

    async def comment(
        self, external_id: str, body: str, key: str, since: datetime | None
    ) -> Mapping[str, Any]:
        """A private comment, unless the marked one is already on the ticket."""
        if await self._has_comment(external_id, ref_marker(key), since):
            return {"comment": "already there"}
        await self._api.call(
            "PUT",
            f"/api/v2/tickets/{external_id}.json",
            json_body={
                "ticket": {"comment": {"body": f"{body}\n\n{ref_marker(key)}", "public": False}}
            },
        )
        return {"comment": "added"}

    async def _has_comment(self, external_id: str, mark: str, since: datetime | None) -> bool:
        # Newest first; stop at the first comment older than the entry (it cannot be ours).
        floor = since - timedelta(minutes=5) if since else None
        url: str | None = f"/api/v2/tickets/{external_id}/comments.json"
        params: dict[str, str] | None = {"sort_order": "desc", "per_page": "100"}
        for _ in range(_MAX_PAGES):
            if url is None:
                break
            page = await self._api.call("GET", url, params=params)
            for c in obj(page.body, "comments") or []:
                if mark in str(obj(c, "body") or ""):
                    return True
                created = obj(c, "created_at")
                if (
                    floor
                    and created
                    and datetime.fromisoformat(str(created).replace("Z", "+00:00")) < floor
                ):
                    return False
            url, params = obj(page.body, "next_page"), None
        return False

    async def update(
        self, external_id: str, *, status: str | None = None, title: str | None = None
    ) -> Mapping[str, Any]:
        """Set status (solved/open) and/or subject; solving assigns the agent if nobody is."""
        fields: dict[str, Any] = {}
        if title:
            fields["subject"] = title
        if status:
            fields["status"] = status
            if status == "solved":
                current = await self._api.call("GET", f"/api/v2/tickets/{external_id}.json")
                if obj(current.body, "ticket", "assignee_id") is None:
                    fields["assignee_email"] = self._email  # Zendesk solves only assigned
        if fields:
            await self._api.call(
                "PUT", f"/api/v2/tickets/{external_id}.json", json_body={"ticket": fields}
            )
        return {"updated": sorted(fields)}
