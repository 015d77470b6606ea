"""A stand-in for systemd's side of the notify protocol: a datagram socket tests bind."""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from pathlib import Path
from types import TracebackType


class NotifySocket:
    """Receives sd_notify datagrams, as `KEY=value` dicts, with the time each arrived."""

    def __init__(self, abstract: bool = False) -> None:
        # A short folder: unix socket paths are limited to 107 bytes.
        self._dir = Path(tempfile.mkdtemp(prefix="ntf", dir="/tmp"))
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"chatops-test-{self._dir.name}"
            self.sock.bind(b"\0" + name.encode())
            self.address = f"@{name}"
        else:
            path = self._dir / "notify"
            self.sock.bind(str(path))
            self.address = str(path)
        self.received: list[tuple[float, dict[str, str]]] = []

    def __enter__(self) -> NotifySocket:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def next(self, timeout: float = 30.0) -> dict[str, str]:
        """The next datagram (a hung daemon fails the test instead of hanging it)."""
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096)
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        self.received.append((time.monotonic(), fields))
        return fields

    def until(self, key: str, value: str = "1", limit: int = 1000) -> dict[str, str]:
        """Read datagrams until one carries `key=value`; returns it."""
        for _ in range(limit):
            fields = self.next()
            if fields.get(key) == value:
                return fields
        raise AssertionError(f"no {key}={value} in {limit} datagrams")
