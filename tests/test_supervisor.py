"""The supervisor: no link or worker task ends without the daemon noticing."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from gateway.run.supervisor import Supervisor
from tests.conftest import eventually


class Flaky:
    """A link whose run loop ends on its own (returns, raises, or a stray cancellation)."""

    def __init__(self, endings: list[str]) -> None:
        self.state = "connected"
        self.runs = 0
        self.states_seen: list[str] = []
        self._endings = endings
        self.forever = asyncio.Event()

    async def run(self) -> None:
        self.states_seen.append(self.state)
        self.runs += 1
        if not self._endings:
            self.state = "connected"
            await self.forever.wait()
            return
        ending = self._endings.pop(0)
        if ending == "raise":
            raise RuntimeError("boom")
        if ending == "cancelled":
            raise asyncio.CancelledError
        # "return": ends as if it had been told to stop


async def test_link_that_ends_is_marked_failed_logged_and_restarted() -> None:
    """A link task that returns, raises or hits a stray CancelledError while the daemon runs
    is logged at error, marked `failed` and started again each time."""
    stop = asyncio.Event()
    sup = Supervisor(stop.is_set, stop.set, initial_s=0.01, max_s=0.05)
    part = Flaky(["return", "raise", "cancelled"])
    with capture_logs() as logs:
        task = asyncio.create_task(sup.link("imap:ops", part))
        await eventually(lambda: part.runs >= 4)
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    ended = [e for e in logs if e["event"] == "link.task_ended"]
    assert [e["reason"] for e in ended] == [
        "returned",
        "raised RuntimeError",
        "raised a stray CancelledError",
    ]
    assert all(e["log_level"] == "error" and e["component"] == "imap:ops" for e in ended)
    assert part.states_seen[1:] == ["failed", "failed", "failed"]  # down while restarting
    assert sup.restarts == {"imap:ops": 3} and sup.fatal is None


async def test_link_cancelled_on_shutdown_is_not_restarted() -> None:
    """Cancelling a supervised link at shutdown ends it: no restart, nothing logged."""
    stop = asyncio.Event()
    sup = Supervisor(stop.is_set, stop.set, initial_s=0.01)
    part = Flaky([])
    with capture_logs() as logs:
        task = asyncio.create_task(sup.link("matrix", part))
        await asyncio.sleep(0.02)
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled() and part.runs == 1
    assert not [e for e in logs if e["event"].startswith("link.")]


async def test_essential_task_that_ends_stops_the_daemon_with_a_reason() -> None:
    """A worker that returns while the daemon runs asks it to stop and records why (the CLI
    then exits non-zero, so the service manager restarts it)."""
    stop = asyncio.Event()
    sup = Supervisor(stop.is_set, stop.set)

    async def worker() -> None:
        return

    with capture_logs() as logs:
        await sup.essential("outbox-worker", worker)
    assert stop.is_set() and sup.fatal == "outbox-worker returned"
    assert [e["log_level"] for e in logs if e["event"] == "gateway.task_ended"] == ["critical"]


async def test_essential_task_ending_at_shutdown_is_normal() -> None:
    """A worker returning because the daemon is stopping is not a failure."""
    stop = asyncio.Event()
    stop.set()
    sup = Supervisor(stop.is_set, lambda: None)

    async def worker() -> None:
        return

    await sup.essential("inbox-worker", worker)
    assert sup.fatal is None
