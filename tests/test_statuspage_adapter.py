"""The Statuspage adapter against a fake of the public API: open with components ticked and
subscribers notified, reconcile, update once, resolve, and the rate limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest

from adapters.statuspage import Statuspage
from gateway.ports import PublicIncident, TransientError
from tests.fakes.statuspage import FakeStatuspage

NOW = datetime.now(UTC)
INCIDENT = PublicIncident(
    name="Possible issue being investigated: api",
    body="We are investigating a possible issue affecting api.",
    component_ids=("cmpapi",),
    since=NOW,
)


@pytest.fixture
async def page() -> AsyncIterator[tuple[FakeStatuspage, Statuspage]]:
    async with FakeStatuspage() as fake, aiohttp.ClientSession() as session:
        yield fake, Statuspage("pg1", "sp-key", session=session, base_url=fake.url)


async def test_open_update_resolve(page: tuple[FakeStatuspage, Statuspage]) -> None:
    """Opening ticks the components and notifies; a repeated update is posted once;
    resolving brings the components back to operational."""
    fake, sp = page
    handle = await sp.open(INCIDENT)
    assert handle.link and fake.components == {"cmpapi": "degraded_performance"}
    assert fake.notified == 1
    for _ in range(2):
        await sp.update(handle.external_id, "Still investigating.", NOW)
    await sp.resolve(handle.external_id, "Fixed.")
    await sp.resolve(handle.external_id, "Fixed.")
    incident = fake.incidents[handle.external_id]
    assert [u["body"] for u in incident["incident_updates"]].count("Still investigating.") == 1
    assert incident["status"] == "resolved" and fake.components["cmpapi"] == "operational"
    assert fake.notified == 3


async def test_open_again_finds_the_first(page: tuple[FakeStatuspage, Statuspage]) -> None:
    """Opening again after a crash takes the incident already created."""
    fake, sp = page
    first = await sp.open(INCIDENT)
    assert await sp.open(INCIDENT) == first and len(fake.incidents) == 1


@pytest.mark.parametrize("status", [420, 429])
async def test_rate_limit_is_transient(
    page: tuple[FakeStatuspage, Statuspage], status: int
) -> None:
    """Statuspage's rate-limit answers are retried after at least a second."""
    fake, sp = page
    fake.fail_next(status)
    with pytest.raises(TransientError) as caught:
        await sp.open(INCIDENT)
    assert caught.value.retry_after_s == 1.0 and fake.incidents == {}
