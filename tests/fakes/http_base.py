"""What the SaaS fakes share: an aiohttp server on loopback, an auth check, a request log
and programmable faults (a status with Retry-After and other headers, for the next requests)."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar

from aiohttp import web

Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve_locally(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve `app` on a free loopback port: the runner (to clean up) and the base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


@dataclass(frozen=True)
class Fault:
    """Answer one request with this instead of handling it."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


class FakeApi:
    """Subclasses add routes in `routes()` and say what a good Authorization header is."""

    authorization = ""
    unauthorised_body: ClassVar[dict[str, Any]] = {"error": "unauthorised"}

    def __init__(self) -> None:
        self._faults: deque[Fault] = deque()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """The next `times` requests get `status`, with `headers` (e.g. Retry-After)."""
        self._faults.extend([Fault(status, headers or {}, body)] * times)

    def count(self, method: str, prefix: str = "") -> int:
        """How many requests of a method (under a path prefix) were made."""
        return sum(1 for m, p in self.requests if m == method and p.startswith(prefix))

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Route) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if request.headers.get("Authorization") != self.authorization:
            return web.json_response(self.unauthorised_body, status=401)
        if self._faults:
            fault = self._faults.popleft()
            return web.json_response(
                fault.body or {"error": f"fault {fault.status}"},
                status=fault.status,
                headers=fault.headers,
            )
        return await handler(request)

    async def __aenter__(self) -> FakeApi:
        app = web.Application(middlewares=[self._middleware])
        app.add_routes(self.routes())
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


def page_of(
    items: list[Any], request: web.Request, default_size: int = 30
) -> tuple[list[Any], int, int]:
    """Offset pagination: (items on the requested page, page number, number of pages)."""
    size = max(
        1, min(100, int(request.query.get("per_page", request.query.get("count", default_size))))
    )
    number = max(1, int(request.query.get("page", "1")))
    pages = max(1, -(-len(items) // size))
    return items[(number - 1) * size : number * size], number, pages
