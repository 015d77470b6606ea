"""A small fake of the Deskpro API v2 for tickets and messages.

Follows the public contract: `Authorization: key <id>:<secret>`; answers wrap results in
`{"data": …, "meta": {"pagination": {…}}, "linked": {}}`; `POST /api/v2/tickets` answers 201
(400 without subject or person); `GET /api/v2/ticket_labels/{label}/tickets` lists tickets
with a label; messages are paginated with `page`/`count`; `POST …/messages` adds a reply or
an agent note (201); `PUT /api/v2/tickets/{id}` answers 204.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from aiohttp import web

from tests.fakes.http_base import FakeApi, page_of


class FakeDeskpro(FakeApi):
    """Tickets with messages, in memory."""

    unauthorised_body: ClassVar[dict[str, Any]] = {
        "status": 401,
        "code": "invalid_auth",
        "message": "Invalid API key",
    }

    def __init__(self, api_key: str = "1:dp-secret") -> None:
        super().__init__()
        self.authorization = f"key {api_key}"
        self.tickets: dict[int, dict[str, Any]] = {}
        self.messages: dict[int, list[dict[str, Any]]] = {}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/v2/tickets", self._create),
            web.get("/api/v2/ticket_labels/{label}/tickets", self._by_label),
            web.put("/api/v2/tickets/{id}", self._update),
            web.get("/api/v2/tickets/{id}/messages", self._messages),
            web.post("/api/v2/tickets/{id}/messages", self._add_message),
        ]

    def _paged(self, request: web.Request, items: list[Any]) -> web.Response:
        shown, number, pages = page_of(items, request, default_size=10)
        return web.json_response(
            {
                "data": shown,
                "linked": {},
                "meta": {
                    "pagination": {
                        "total": len(items),
                        "count": len(shown),
                        "current_page": number,
                        "total_pages": pages,
                    }
                },
            }
        )

    async def _create(self, request: web.Request) -> web.Response:
        data = await request.json()
        if not data.get("subject") or not (data.get("person") or {}).get("email"):
            return web.json_response(
                {"status": 400, "code": "invalid_input", "message": "Request input is invalid."},
                status=400,
            )
        tid = len(self.tickets) + 100
        ticket = {
            "id": tid,
            "ref": f"ABCD-{tid:04d}",
            "subject": data["subject"],
            "status": "awaiting_agent",
            "urgency": data.get("urgency", 1),
            "labels": data.get("labels", []),
            "person": data["person"],
            "date_created": datetime.now(UTC).isoformat(),
        }
        self.tickets[tid] = ticket
        first = (data.get("message") or {}).get("message", "")
        self.messages[tid] = [{"id": 1, "message": first, "is_agent_note": False}]
        return web.json_response({"data": ticket, "meta": {}, "linked": {}}, status=201)

    async def _by_label(self, request: web.Request) -> web.Response:
        label = request.match_info["label"]
        return self._paged(request, [t for t in self.tickets.values() if label in t["labels"]])

    async def _update(self, request: web.Request) -> web.StreamResponse:
        ticket = self.tickets.get(int(request.match_info["id"]))
        if ticket is None:
            return web.json_response({"status": 404, "message": "Not found"}, status=404)
        data = await request.json()
        for name in ("status", "subject", "urgency"):
            if name in data:
                ticket[name] = data[name]
        return web.Response(status=204)

    async def _messages(self, request: web.Request) -> web.Response:
        tid = int(request.match_info["id"])
        if tid not in self.tickets:
            return web.json_response({"status": 404, "message": "Not found"}, status=404)
        return self._paged(request, self.messages[tid])

    async def _add_message(self, request: web.Request) -> web.Response:
        tid = int(request.match_info["id"])
        if tid not in self.tickets:
            return web.json_response({"status": 404, "message": "Not found"}, status=404)
        data = await request.json()
        message = {
            "id": len(self.messages[tid]) + 1,
            "message": data.get("message", ""),
            "is_agent_note": bool(data.get("is_agent_note")),
        }
        self.messages[tid].append(message)
        return web.json_response({"data": message, "meta": {}, "linked": {}}, status=201)
