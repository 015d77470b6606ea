"""PagerDutyPager against a local fake of the Events API v2."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest

from adapters.pagerduty import MAX_SUMMARY_CHARS, PagerDutyPager, parse_retry_after
from gateway.ports import PageRequest, PermanentError, TransientError
from tests.conftest import eventually
from tests.fakes.pagerduty import FakePagerDuty

ROUTING_KEY = "R0ut1ngKeyS3cretAbCdEfGh01234567"
assert len(ROUTING_KEY) == 32

MakePager = Callable[..., PagerDutyPager]


def page(dedup_key: str = "incident-1", **overrides: Any) -> PageRequest:
    fields: dict[str, Any] = {
        "dedup_key": dedup_key,
        "summary": "Fire alarm in building B",
        "severity": "critical",
        "source": "chatops-gateway",
        "details": {"reporter": "facilities@example.org"},
    }
    fields.update(overrides)
    return PageRequest(**fields)


def assert_no_key(exc: BaseException) -> None:
    rendered = "".join(traceback.format_exception(exc))
    assert ROUTING_KEY not in rendered
    assert ROUTING_KEY not in str(exc)
    assert ROUTING_KEY not in repr(exc)
    assert ROUTING_KEY not in getattr(exc, "reason", "")


@pytest.fixture
async def fake() -> AsyncIterator[FakePagerDuty]:
    async with FakePagerDuty(routing_keys={ROUTING_KEY}) as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
def make_pager(fake: FakePagerDuty, session: aiohttp.ClientSession) -> MakePager:
    def make(routing_key: str = ROUTING_KEY, timeout_s: float = 5) -> PagerDutyPager:
        return PagerDutyPager(routing_key, session=session, base_url=fake.url, timeout_s=timeout_s)

    return make


async def test_trigger_opens_alert(fake: FakePagerDuty, make_pager: MakePager) -> None:
    """A trigger is answered 202 and opens one alert under its dedup_key."""
    result = await make_pager().trigger(page())

    assert result == {"status": 202, "dedup_key": "incident-1"}
    assert fake.alerts == {"incident-1": "triggered"}
    [event] = fake.events
    assert event["routing_key"] == ROUTING_KEY
    assert event["payload"]["custom_details"] == {"reporter": "facilities@example.org"}


async def test_acknowledge_and_resolve_change_state(
    fake: FakePagerDuty, make_pager: MakePager
) -> None:
    """Acknowledge then resolve move the alert through its states."""
    pager = make_pager()
    await pager.trigger(page())

    await pager.acknowledge("incident-1")
    assert fake.alerts["incident-1"] == "acknowledged"
    result = await pager.resolve("incident-1")
    assert fake.alerts["incident-1"] == "resolved"
    assert result == {"status": 202, "dedup_key": "incident-1"}


async def test_same_dedup_key_twice_is_one_alert(
    fake: FakePagerDuty, make_pager: MakePager
) -> None:
    """Re-sending a trigger with the same dedup_key does not open a second alert."""
    pager = make_pager()
    await pager.trigger(page())
    await pager.trigger(page())

    assert fake.alerts_opened == 1
    assert len(fake.events) == 2


async def test_long_summary_is_truncated(fake: FakePagerDuty, make_pager: MakePager) -> None:
    """A summary beyond PagerDuty's 1024 characters is cut down instead of rejected."""
    await make_pager().trigger(page(summary="x" * 5000))

    assert len(fake.events[0]["payload"]["summary"]) == MAX_SUMMARY_CHARS


async def test_invalid_event_is_permanent_and_names_problem(make_pager: MakePager) -> None:
    """A 400 becomes PermanentError quoting PagerDuty's errors."""
    with pytest.raises(PermanentError) as caught:
        await make_pager().trigger(page(severity="urgent"))

    assert "severity" in caught.value.reason
    assert_no_key(caught.value)


async def test_too_long_dedup_key_is_permanent(make_pager: MakePager) -> None:
    """A dedup_key over 255 characters is refused for good."""
    with pytest.raises(PermanentError) as caught:
        await make_pager().resolve("k" * 256)

    assert "dedup_key" in caught.value.reason
    assert_no_key(caught.value)


async def test_bad_routing_key_is_permanent_without_echoing_it(
    session: aiohttp.ClientSession, fake: FakePagerDuty
) -> None:
    """A routing key PagerDuty does not know fails permanently and is not quoted."""
    wrong_key = "Wr0ngKeyWr0ngKeyWr0ngKeyWr0ngKey"
    pager = PagerDutyPager(wrong_key, session=session, base_url=fake.url)

    with pytest.raises(PermanentError) as caught:
        await pager.trigger(page())

    assert "routing key" in caught.value.reason.lower()
    assert wrong_key not in "".join(traceback.format_exception(caught.value))


async def test_rate_limit_carries_retry_after_seconds(
    fake: FakePagerDuty, make_pager: MakePager
) -> None:
    """A 429 with Retry-After: 2 becomes TransientError(retry_after_s=2.0)."""
    fake.fail_next(status=429, retry_after="2")

    with pytest.raises(TransientError) as caught:
        await make_pager().trigger(page())

    assert caught.value.retry_after_s == 2.0
    assert_no_key(caught.value)
    assert fake.alerts == {}


async def test_rate_limit_with_http_date(fake: FakePagerDuty, make_pager: MakePager) -> None:
    """A Retry-After given as an HTTP-date becomes the seconds until that date."""
    later = datetime.now(UTC) + timedelta(hours=1)
    fake.fail_next(status=429, retry_after=format_datetime(later, usegmt=True))

    with pytest.raises(TransientError) as caught:
        await make_pager().trigger(page())

    assert caught.value.retry_after_s is not None
    assert 3000 < caught.value.retry_after_s <= 3600


async def test_rate_limit_without_retry_after(fake: FakePagerDuty, make_pager: MakePager) -> None:
    """A 429 without Retry-After leaves the wait to the outbox."""
    fake.fail_next(status=429)

    with pytest.raises(TransientError) as caught:
        await make_pager().trigger(page())

    assert caught.value.retry_after_s is None


async def test_server_error_is_transient_then_retry_succeeds(
    fake: FakePagerDuty, make_pager: MakePager
) -> None:
    """A 503 is TransientError, and the same call afterwards opens the alert once."""
    pager = make_pager()
    fake.fail_next(status=503)

    with pytest.raises(TransientError) as caught:
        await pager.trigger(page())
    assert_no_key(caught.value)
    await pager.trigger(page())

    assert fake.alerts == {"incident-1": "triggered"}
    assert fake.requests == 2


async def test_connection_reset_is_transient(fake: FakePagerDuty, make_pager: MakePager) -> None:
    """A connection dropped without an answer is TransientError."""
    fake.fail_next(reset=True)

    with pytest.raises(TransientError) as caught:
        await make_pager().trigger(page())

    assert_no_key(caught.value)


async def test_slow_answer_times_out_as_transient(
    fake: FakePagerDuty, make_pager: MakePager
) -> None:
    """No answer within timeout_s is TransientError."""
    fake.fail_next(delay_s=30)

    with pytest.raises(TransientError) as caught:
        await make_pager(timeout_s=0.2).trigger(page())

    assert "0.2" in caught.value.reason
    assert_no_key(caught.value)


async def test_unreachable_host_is_transient(session: aiohttp.ClientSession) -> None:
    """Nothing listening at base_url is TransientError."""
    server = FakePagerDuty()
    await server.start()
    url = server.url
    await server.close()
    pager = PagerDutyPager(ROUTING_KEY, session=session, base_url=url)

    with pytest.raises(TransientError) as caught:
        await pager.trigger(page())

    assert_no_key(caught.value)


async def test_unauthorized_is_permanent(fake: FakePagerDuty, make_pager: MakePager) -> None:
    """A 401 is PermanentError."""
    fake.fail_next(status=401)

    with pytest.raises(PermanentError) as caught:
        await make_pager().trigger(page())

    assert "401" in caught.value.reason
    assert_no_key(caught.value)


@pytest.mark.parametrize("status", [403, 404, 413])
async def test_other_client_errors_are_permanent(
    fake: FakePagerDuty, make_pager: MakePager, status: int
) -> None:
    """403, 404 and 413 are PermanentError."""
    fake.fail_next(status=status)

    with pytest.raises(PermanentError) as caught:
        await make_pager().acknowledge("incident-1")

    assert str(status) in caught.value.reason


async def test_success_without_json_is_transient(
    fake: FakePagerDuty, make_pager: MakePager
) -> None:
    """A 202 whose body is not JSON is TransientError (a proxy answered, not PagerDuty)."""
    fake.fail_next(status=202, body="<html>accepted</html>")

    with pytest.raises(TransientError):
        await make_pager().trigger(page())


async def test_cancellation_propagates(fake: FakePagerDuty, make_pager: MakePager) -> None:
    """Cancelling a call in flight raises CancelledError, not a port error."""
    fake.fail_next(delay_s=30)
    task = asyncio.create_task(make_pager().trigger(page()))
    await eventually(lambda: fake.requests > 0)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_repr_hides_routing_key(make_pager: MakePager) -> None:
    """Neither repr nor str of the pager shows the routing key."""
    pager = make_pager()

    assert ROUTING_KEY not in repr(pager)
    assert ROUTING_KEY not in str(pager)
    assert "PagerDutyPager" in repr(pager)


def test_parse_retry_after_forms() -> None:
    """Retry-After parses as seconds or HTTP-date; junk and absence give None."""
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)

    assert parse_retry_after("2", now) == 2.0
    assert parse_retry_after(" 120 ", now) == 120.0
    assert parse_retry_after("Wed, 01 May 2024 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Wed, 01 May 2024 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-5", now) is None
    assert parse_retry_after(None, now) is None
