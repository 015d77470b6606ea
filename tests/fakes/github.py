"""A small fake of the GitHub REST API for issues (the parts the adapter uses).

Follows the public contract: `Authorization: Bearer <token>` (401 "Bad credentials"), a
User-Agent is required (403 otherwise); issues and comments are listed with `per_page`/`page`
and a `Link: <…>; rel="next"` header, filtered by `labels`, `state` and `since`
(updated at or after); `POST …/issues` answers 201 (422 "Validation Failed" without a
title); `PATCH …/issues/{n}` changes title and state; comments are `POST …/comments` (201).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from aiohttp import web

from tests.fakes.http_base import FakeApi, page_of


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeGitHub(FakeApi):
    """One repository's issues and comments, in memory."""

    unauthorised_body: ClassVar[dict[str, Any]] = {
        "message": "Bad credentials",
        "documentation_url": "https://docs.github.com/rest",
    }

    def __init__(self, repo: str = "alphagov/paas-support", token: str = "gh-token") -> None:
        super().__init__()
        self.authorization = f"Bearer {token}"
        self.repo = repo
        self.issues: dict[int, dict[str, Any]] = {}
        self.comments: dict[int, list[dict[str, Any]]] = {}

    def routes(self) -> list[web.RouteDef]:
        base = f"/repos/{self.repo}/issues"
        return [
            web.get(base, self._list),
            web.post(base, self._create),
            web.patch(base + "/{n}", self._update),
            web.get(base + "/{n}/comments", self._list_comments),
            web.post(base + "/{n}/comments", self._comment),
        ]

    def _paged(self, request: web.Request, items: list[Any]) -> web.Response:
        shown, number, pages = page_of(items, request)
        headers = {}
        if number < pages:
            nxt = request.url.with_query({**request.query, "page": str(number + 1)})
            headers["Link"] = f'<{nxt}>; rel="next"'
        return web.json_response(shown, headers=headers)

    async def _list(self, request: web.Request) -> web.Response:
        if "User-Agent" not in request.headers:
            return web.json_response({"message": "User-Agent required"}, status=403)
        q = request.query
        found = [
            i
            for i in self.issues.values()
            if (q.get("state", "open") == "all" or i["state"] == q.get("state", "open"))
            and all(
                lab in [x["name"] for x in i["labels"]]
                for lab in filter(None, q.get("labels", "").split(","))
            )
            and i["updated_at"] >= q.get("since", "")
        ]
        return self._paged(request, sorted(found, key=lambda i: -i["number"]))

    async def _create(self, request: web.Request) -> web.Response:
        data = await request.json()
        if not data.get("title"):
            return web.json_response(
                {
                    "message": "Validation Failed",
                    "errors": [{"resource": "Issue", "code": "missing_field", "field": "title"}],
                },
                status=422,
            )
        n = len(self.issues) + 1
        issue = {
            "number": n,
            "title": data["title"],
            "body": data.get("body", ""),
            "state": "open",
            "state_reason": None,
            "labels": [{"name": lab} for lab in data.get("labels", [])],
            "html_url": f"https://github.com/{self.repo}/issues/{n}",
            "created_at": _now(),
            "updated_at": _now(),
        }
        self.issues[n] = issue
        self.comments[n] = []
        return web.json_response(issue, status=201)

    async def _update(self, request: web.Request) -> web.Response:
        issue = self.issues.get(int(request.match_info["n"]))
        if issue is None:
            return web.json_response({"message": "Not Found"}, status=404)
        data = await request.json()
        for name in ("title", "state", "state_reason"):
            if name in data:
                issue[name] = data[name]
        issue["updated_at"] = _now()
        return web.json_response(issue)

    async def _list_comments(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n not in self.issues:
            return web.json_response({"message": "Not Found"}, status=404)
        since = request.query.get("since", "")
        return self._paged(request, [c for c in self.comments[n] if c["updated_at"] >= since])

    async def _comment(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n not in self.issues:
            return web.json_response({"message": "Not Found"}, status=404)
        body = (await request.json()).get("body")
        if not body:
            return web.json_response({"message": "Validation Failed"}, status=422)
        comment = {
            "id": sum(map(len, self.comments.values())) + 1,
            "body": body,
            "created_at": _now(),
            "updated_at": _now(),
        }
        self.comments[n].append(comment)
        self.issues[n]["updated_at"] = _now()
        return web.json_response(comment, status=201)
