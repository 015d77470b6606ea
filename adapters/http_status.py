"""The health and metrics endpoint: aiohttp on loopback serving `/healthz` and `/metrics`.

What is served comes from two callables the composition root gives (the core builds the
report and the exposition text); this module only speaks HTTP. `/healthz` answers 200 when
the report says healthy, 503 otherwise; a failure to build a report is a 503 without
exception text.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

log = structlog.get_logger("adapters.http_status")

Report = Callable[[], Awaitable[dict[str, Any]]]
Metrics = Callable[[], Awaitable[str]]
_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


class StatusServer:
    """Owns the listening socket of the status endpoint."""

    def __init__(self, report: Report, metrics: Metrics, *, host: str, port: int) -> None:
        self._report, self._metrics = report, metrics
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        """Bind and serve (OSError if the address is taken)."""
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics_page)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        server = site._server  # aiohttp keeps the bound socket here; port 0 needs it
        if not isinstance(server, asyncio.Server):
            raise TypeError(f"expected asyncio.Server, got {type(server).__name__}")
        self.port = int(server.sockets[0].getsockname()[1])
        log.info("http.listening", host=self._host, port=self.port)

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _request: web.Request) -> web.Response:
        try:
            report = await self._report()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("http.report_failed", error=type(exc).__name__)
            return web.json_response({"healthy": False, "problems": ["report failed"]},
                                     status=503)
        return web.Response(text=json.dumps(report, indent=2) + "\n",
                            content_type="application/json",
                            status=200 if report.get("healthy") else 503)

    async def _metrics_page(self, _request: web.Request) -> web.Response:
        try:
            body = await self._metrics()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("http.metrics_failed", error=type(exc).__name__)
            return web.Response(status=503, text="metrics unavailable\n")
        return web.Response(body=body.encode(), headers={"Content-Type": _PROMETHEUS})
