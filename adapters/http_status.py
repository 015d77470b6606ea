"""The health and metrics endpoint: aiohttp on loopback serving `/healthz` and `/metrics`.

What is served comes from two callables the composition root gives (the core builds the
report and the exposition text); this module only speaks HTTP. `/healthz` answers 200 when
the report says healthy, 503 otherwise; a failure to build a report is a 503 without
exception text.

Start-up: `bind` takes the port (no aiohttp needed, so the daemon can tell systemd it is
ready without importing it); `serve` imports aiohttp and attaches the HTTP server. A client
that connects in between waits in the listen backlog and is answered once serving starts.

Bounds (the status port must never take the daemon's descriptors from SMTP intake): at most
`max_connections` open connections (a further one gets `503` and is closed at once, so its
descriptor is freed), and a client that sends no complete request for `idle_timeout_s`
(silent, half a request, or idle between keep-alive requests) is hung up on.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from aiohttp import web

log = structlog.get_logger("adapters.http_status")

Report = Callable[[], Awaitable[dict[str, Any]]]
Metrics = Callable[[], Awaitable[str]]
_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 20\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    b"too many connections"
)
_LOG_EVERY_S = 60.0  # refusals are logged at most this often


class _Busy(asyncio.Protocol):
    """A connection past the limit: 503, then closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(_BUSY)
        transport.close()


class StatusServer:
    """Owns the listening socket of the status endpoint and its connections."""

    def __init__(
        self,
        report: Report,
        metrics: Metrics,
        *,
        host: str,
        port: int,
        max_connections: int = 64,
        idle_timeout_s: float = 10.0,
    ) -> None:
        self._report, self._metrics = report, metrics
        self._host, self._port = host, port
        self._max_connections = max_connections
        self._idle_timeout_s = idle_timeout_s
        self._runner: web.AppRunner | None = None
        self._server: web.Server | None = None
        self._listener: asyncio.Server | None = None
        self._sock: socket.socket | None = None
        self._refused = 0
        self._refused_logged_at: float | None = None
        self.port: int | None = None

    @property
    def connections(self) -> int:
        """Open connections being served."""
        return 0 if self._server is None else len(self._server.connections)

    async def start(self) -> None:
        """Bind and serve (OSError if the address is taken)."""
        self.bind()
        await self.serve()

    def bind(self) -> None:
        """Take the port and listen (OSError if the address is taken); nothing is answered
        until `serve`."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.create_server((self._host, self._port), family=family, reuse_port=False)
        sock.setblocking(False)
        self._sock = sock
        self.port = int(sock.getsockname()[1])

    async def serve(self) -> None:
        """Attach the HTTP server to the bound socket (imports aiohttp)."""
        if self._sock is None:
            raise RuntimeError("bind() first")
        # Imported off the event loop: mail keeps flowing meanwhile (see the module doc).
        await asyncio.to_thread(importlib.import_module, "aiohttp.web")
        from aiohttp import web  # noqa: PLC0415

        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics_page)
        # aiohttp's keep-alive timer also runs from the start of a connection, so a client
        # that never completes a request is closed after the same time.
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, keepalive_timeout=self._idle_timeout_s
        )
        await runner.setup()
        sock, self._sock = self._sock, None
        try:
            self._listener = await asyncio.get_running_loop().create_server(
                self._connection, sock=sock
            )
        except OSError:
            sock.close()
            await runner.cleanup()
            raise
        self._runner, self._server = runner, runner.server
        log.info("http.listening", host=self._host, port=self.port)

    def _connection(self) -> asyncio.BaseProtocol:
        if self._server is None:  # stopped between accept and here: refuse
            return _Busy()
        if len(self._server.connections) < self._max_connections:
            return self._server()
        self._refused += 1
        now = asyncio.get_running_loop().time()
        if self._refused_logged_at is None or now - self._refused_logged_at >= _LOG_EVERY_S:
            log.warning(
                "http.connections_refused", refused=self._refused, limit=self._max_connections
            )
            self._refused_logged_at, self._refused = now, 0
        return _Busy()

    async def stop(self) -> None:
        """Stop serving."""
        if self._sock is not None:  # bound, never served
            self._sock.close()
            self._sock = None
        if self._listener is not None:
            self._listener.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = self._server = None
        if self._listener is not None:
            await self._listener.wait_closed()
            self._listener = None

    async def _healthz(self, _request: web.Request) -> web.Response:
        from aiohttp import web  # noqa: PLC0415  (loaded by serve())

        try:
            report = await self._report()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("http.report_failed", error=type(exc).__name__)
            return web.json_response({"healthy": False, "problems": ["report failed"]}, status=503)
        return web.Response(
            text=json.dumps(report, indent=2) + "\n",
            content_type="application/json",
            status=200 if report.get("healthy") else 503,
        )

    async def _metrics_page(self, _request: web.Request) -> web.Response:
        from aiohttp import web  # noqa: PLC0415  (loaded by serve())

        try:
            body = await self._metrics()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("http.metrics_failed", error=type(exc).__name__)
            return web.Response(status=503, text="metrics unavailable\n")
        return web.Response(body=body.encode(), headers={"Content-Type": _PROMETHEUS})
