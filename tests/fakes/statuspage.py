"""A small fake of the Atlassian Statuspage REST API v1 for incidents.

Follows the public contract: `Authorization: OAuth <key>`; `POST /v1/pages/{page}/incidents`
takes `{"incident": {name, status, body, component_ids, components, deliver_notifications}}`
and answers 201 with the incident (id, shortlink, status, components, incident_updates);
`GET …/incidents/unresolved` lists open incidents; `GET`/`PATCH …/incidents/{id}`; 422 with
`{"error": …}` on a missing name; the rate limit answers 420/429 (via `fail_next`).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any, ClassVar

from aiohttp import web

from tests.fakes.http_base import FakeApi


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class FakeStatuspage(FakeApi):
    """One page's incidents, in memory; `notified` counts updates sent to subscribers."""

    unauthorised_body: ClassVar[dict[str, Any]] = {"error": "Could not authenticate"}

    def __init__(self, page_id: str = "pg1", api_key: str = "sp-key") -> None:
        super().__init__()
        self.authorization = f"OAuth {api_key}"
        self.page = page_id
        self.incidents: dict[str, dict[str, Any]] = {}
        self.components: dict[str, str] = {}
        self.notified = 0

    def routes(self) -> list[web.RouteDef]:
        base = f"/v1/pages/{self.page}/incidents"
        return [
            web.get(base + "/unresolved", self._unresolved),
            web.post(base, self._create),
            web.get(base + "/{id}", self._show),
            web.patch(base + "/{id}", self._update),
        ]

    async def _unresolved(self, request: web.Request) -> web.Response:
        return web.json_response([i for i in self.incidents.values() if i["status"] != "resolved"])

    def _apply(self, incident: dict[str, Any], data: dict[str, Any]) -> None:
        for cid, state in (data.get("components") or {}).items():
            self.components[cid] = state
        ids = set(data.get("component_ids") or []) | set(data.get("components") or {})
        known = {c["id"] for c in incident["components"]}
        incident["components"] += [
            {"id": c, "status": self.components.get(c, "operational")} for c in sorted(ids - known)
        ]
        for c in incident["components"]:
            c["status"] = self.components.get(c["id"], c["status"])
        if "status" in data:
            incident["status"] = data["status"]
        if data.get("body"):
            incident["incident_updates"].insert(
                0,
                {
                    "id": secrets.token_hex(6),
                    "body": data["body"],
                    "status": incident["status"],
                    "created_at": _now(),
                },
            )
            self.notified += bool(data.get("deliver_notifications"))

    async def _create(self, request: web.Request) -> web.Response:
        data = (await request.json()).get("incident") or {}
        if not data.get("name"):
            return web.json_response({"error": "Name can't be blank"}, status=422)
        iid = secrets.token_hex(6)
        incident = {
            "id": iid,
            "name": data["name"],
            "status": data.get("status", "investigating"),
            "shortlink": f"https://stspg.io/{iid}",
            "created_at": _now(),
            "components": [],
            "incident_updates": [],
        }
        self._apply(incident, data)
        self.incidents[iid] = incident
        return web.json_response(incident, status=201)

    async def _show(self, request: web.Request) -> web.Response:
        incident = self.incidents.get(request.match_info["id"])
        if incident is None:
            return web.json_response({"error": "Not found"}, status=404)
        return web.json_response(incident)

    async def _update(self, request: web.Request) -> web.Response:
        incident = self.incidents.get(request.match_info["id"])
        if incident is None:
            return web.json_response({"error": "Not found"}, status=404)
        self._apply(incident, (await request.json()).get("incident") or {})
        return web.json_response(incident)
