"""A TCP proxy in front of a peer that fails the way networks and servers fail, on command.

Modes (`await proxy.set_mode(...)`):
- "up": relays both ways.
- "refuse": the listening socket is closed (connection refused) and every open connection is
  aborted, as when the peer's process is gone; "up" listens again on the same port.
- "hang": nothing moves: open connections stay open but their data is held, new ones are
  accepted and held; "up" releases everything held (a stopped and continued process).
- "error": open connections are aborted and each new one gets the protocol's refusal and is
  closed (`refusal`: e.g. an HTTP 503, SMTP 421, IMAP BYE).
`drop()` aborts every open connection at once (mid-command) and stays up.
"""

from __future__ import annotations

import asyncio
import contextlib

REFUSALS = {
    "http": b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: 2\r\nConnection: close\r\n\r\n{}",
    "smtp": b"421 4.3.2 Service not available, closing transmission channel\r\n",
    "imap": b"* BYE [UNAVAILABLE] Server shutting down\r\n",
}


class ChaosProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`target_port`."""

    def __init__(self, target_port: int, protocol: str) -> None:
        self.target_port = target_port
        self.protocol = protocol
        self.mode = "up"
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen (on the same port as before, after the first time)."""
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and abort everything."""
        self._flowing.set()
        await self._stop_listening()
        self.drop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> ChaosProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def drop(self) -> None:
        """Abort every open connection (both sides)."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def set_mode(self, mode: str) -> None:
        """Change how the peer behaves (see the module docstring)."""
        if mode not in ("up", "refuse", "hang", "error"):
            raise ValueError(mode)
        previous, self.mode = self.mode, mode
        if mode == "hang":
            self._flowing.clear()
            return
        self._flowing.set()
        if mode in ("refuse", "error"):
            self.drop()
        if mode == "refuse":
            await self._stop_listening()
        elif previous == "refuse":
            await self.start()

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            if self.mode == "error":
                await self._refuse(reader, writer)
                return
            await self._flowing.wait()
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                return
            self._writers.add(up_writer)
            pumps = [
                asyncio.ensure_future(self._pump(reader, up_writer)),
                asyncio.ensure_future(self._pump(up_reader, writer)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
                up_writer.transport.abort()
                self._writers.discard(up_writer)
        finally:
            writer.transport.abort()
            self._writers.discard(writer)
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                await self._flowing.wait()  # a hang holds the data, it does not lose it
                writer.write(data)
                await writer.drain()

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            if self.protocol == "http":  # answer the request, not before it
                async with asyncio.timeout(5):
                    await reader.readuntil(b"\r\n\r\n")
            writer.write(REFUSALS[self.protocol])
            await writer.drain()
