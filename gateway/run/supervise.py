"""The two shapes every long-running loop of the daemon shares.

`backoff_s`: capped exponential backoff with jitter, for reconnecting links (IMAP, Matrix)
and for outbox retries. `rounds`: a worker's loop (the inbox worker, the outbox, the SLA
scheduler) - run a round, then wait until woken or until the round's own deadline; a round
that raises is logged and tried again later (the loop never dies of a bug, and never
swallows cancellation).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from gateway.ports import StoreUnavailable

log = structlog.get_logger("gateway.run.supervise")


def backoff_s(
    failures: int, initial_s: float, max_s: float, *, jitter: float = 0.2, max_doublings: int = 64
) -> float:
    """Seconds to wait after `failures` consecutive failures (0 for the first retry):
    `initial_s` doubled per failure (at most `max_doublings` times), at most `max_s`, spread
    by +/- `jitter` so that many clients do not retry in step."""
    base = min(max_s, initial_s * 2.0 ** min(max(failures, 0), max_doublings))
    return base * random.uniform(1.0 - jitter, 1.0 + jitter)


async def wait_for(wake: asyncio.Event, timeout_s: float | None) -> None:
    """Until `wake` is set, or `timeout_s` passed (None: no deadline; <= 0: not at all)."""
    if timeout_s is None:
        await wake.wait()
        return
    if timeout_s <= 0:
        return
    try:
        async with asyncio.timeout(timeout_s):
            await wake.wait()
    except TimeoutError:
        pass


async def rounds(
    round_: Callable[[], Awaitable[float | None]],
    *,
    wake: asyncio.Event,
    stopping: Callable[[], bool],
    failed: str,
    retry_s: float,
    retry_on_wake: bool = True,
    before: Callable[[], Awaitable[None]] | None = None,
    after: Callable[[], Awaitable[None]] | None = None,
    logger: Any = log,
) -> None:
    """Run rounds until `stopping()`. Each round returns how long to wait before the next
    (0: go again at once; None: until woken); `wake` ends a wait early. A round that raises
    is logged as `failed` and retried after `retry_s` (`retry_on_wake`: a wake-up may end
    that wait too). `before` runs before each round (it may defer to intake), `after` after
    each wait."""
    while not stopping():
        if before is not None:
            await before()
        wake.clear()
        try:
            wait_s = await round_()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, StoreUnavailable):  # a database away, not a bug: no traceback
                logger.warning(failed, error=exc.reason)
            else:
                logger.exception(failed)
            if retry_on_wake:
                await wait_for(wake, retry_s)
            else:
                await asyncio.sleep(retry_s)
        else:
            await wait_for(wake, wait_s)
        if after is not None:
            await after()
