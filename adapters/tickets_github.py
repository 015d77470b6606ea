"""GitHub issues (REST API) behind the TicketBackend port.

An issue carries the `chatops-gateway` label, a priority label and, hidden in its body, an
HTML comment with our key. Before creating, the repository's issues with that label updated
since the entry was planned are listed (the list API is consistent; search is not) and the
marker looked for, so a create that happened before a crash is found. Comments carry their
own hidden marker, looked for the same way. Rate limits: 429, or 403 with
`x-ratelimit-remaining: 0` (wait until `x-ratelimit-reset`) or with `retry-after`
(secondary limits), are TransientError; any other 403 is PermanentError.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from adapters.http_api import JsonApi, obj
from gateway.ports import NewTicket, PermanentError, TicketHandle, TransientError

LABEL = "chatops-gateway"
_NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')
_MAX_PAGES = 10


def marker(key: str) -> str:
    """Invisible in rendered Markdown, findable in the raw body."""
    return f"<!-- chatops-gateway:{key} -->"


class _GitHubApi(JsonApi):
    def error(self, status: int, raw: bytes, headers: Mapping[str, str]) -> Exception:
        lower = {k.lower(): v for k, v in headers.items()}
        if status in (403, 429):
            if "retry-after" in lower:
                return super().error(429, raw, headers)
            if lower.get("x-ratelimit-remaining") == "0":
                reset = float(lower.get("x-ratelimit-reset", "0") or 0)
                wait = max(1.0, reset - time.time())
                return TransientError(f"GitHub rate limit reached ({status})", wait)
        return super().error(status, raw, headers)


class GitHubIssues:
    """Issues in one repository, with a fine-grained token (Issues: read and write)."""

    name = "github"

    def __init__(
        self,
        repo: str,
        token: str,
        *,
        session: aiohttp.ClientSession,
        base_url: str = "https://api.github.com",
        timeout_s: float = 15.0,
    ) -> None:
        self._api = _GitHubApi(
            "GitHub",
            base_url,
            session,
            timeout_s=timeout_s,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": "chatops-gateway",
            },
            secrets=(token,),
        )
        self._repo = repo

    def __repr__(self) -> str:
        return f"GitHubIssues(repo={self._repo!r})"

    async def _pages(self, path: str, params: dict[str, str]) -> AsyncIterator[Any]:
        url: str | None = path
        query: dict[str, str] | None = params
        for _ in range(_MAX_PAGES):
            if url is None:
                return
            page = await self._api.call("GET", url, params=query)
            for item in page.body or []:
                yield item
            link = {k.lower(): v for k, v in page.headers.items()}.get("link", "")
            found = _NEXT.search(link)
            url, query = (found.group(1) if found else None), None

    async def create(self, ticket: NewTicket) -> TicketHandle:
        """Find the issue marked with our key, or open it."""
        mark = marker(ticket.key)
        params = {"labels": LABEL, "state": "all", "per_page": "100"}
        if ticket.since:
            params["since"] = _iso(ticket.since - timedelta(minutes=5))
        async for issue in self._pages(f"/repos/{self._repo}/issues", params):
            if "pull_request" not in issue and mark in str(obj(issue, "body") or ""):
                return _handle(issue)
        answer = await self._api.call(
            "POST",
            f"/repos/{self._repo}/issues",
            json_body={
                "title": ticket.title,
                "body": f"{ticket.body}\n\n{mark}",
                "labels": [LABEL, f"priority: {ticket.priority}"],
            },
        )
        return _handle(answer.body)

    async def comment(
        self, external_id: str, body: str, key: str, since: datetime | None
    ) -> Mapping[str, Any]:
        """A comment, unless the marked one is already on the issue."""
        mark = marker(key)
        path = f"/repos/{self._repo}/issues/{external_id}/comments"
        params = {"per_page": "100"}
        if since:
            params["since"] = _iso(since - timedelta(minutes=5))
        async for existing in self._pages(path, params):
            if mark in str(obj(existing, "body") or ""):
                return {"comment": "already there"}
        await self._api.call("POST", path, json_body={"body": f"{body}\n\n{mark}"})
        return {"comment": "added"}

    async def update(
        self, external_id: str, *, status: str | None = None, title: str | None = None
    ) -> Mapping[str, Any]:
        """Close as completed (solved) or reopen, and/or retitle."""
        fields: dict[str, Any] = {}
        if title:
            fields["title"] = title
        if status == "solved":
            fields.update(state="closed", state_reason="completed")
        elif status == "open":
            fields.update(state="open", state_reason="reopened")
        if fields:
            await self._api.call(
                "PATCH", f"/repos/{self._repo}/issues/{external_id}", json_body=fields
            )
        return {"updated": sorted(fields)}


def _handle(issue: Any) -> TicketHandle:
    number = obj(issue, "number")
    if number is None:
        raise PermanentError("GitHub answered without an issue number")
    return TicketHandle(str(number), obj(issue, "html_url"))


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
