"""Shared fixtures: configurations in a temporary state folder, and a running App."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest

from gateway.app import App
from gateway.config.model import Config, parse_config
from gateway.store.sqlite import SqliteStore
from rules.book import default_rulebook

pytest_plugins = [
    "tests.peers.synapse",
    "tests.peers.dovecot",
    "tests.peers.postgres",
    "tests.peers.alertmanager",
]

# Monday 23 November 2026, 10:00 in London (GMT): in hours.
IN_HOURS = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
# Sunday 22 November 2026, 03:00 in London: out of hours, overnight.
OVERNIGHT = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


THREAD_KEY = "test-threading-key-0123456789"


def ticking(start: datetime) -> Callable[[], datetime]:
    """A clock that starts at `start` and advances in real time (retries need time to pass)."""
    origin = time.monotonic()
    return lambda: start + timedelta(seconds=time.monotonic() - origin)


def make_config(state: Path, **sections: Any) -> Config:
    """A config rooted in `state`, listening on a free port, plus any sections given."""
    data: dict[str, Any] = {"state": {"dir": str(state)}, "smtp": {"port": 0}, "http": {"port": 0}}
    data["outbox"] = {"backoff_initial_s": 0.05, "backoff_max_s": 0.5, "drain_timeout_s": 5}
    # The tenants in these tests are known; tests of strangers override the allow-list.
    data["trust"] = {"allow_domains": ["tenant.example", "t.example"]}
    data["threading"] = {"key": {"value": THREAD_KEY}}
    for key, value in sections.items():
        data[key] = value if isinstance(value, list) else {**data.get(key, {}), **value}
    return parse_config(data)


def email_bytes(
    subject: str = "Our site is down",
    body: str = "Hello, all our apps return 502 since 09:50. Users cannot reach the service.",
    sender: str = "alice@tenant.example",
    to: str = "emergency@localhost",
    **headers: str,
) -> bytes:
    """A realistic tenant email."""
    msg = EmailMessage()
    msg["From"] = f"Alice Tenant <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = headers.pop("message_id", None) or make_msgid(domain="tenant.example")
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg.as_bytes()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """An open store in a temporary folder."""
    s = SqliteStore(tmp_path / "gateway.sqlite3")
    await s.open()
    yield s
    await s.close()


@asynccontextmanager
async def running(
    config: Config, clock: Callable[[], datetime] | None = None
) -> AsyncIterator[App]:
    """Run the real App until the block ends, then stop it the way SIGTERM does."""
    app = App(config, default_rulebook(), **({"clock": clock} if clock else {}))
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    ready = asyncio.create_task(app.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
    if ready not in done:
        ready.cancel()
        await task if task.done() else None
        raise AssertionError("the app did not become ready")
    try:
        yield app
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll a condition (sync or async) until it is truthy; fail with its last value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met in {timeout}s (last value: {value!r})")
        await asyncio.sleep(0.02)


class ManualClock:
    """A clock that stands still until a test moves it (no sleeping for SLA deadlines)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        """Move forward by timedelta(**delta); returns the new instant."""
        self.now += timedelta(**delta)
        return self.now
