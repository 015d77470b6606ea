"""Atlassian Statuspage (REST API v1) behind the StatusPage port.

Opening creates an `investigating` incident that notifies subscribers and marks the named
components `degraded_performance` (subscribers of a component are only notified when it is
ticked). Before creating, the page's unresolved incidents are listed and one of the same
name opened since the entry was planned is taken instead, so a create that happened before
a crash is not repeated; an update is skipped when the same text was already posted. The
API allows about one request a second per key: 420 and 429 are TransientError with the
Retry-After hint (at least a second).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from adapters.http_api import JsonApi, obj
from gateway.ports import PermanentError, PublicIncident, TicketHandle


def _when(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


class Statuspage:
    """Incidents on one status page, with an API key (`Authorization: OAuth <key>`)."""

    def __init__(
        self,
        page_id: str,
        api_key: str,
        *,
        session: aiohttp.ClientSession,
        base_url: str = "https://api.statuspage.io",
        timeout_s: float = 15.0,
    ) -> None:
        self._api = JsonApi(
            "Statuspage",
            base_url,
            session,
            timeout_s=timeout_s,
            headers={"Authorization": f"OAuth {api_key}"},
            secrets=(api_key,),
            retry_statuses=(420, 429),
        )
        self._page = f"/v1/pages/{page_id}"

    def __repr__(self) -> str:
        return f"Statuspage(page={self._page!r})"

    async def open(self, incident: PublicIncident) -> TicketHandle:
        """Take the same-named unresolved incident opened since it was planned, or create."""
        floor = incident.since - timedelta(minutes=5) if incident.since else None
        found = await self._api.call("GET", f"{self._page}/incidents/unresolved")
        for existing in found.body or []:
            created = _when(obj(existing, "created_at"))
            if obj(existing, "name") == incident.name and (
                floor is None or (created is not None and created >= floor)
            ):
                return _handle(existing)
        answer = await self._api.call(
            "POST",
            f"{self._page}/incidents",
            json_body={
                "incident": {
                    "name": incident.name,
                    "status": "investigating",
                    "body": incident.body,
                    "component_ids": list(incident.component_ids),
                    "components": {c: "degraded_performance" for c in incident.component_ids},
                    "deliver_notifications": True,
                }
            },
        )
        return _handle(answer.body)

    async def update(
        self, external_id: str, body: str, since: datetime | None
    ) -> Mapping[str, Any]:
        """Post an update, unless the same text was posted since it was planned."""
        floor = since - timedelta(minutes=5) if since else None
        current = await self._api.call("GET", f"{self._page}/incidents/{external_id}")
        for update in obj(current.body, "incident_updates") or []:
            created = _when(obj(update, "created_at"))
            recent = floor is None or (created is not None and created >= floor)
            if obj(update, "body") == body and recent:
                return {"update": "already there"}
        await self._api.call(
            "PATCH",
            f"{self._page}/incidents/{external_id}",
            json_body={"incident": {"body": body, "deliver_notifications": True}},
        )
        return {"update": "posted"}

    async def resolve(self, external_id: str, body: str) -> Mapping[str, Any]:
        """Resolve, with its components back to operational."""
        current = await self._api.call("GET", f"{self._page}/incidents/{external_id}")
        if obj(current.body, "status") == "resolved":
            return {"resolve": "already resolved"}
        ids = [str(obj(c, "id")) for c in obj(current.body, "components") or []]
        await self._api.call(
            "PATCH",
            f"{self._page}/incidents/{external_id}",
            json_body={
                "incident": {
                    "status": "resolved",
                    "body": body,
                    "deliver_notifications": True,
                    "components": {c: "operational" for c in ids},
                }
            },
        )
        return {"resolve": "resolved"}


def _handle(incident: Any) -> TicketHandle:
    incident_id = obj(incident, "id")
    if incident_id is None:
        raise PermanentError("Statuspage answered without an incident id")
    return TicketHandle(str(incident_id), obj(incident, "shortlink"))
