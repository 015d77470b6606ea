"""A small fake of the Zendesk Support Tickets API (the parts the adapter uses).

Follows the public contract: Basic auth `{email}/token:{token}`; `POST /api/v2/tickets`
answers 201 `{"ticket": …}` and honours `Idempotency-Key` (a repeat with the same key and
body returns the first answer with `x-idempotency-lookup: hit`; a different body with the
same key is 400 `IdempotentRequestError`); `GET /api/v2/tickets?external_id=` lists by
external id; `PUT /api/v2/tickets/{id}` adds a comment and changes fields; comments list
newest first with `sort_order=desc` and offset pagination (`next_page`); 404
`RecordNotFound`; 422 `RecordInvalid`; solving an unassigned ticket is refused.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any, ClassVar

from aiohttp import web

from tests.fakes.http_base import FakeApi, page_of


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeZendesk(FakeApi):
    """Tickets with comments, in memory."""

    unauthorised_body: ClassVar[dict[str, Any]] = {"error": "Couldn't authenticate you"}

    def __init__(self, email: str = "agent@example.org", token: str = "zd-token") -> None:
        super().__init__()
        basic = base64.b64encode(f"{email}/token:{token}".encode()).decode()
        self.authorization = f"Basic {basic}"
        self.agent_id = 900
        self.tickets: dict[int, dict[str, Any]] = {}
        self.comments: dict[int, list[dict[str, Any]]] = {}
        self._idempotency: dict[str, tuple[str, dict[str, Any]]] = {}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v2/tickets.json", self._list),
            web.post("/api/v2/tickets.json", self._create),
            web.get("/api/v2/tickets/{id}.json", self._show),
            web.put("/api/v2/tickets/{id}.json", self._update),
            web.get("/api/v2/tickets/{id}/comments.json", self._comments),
        ]

    async def _list(self, request: web.Request) -> web.Response:
        found = [
            t
            for t in self.tickets.values()
            if "external_id" not in request.query
            or t["external_id"] == request.query["external_id"]
        ]
        return web.json_response(
            {"tickets": found, "next_page": None, "previous_page": None, "count": len(found)}
        )

    async def _create(self, request: web.Request) -> web.Response:
        raw = await request.text()
        key = request.headers.get("Idempotency-Key")
        if key and key in self._idempotency:
            first_body, first_answer = self._idempotency[key]
            if first_body != raw:
                return web.json_response(
                    {
                        "error": "IdempotentRequestError",
                        "description": "Request parameters do not match the original",
                    },
                    status=400,
                )
            return web.json_response(
                first_answer, status=201, headers={"x-idempotency-lookup": "hit"}
            )
        fields = json.loads(raw).get("ticket") or {}
        body = (fields.get("comment") or {}).get("body")
        if not body:
            return _invalid("description", "Description: cannot be blank")
        tid = len(self.tickets) + 1
        ticket = {
            "id": tid,
            "url": f"{self.url}/api/v2/tickets/{tid}.json",
            "subject": fields.get("subject"),
            "description": body,
            "status": "new",
            "priority": fields.get("priority"),
            "tags": fields.get("tags", []),
            "external_id": fields.get("external_id"),
            "assignee_id": None,
            "requester": fields.get("requester"),
            "created_at": _now(),
        }
        self.tickets[tid] = ticket
        self.comments[tid] = [
            {
                "id": 1,
                "body": body,
                "public": fields["comment"].get("public", True),
                "created_at": _now(),
            }
        ]
        answer = {"ticket": ticket}
        if key:
            self._idempotency[key] = (raw, answer)
        return web.json_response(
            answer,
            status=201,
            headers={
                "Location": ticket["url"],
                **({"x-idempotency-lookup": "miss"} if key else {}),
            },
        )

    def _ticket(self, request: web.Request) -> dict[str, Any] | None:
        return self.tickets.get(int(request.match_info["id"]))

    async def _show(self, request: web.Request) -> web.Response:
        ticket = self._ticket(request)
        if ticket is None:
            return _not_found()
        return web.json_response({"ticket": ticket})

    async def _update(self, request: web.Request) -> web.Response:
        ticket = self._ticket(request)
        if ticket is None:
            return _not_found()
        fields = (await request.json()).get("ticket") or {}
        if fields.get("assignee_email"):
            ticket["assignee_id"] = self.agent_id
        if fields.get("status") == "solved" and ticket["assignee_id"] is None:
            return _invalid("assignee", "Assignee: is required when the ticket is solved")
        comment = fields.get("comment")
        if comment:
            comments = self.comments[ticket["id"]]
            comments.append(
                {
                    "id": len(comments) + 1,
                    "body": comment["body"],
                    "public": comment.get("public", True),
                    "created_at": _now(),
                }
            )
        for name in ("status", "subject", "priority"):
            if name in fields:
                ticket[name] = fields[name]
        if comment and ticket["status"] == "new":
            ticket["status"] = "open"
        return web.json_response({"ticket": ticket, "audit": {"events": []}})

    async def _comments(self, request: web.Request) -> web.Response:
        ticket = self._ticket(request)
        if ticket is None:
            return _not_found()
        items = list(self.comments[ticket["id"]])
        if request.query.get("sort_order") == "desc":
            items.reverse()
        shown, number, pages = page_of(items, request, default_size=100)
        next_page = None
        if number < pages:
            query = {**request.query, "page": str(number + 1)}
            next_page = str(request.url.with_query(query))
        return web.json_response({"comments": shown, "next_page": next_page, "count": len(items)})

    def public_comments(self, tid: int) -> list[str]:
        """Comments the requester would see."""
        return [c["body"] for c in self.comments[tid] if c["public"]]


def _not_found() -> web.Response:
    return web.json_response({"error": "RecordNotFound", "description": "Not found"}, status=404)


def _invalid(field: str, description: str) -> web.Response:
    return web.json_response(
        {
            "error": "RecordInvalid",
            "description": "Record validation errors",
            "details": {field: [{"description": description}]},
        },
        status=422,
    )
