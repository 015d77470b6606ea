"""PagerDuty Events API v2 behind the Pager port.

One POST to `{base_url}/v2/enqueue` per call, bounded by a per-request timeout. The answer is
translated here: 202 is success, 400 and the other client errors are PermanentError, 429, 408,
5xx and every network failure are TransientError. There is no retry loop in this module: the
outbox owns retries, and the dedup_key makes each retry idempotent on PagerDuty's side.

The routing key is a credential (anyone holding it can page the on-call engineer), so it
appears only in the request body: never in a log line, a repr or an exception's text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from gateway.ports import LinkDown, PageRequest, PermanentError, TransientError

DEFAULT_BASE_URL = "https://events.pagerduty.com"
MAX_SUMMARY_CHARS = 1024  # PagerDuty's limit on payload.summary
_REASON_MAX_CHARS = 300
_DELAY_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_REDACTED = "<routing key>"

__all__ = ["DEFAULT_BASE_URL", "MAX_SUMMARY_CHARS", "PagerDutyPager", "parse_retry_after"]


class PagerDutyPager:
    """The Pager port over PagerDuty's Events API v2.

    The composition root creates `session` inside the running loop and closes it; this class
    only borrows it, so constructing one does no I/O.
    """

    def __init__(
        self,
        routing_key: str,
        *,
        session: aiohttp.ClientSession,
        base_url: str = DEFAULT_BASE_URL,
        timeout_s: float = 10,
        client_name: str = "chatops-gateway",
        client_url: str | None = None,
    ) -> None:
        if not routing_key:
            raise ValueError("routing_key must not be empty")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self._routing_key = routing_key
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._url = f"{self._base_url}/v2/enqueue"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._timeout_s = timeout_s
        self._client_name = client_name
        self._client_url = client_url

    def __repr__(self) -> str:
        return f"PagerDutyPager(base_url={self._base_url!r}, timeout_s={self._timeout_s!r})"

    async def trigger(self, page: PageRequest) -> Mapping[str, Any]:
        """Open the alert for `page.dedup_key`; a repeat while it is open changes nothing."""
        event: dict[str, Any] = {
            "event_action": "trigger",
            "dedup_key": page.dedup_key,
            "payload": {
                "summary": _truncate(page.summary, MAX_SUMMARY_CHARS),
                "source": page.source,
                "severity": page.severity,
                "custom_details": dict(page.details),
            },
            "client": self._client_name,
        }
        if self._client_url is not None:
            event["client_url"] = self._client_url
        return await self._send(event)

    async def acknowledge(self, dedup_key: str) -> Mapping[str, Any]:
        """Mark the alert as being worked on."""
        return await self._send({"event_action": "acknowledge", "dedup_key": dedup_key})

    async def resolve(self, dedup_key: str) -> Mapping[str, Any]:
        """Close the alert."""
        return await self._send({"event_action": "resolve", "dedup_key": dedup_key})

    async def _send(self, event: dict[str, Any]) -> dict[str, Any]:
        # default=str: custom_details may carry datetimes or paths; PagerDuty only shows them.
        body = json.dumps({"routing_key": self._routing_key, **event}, default=str)
        try:
            async with self._session.post(
                self._url,
                data=body.encode(),
                headers={"Content-Type": "application/json"},
                timeout=self._timeout,
                # A redirect means base_url is wrong; following it would re-send the key.
                allow_redirects=False,
            ) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
                raw = await response.read()
        # No answer at all (refused, reset, timed out): PagerDuty is away, not refusing.
        except TimeoutError as exc:  # asyncio.TimeoutError is TimeoutError on 3.11
            raise LinkDown(f"PagerDuty did not answer within {self._timeout_s:g}s") from exc
        except aiohttp.ClientError as exc:
            raise LinkDown(self._scrub(f"PagerDuty unreachable: {_describe(exc)}")) from exc
        try:
            return interpret_response(
                status, raw, retry_after, sent_dedup_key=event["dedup_key"], now=_utcnow()
            )
        except PermanentError as exc:
            # Only a rejection quotes PagerDuty's own words, which could echo our request.
            raise PermanentError(self._scrub(exc.reason)) from None

    def _scrub(self, text: str) -> str:
        """Remove the routing key from text that may quote our request back at us."""
        return text.replace(self._routing_key, _REDACTED)


def interpret_response(
    status: int,
    raw: bytes,
    retry_after: str | None,
    *,
    sent_dedup_key: str,
    now: datetime,
) -> dict[str, Any]:
    """Turn one Events API answer into the record to keep, or raise the matching error."""
    if 200 <= status < 300:
        body = _json_object(raw)
        if body is None:
            raise TransientError(f"PagerDuty answered {status} with a body that is not JSON")
        dedup_key = body.get("dedup_key")
        return {
            "status": status,
            "dedup_key": dedup_key if isinstance(dedup_key, str) else sent_dedup_key,
        }
    hint = parse_retry_after(retry_after, now)
    if status == 400:
        raise PermanentError(_invalid_event_reason(raw))
    if status == 429:
        raise TransientError("PagerDuty rate limit reached (429)", retry_after_s=hint)
    if status == 408 or status >= 500:
        raise TransientError(f"PagerDuty server error ({status})", retry_after_s=hint)
    if status in (401, 403):
        raise PermanentError(f"PagerDuty refused the request ({status}): check the routing key")
    if status == 404:
        raise PermanentError("PagerDuty has no Events API at this base_url (404)")
    if status == 413:
        raise PermanentError("event too large for PagerDuty (413): shrink the details")
    if 300 <= status < 400:
        raise PermanentError(f"PagerDuty answered with a redirect ({status}): check base_url")
    raise PermanentError(f"PagerDuty answered {status}")


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date); None if absent."""
    if value is None:
        return None
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" parses as naive; HTTP-dates are always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _invalid_event_reason(raw: bytes) -> str:
    body = _json_object(raw)
    if body is None:
        return "PagerDuty rejected the event (400)"
    message = body.get("message", "invalid event")
    errors = body.get("errors", [])
    detail = "; ".join(str(e) for e in errors) if isinstance(errors, list) else str(errors)
    return _truncate(f"PagerDuty rejected the event (400 {message}): {detail}", _REASON_MAX_CHARS)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        parsed = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        return None
    return parsed if isinstance(parsed, dict) else None


def _describe(exc: BaseException) -> str:
    text = str(exc)
    described = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return _truncate(described, _REASON_MAX_CHARS)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _utcnow() -> datetime:
    return datetime.now(UTC)
