"""The App's wind-down runs in every case: when a task fails, intake and the status
endpoint are closed before the store, not left listening."""

from __future__ import annotations

import asyncio
import gc
import socket
from pathlib import Path

import pytest

from gateway.app import App
from gateway.deliver.outbox import OutboxWorker
from gateway.parse.sandbox import ParseSandbox
from gateway.ports import Store
from gateway.run.scheduler import Scheduler
from gateway.run.supervisor import GatewayFailed
from gateway.run.worker import InboxWorker
from rules.book import default_rulebook
from tests.conftest import make_config, running


class SchedulerFails(App):
    """The real App, whose SLA scheduler task raises once the daemon is ready."""

    async def _processing(
        self, store: Store, outbox: OutboxWorker, sandbox: ParseSandbox
    ) -> tuple[InboxWorker, Scheduler]:
        worker, scheduler = await super()._processing(store, outbox, sandbox)

        async def broken() -> None:
            await self.ready.wait()
            raise RuntimeError("scheduler bug")

        scheduler.run = broken  # type: ignore[method-assign]
        return worker, scheduler


def refused(port: int) -> bool:
    """Nothing listens on the loopback port any more."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


async def test_a_failing_task_still_closes_intake_and_status(tmp_path: Path) -> None:
    """The daemon stops (GatewayFailed naming the task, so the CLI exits 1), and SMTP and
    the status endpoint no longer listen."""
    app = SchedulerFails(make_config(tmp_path), default_rulebook())
    with pytest.raises(GatewayFailed, match="sla-scheduler raised RuntimeError"):
        await asyncio.wait_for(app.run(asyncio.Event()), 30)
    assert app.smtp_port and app.http_port
    assert refused(app.smtp_port) and refused(app.http_port)


async def test_garbage_collection_is_back_on_once_the_daemon_is_ready(tmp_path: Path) -> None:
    """The command's entry point starts with the garbage collector off (start-up only
    allocates what lives as long as the process); the daemon turns it back on after READY,
    or a long-running process would never collect a cycle."""
    gc.disable()
    try:
        async with running(make_config(tmp_path)):
            assert gc.isenabled()
    finally:
        gc.enable()
