"""The status endpoint against idle and excess connections over loopback: idle clients are
hung up on, connections past the limit get a 503 at once (their descriptors freed), and
/healthz answers again as soon as a slot is free; the event loop's accept errors are logged
once per interval."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.http_status import StatusServer
from gateway.run.logs import AcceptErrorFilter


async def _report() -> dict[str, Any]:
    return {"healthy": True}


async def _metrics() -> str:
    return "up 1\n"


async def make(max_connections: int, idle_timeout_s: float) -> StatusServer:
    server = StatusServer(
        _report,
        _metrics,
        host="127.0.0.1",
        port=0,
        max_connections=max_connections,
        idle_timeout_s=idle_timeout_s,
    )
    await server.start()
    return server


@pytest.fixture
async def small() -> AsyncIterator[StatusServer]:
    server = await make(max_connections=3, idle_timeout_s=60)
    yield server
    await server.stop()


async def healthz(port: int | None) -> bytes:
    """One GET /healthz on a new connection: the whole answer, as raw bytes."""
    assert port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = await reader.read()
    writer.close()
    return answer


async def test_connections_past_the_limit_get_503_and_are_closed(small: StatusServer) -> None:
    """With every slot held by an idle client, a further connection gets 503 and is closed
    by the server; once a slot is free /healthz answers 200."""
    assert small.port
    idle = [await asyncio.open_connection("127.0.0.1", small.port) for _ in range(3)]
    for _ in range(100):  # until the server has taken all three
        if small.connections >= 3:
            break
        await asyncio.sleep(0.01)
    answer = await healthz(small.port)
    assert answer.startswith(b"HTTP/1.1 503")
    _, writer = idle.pop()
    writer.close()
    for _ in range(100):
        if small.connections < 3:
            break
        await asyncio.sleep(0.01)
    assert (await healthz(small.port)).startswith(b"HTTP/1.1 200")
    for _, w in idle:
        w.close()


async def test_idle_and_slow_clients_are_hung_up_on() -> None:
    """A client that connects and says nothing, and one that sends half a request, are
    both closed by the server after idle_timeout_s."""
    server = await make(max_connections=8, idle_timeout_s=0.3)
    try:
        assert server.port
        silent = await asyncio.open_connection("127.0.0.1", server.port)
        slow = await asyncio.open_connection("127.0.0.1", server.port)
        slow[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        async with asyncio.timeout(30):  # a guard against a hang, far above the timeout
            assert await silent[0].read() == b""
            assert await slow[0].read() == b""
        silent[1].close()
        slow[1].close()
        assert (await healthz(server.port)).startswith(b"HTTP/1.1 200")
    finally:
        await server.stop()


async def test_accept_errors_are_logged_once_per_interval_per_listener() -> None:
    """Of 1,000 accept failures on each of two listeners within one interval, one per
    listener reaches the handler; the next one after the interval says how many were left
    out."""
    seen: list[dict[str, Any]] = []
    now = [0.0]
    handler = AcceptErrorFilter(
        interval_s=60, clock=lambda: now[0], then=lambda _loop, ctx: seen.append(ctx)
    )
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(handler)
    socks = [socket.socket(), socket.socket()]
    try:
        for _ in range(1000):
            for s in socks:
                loop.call_exception_handler(
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": OSError(24, "Too many open files"),
                        "socket": s,
                    }
                )
        loop.call_exception_handler({"message": "Task exception was never retrieved"})
        now[0] = 61.0
        loop.call_exception_handler(
            {"message": "socket.accept() out of system resource", "socket": socks[0]}
        )
    finally:
        loop.set_exception_handler(previous)
        for s in socks:
            s.close()
    messages = [str(c["message"]) for c in seen]
    assert messages[:3] == ["socket.accept() out of system resource"] * 2 + [
        "Task exception was never retrieved"
    ]
    assert messages[3] == (
        "socket.accept() out of system resource (999 more like it in the last 60 s)"
    )
    assert len(messages) == 4
