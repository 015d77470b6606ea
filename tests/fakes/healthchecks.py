"""A fake of a healthchecks-style ping monitor (healthchecks.io's ping API): `GET` or `POST`
to `/ping/<uuid>` records a success ping, to `/ping/<uuid>/fail` a failure ping; both answer
200 "OK". The fake only records (the real service would alert when pings stop)."""

from __future__ import annotations

import time
from types import TracebackType

from aiohttp import web

from tests.fakes.http_base import serve_locally


class FakeMonitor:
    """Records every ping as (monotonic time, "success" | "fail", method, body)."""

    def __init__(self) -> None:
        self.pings: list[tuple[float, str, str, str]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    def ping_url(self, check: str = "5f2d8c1e-0000-4000-8000-000000000001") -> str:
        """The success URL of one check (the failure URL is this plus `/fail`)."""
        return f"{self.url}/ping/{check}"

    def kinds(self, since: float = 0.0) -> list[str]:
        """The kinds of the pings received since `since` (monotonic)."""
        return [kind for at, kind, _, _ in self.pings if at >= since]

    async def __aenter__(self) -> FakeMonitor:
        app = web.Application()
        app.router.add_route("*", "/ping/{check}", self._ping)
        app.router.add_route("*", "/ping/{check}/fail", self._ping)
        self._runner, self.url = await serve_locally(app)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _ping(self, request: web.Request) -> web.Response:
        if request.method not in ("GET", "POST", "HEAD"):
            return web.Response(status=405)
        kind = "fail" if request.path.endswith("/fail") else "success"
        body = (await request.read()).decode(errors="replace")
        self.pings.append((time.monotonic(), kind, request.method, body))
        return web.Response(text="OK")
