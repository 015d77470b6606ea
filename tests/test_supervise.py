"""The shared loop shapes: capped backoff with jitter, and supervised rounds."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from gateway.run.supervise import backoff_s, rounds


def test_backoff_doubles_to_the_cap_within_the_jitter() -> None:
    """Each failure doubles the delay (+/- 20 %) until the cap; doublings may be capped."""
    for failures, base in ((0, 1.0), (1, 2.0), (3, 8.0), (9, 300.0), (40, 300.0)):
        delay = backoff_s(failures, 1.0, 300.0)
        assert base * 0.8 <= delay <= base * 1.2
    assert backoff_s(20, 0.25, 10_000.0, max_doublings=10, jitter=0.0) == 256.0
    assert backoff_s(-3, 1.0, 300.0, jitter=0.0) == 1.0


async def test_a_failing_round_is_logged_and_retried_until_stopped() -> None:
    """A round that raises is logged under its event name and tried again; stop ends it."""
    wake, calls = asyncio.Event(), []

    async def round_() -> float | None:
        calls.append(len(calls))
        if len(calls) < 3:
            raise RuntimeError("store down")
        return 0.0

    with capture_logs() as logs:
        await rounds(
            round_,
            wake=wake,
            stopping=lambda: len(calls) >= 3,
            failed="test.round_failed",
            retry_s=0.0,
        )
    assert calls == [0, 1, 2]
    assert [e["event"] for e in logs] == ["test.round_failed", "test.round_failed"]


async def test_a_round_waits_until_woken() -> None:
    """A round returning None waits for a wake-up; one returning 0 goes again at once."""
    wake, results = asyncio.Event(), [0.0, None, 0.0]
    done, waiting = asyncio.Event(), asyncio.Event()

    async def round_() -> float | None:
        if not results:
            done.set()
            return 0.0
        result = results.pop(0)
        if result is None:
            waiting.set()
        return result

    task = asyncio.create_task(
        rounds(round_, wake=wake, stopping=done.is_set, failed="test.failed", retry_s=0.0)
    )
    await waiting.wait()  # the second round returned None: the loop waits for a wake-up
    await asyncio.sleep(0)
    assert not task.done() and results == [0.0]
    wake.set()
    await task
    assert results == [] and done.is_set()


async def test_cancellation_is_not_swallowed() -> None:
    """Cancelling the loop while a round runs ends it with CancelledError."""
    started = asyncio.Event()

    async def round_() -> float | None:
        started.set()
        await asyncio.Event().wait()
        return None

    task = asyncio.create_task(
        rounds(
            round_, wake=asyncio.Event(), stopping=lambda: False, failed="test.failed", retry_s=0.0
        )
    )
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
