"""systemd's notify protocol (sd_notify), without a library: datagrams to `$NOTIFY_SOCKET`.

`READY=1` tells systemd a `Type=notify` service has started, `STATUS=` sets the one-line
summary `systemctl status` shows, `WATCHDOG=1` proves the event loop still turns (sent from
a task on that loop every half `$WATCHDOG_USEC`, so a stalled loop misses its pings and
systemd restarts the service), `RELOADING=1` with `MONOTONIC_USEC=` and `STOPPING=1` mark a
reload and a stop. Without `$NOTIFY_SOCKET` every call does nothing, so the daemon runs the
same outside systemd. A send that fails is logged once and never stops the daemon.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger("adapters.sdnotify")


def _address(value: str) -> str | bytes:
    # "@name" is a socket in the abstract namespace: a leading NUL byte on the wire.
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def watchdog_interval_s(env: Mapping[str, str]) -> float | None:
    """Seconds between pings (half the watchdog timeout), or None when no watchdog is set.

    `$WATCHDOG_PID`, when given, must be this process: a child does not ping for its parent.
    """
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2_000_000


class Notifier:
    """Talks to the service manager; a no-op when not started by one."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        self._address = _address(path) if path else None
        self._sock: socket.socket | None = None
        self._failed = False
        self.watchdog_s = watchdog_interval_s(env) if path else None

    @property
    def enabled(self) -> bool:
        """True when a service manager listens."""
        return self._address is not None

    def notify(self, **fields: str) -> None:
        """Send one datagram of `KEY=value` lines (keys as given, upper-cased)."""
        if self._address is None:
            return
        data = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(data, self._address)
        except OSError as exc:
            if not self._failed:  # say it once, not at every watchdog ping
                log.warning("sdnotify.send_failed", error=exc.strerror or type(exc).__name__)
                self._failed = True

    def ready(self, status: str) -> None:
        """The service is up."""
        self.notify(ready="1", status=status)

    def status(self, status: str) -> None:
        """A one-line summary for `systemctl status`."""
        self.notify(status=status)

    def reloading(self) -> None:
        """A reload began; `ready()` ends it."""
        self.notify(
            reloading="1", monotonic_usec=str(time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
        )

    def stopping(self) -> None:
        """The service is shutting down."""
        self.notify(stopping="1", status="stopping")

    async def run_watchdog(self) -> None:
        """Ping every half watchdog interval until cancelled (returns at once without one)."""
        if self.watchdog_s is None:
            return
        while True:
            self.notify(watchdog="1")
            await asyncio.sleep(self.watchdog_s)

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
