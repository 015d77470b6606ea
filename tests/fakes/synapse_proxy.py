"""A fault-injecting reverse proxy in front of the real test Synapse, served by aiohttp.

Every request is forwarded unchanged, except that the next requests to a room's `/send/`
endpoint can be made to fail the way a homeserver or the network fails:

- `status=500`: answered by the proxy, never forwarded (a homeserver error);
- `status=429`: `M_LIMIT_EXCEEDED` with `retry_after_ms`, never forwarded;
- `reset=True`: the connection is dropped before forwarding;
- `reset_after=True`: forwarded — Synapse stores the event — then the connection is dropped
  before the answer reaches the client: the case only transaction ids make safe.

    async with SynapseProxy(synapse.url) as proxy:
        proxy.fail_next_send(reset_after=True)
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from types import TracebackType

import aiohttp
from aiohttp import web

from tests.fakes.http_base import serve_locally

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
    "content-encoding",
}


@dataclass(frozen=True)
class SendFault:
    """What to do to one send request."""

    status: int | None = None
    retry_after_ms: int = 1000
    reset: bool = False
    reset_after: bool = False


class SynapseProxy:
    """Forwards to `upstream`; `url` is what the client under test is given."""

    def __init__(self, upstream: str) -> None:
        self._upstream = upstream.rstrip("/")
        self._faults: deque[SendFault] = deque()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""
        self.sends = 0  # send requests seen, faulted or not
        self.forwarded_sends = 0  # send requests Synapse received

    def fail_next_send(self, **fault: bool | int | None) -> None:
        """Queue a fault for the next send request (see the module docstring)."""
        self._faults.append(SendFault(**fault))  # type: ignore[arg-type]

    @property
    def pending_faults(self) -> int:
        """Faults not yet used."""
        return len(self._faults)

    async def __aenter__(self) -> SynapseProxy:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
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
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        is_send = request.method == "PUT" and "/send/" in request.path
        fault = None
        if is_send:
            self.sends += 1
            fault = self._faults.popleft() if self._faults else None
        if fault is not None and fault.status is not None:
            return _error(fault)
        if fault is not None and fault.reset:
            return _drop(request)
        status, headers, body = await self._forward(request)
        if is_send:
            self.forwarded_sends += 1
        if fault is not None and fault.reset_after:
            return _drop(request)
        return web.Response(status=status, headers=headers, body=body)

    async def _forward(self, request: web.Request) -> tuple[int, dict[str, str], bytes]:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._session.request(
            request.method,
            self._upstream + request.path_qs,
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=120),
        ) as upstream:
            body = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            return upstream.status, out, body


def _error(fault: SendFault) -> web.Response:
    if fault.status == 429:
        body = {
            "errcode": "M_LIMIT_EXCEEDED",
            "error": "Too Many Requests",
            "retry_after_ms": fault.retry_after_ms,
        }
    else:
        body = {"errcode": "M_UNKNOWN", "error": "Internal server error"}
    return web.Response(
        status=fault.status or 500, text=json.dumps(body), content_type="application/json"
    )


def _drop(request: web.Request) -> web.Response:
    assert request.transport is not None
    request.transport.abort()  # no status line: the client sees the connection reset
    return web.Response(status=502)  # never reaches the wire
