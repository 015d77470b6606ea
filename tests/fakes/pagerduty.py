"""A small, honest fake of PagerDuty's Events API v2, served by aiohttp on loopback.

It validates events the way the real endpoint does (answering 400 with the real body shape),
deduplicates alerts by dedup_key, and can be told to misbehave for the next requests: answer
with an error status, reset the connection, or answer slowly.

It also plays PagerDuty's side of a v3 webhook subscription: `subscribe(url, secret)`, then
what an engineer does on the phone app (`acknowledge_on_app`, `resolve_on_app`, `reassign`,
`escalate`) changes the alert and POSTs the documented v3 event (`{"event": {id, event_type,
resource_type, occurred_at, agent, data}}`) signed with `X-PagerDuty-Signature: v1=<hex
HMAC-SHA256 of the body>` to the subscriber; `replay_last()` sends a delivered event again.

    async with FakePagerDuty() as fake:
        fake.fail_next(status=429, retry_after="2")
        pager = PagerDutyPager(KEY, session=session, base_url=fake.url)
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

ACTIONS = ("trigger", "acknowledge", "resolve")
SEVERITIES = ("critical", "error", "warning", "info")
ROUTING_KEY_LENGTH = 32
MAX_DEDUP_KEY = 255
MAX_SUMMARY = 1024


@dataclass(frozen=True)
class Fault:
    """What to do to one request instead of (or before) answering it normally."""

    status: int | None = None
    retry_after: str | None = None
    reset: bool = False
    delay_s: float | None = None
    body: str | None = None


class FakePagerDuty:
    """`POST /v2/enqueue` with validation, alert state and programmable faults."""

    def __init__(self, *, routing_keys: Collection[str] | None = None) -> None:
        # routing_keys: when given, a well-formed key outside it is refused like an unknown
        # integration key; when None, any well-formed key is accepted.
        self._routing_keys = None if routing_keys is None else frozenset(routing_keys)
        self._faults: deque[Fault] = deque()
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None
        self._url: str | None = None
        self.alerts: dict[str, str] = {}  # dedup_key -> triggered | acknowledged | resolved
        self.events: list[dict[str, Any]] = []  # every accepted event, as received
        self.requests = 0  # every request that reached the handler, faulted or not
        self.alerts_opened = 0  # a trigger on a resolved dedup_key opens a new alert
        self._subscriber: tuple[str, list[str]] | None = None  # webhook URL, secrets
        self.webhooks: list[tuple[bytes, dict[str, str], int]] = []  # body, headers, status
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)  # stamps occurred_at

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("FakePagerDuty is not started")
        return self._url

    async def start(self) -> None:
        self._closing = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v2/enqueue", self._enqueue)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self._url = f"http://{host}:{port}"

    async def close(self) -> None:
        if self._closing is not None:
            self._closing.set()  # wake handlers parked in a delay fault
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakePagerDuty:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def fail_next(
        self,
        status: int | None = None,
        *,
        retry_after: str | None = None,
        reset: bool = False,
        delay_s: float | None = None,
        body: str | None = None,
        times: int = 1,
    ) -> None:
        """Queue a fault for each of the next `times` requests (then answer normally again).

        `status` answers with that status (and `body`, if given); `reset` drops the connection
        without an answer; `delay_s` holds the answer back that long, then answers normally
        unless `status` is also set.
        """
        fault = Fault(
            status=status, retry_after=retry_after, reset=reset, delay_s=delay_s, body=body
        )
        self._faults.extend([fault] * times)

    def open_alerts(self) -> dict[str, str]:
        return {k: v for k, v in self.alerts.items() if v != "resolved"}

    # -- v3 webhooks: the subscription and what engineers do on the phone app --------------
    def subscribe(self, url: str, *secrets: str) -> None:
        """Send v3 webhooks to `url`, signed with each of `secrets`."""
        self._subscriber = (url, list(secrets))

    async def deliver(self, body: dict[str, Any] | bytes, signature: str | None = None) -> int:
        """POST one webhook to the subscriber (as PagerDuty does); returns the status."""
        assert self._subscriber is not None, "subscribe() first"
        url, secrets = self._subscriber
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "PagerDuty-Webhook/V3.0",
            "X-Webhook-Id": uuid.uuid4().hex,
            "X-Webhook-Subscription": "PSUBSCR",
            "X-PagerDuty-Signature": signature if signature is not None else sign(raw, secrets),
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=raw, headers=headers) as resp,
        ):
            await resp.read()
            self.webhooks.append((raw, headers, resp.status))
            return resp.status

    async def _act(self, event_type: str, dedup_key: str, state: str | None, **fields: Any) -> int:
        if state is not None and self.alerts.get(dedup_key) in ("triggered", "acknowledged"):
            self.alerts[dedup_key] = state
        number = list(self.alerts).index(dedup_key) + 1 if dedup_key in self.alerts else 1
        return await self.deliver(
            v3_event(
                event_type,
                dedup_key,
                number=number,
                status=state or "triggered",
                occurred_at=self.clock(),
                **fields,
            )
        )

    async def acknowledge_on_app(self, dedup_key: str, by: str = "Ana Engineer") -> int:
        """An engineer acknowledges on the phone app."""
        return await self._act(
            "incident.acknowledged", dedup_key, "acknowledged", agent=by, assignees=(by,)
        )

    async def resolve_on_app(self, dedup_key: str, by: str = "Ana Engineer") -> int:
        """An engineer resolves on the phone app."""
        return await self._act("incident.resolved", dedup_key, "resolved", agent=by)

    async def reassign(self, dedup_key: str, to: str, by: str = "Ana Engineer") -> int:
        """An engineer reassigns the incident."""
        return await self._act("incident.reassigned", dedup_key, None, agent=by, assignees=(to,))

    async def escalate(self, dedup_key: str, to: str) -> int:
        """The escalation policy moves the incident on (no human agent)."""
        return await self._act(
            "incident.escalated", dedup_key, None, agent="PagerDuty", assignees=(to,)
        )

    async def replay_last(self) -> int:
        """Deliver the last webhook again, byte for byte with its signature."""
        raw, headers, _ = self.webhooks[-1]
        return await self.deliver(raw, headers["X-PagerDuty-Signature"])

    async def _enqueue(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        raw = await request.read()
        if self._faults:
            fault = self._faults.popleft()
            answer = await self._apply(fault, request)
            if answer is not None:
                return answer
        return self._process(raw)

    async def _apply(self, fault: Fault, request: web.Request) -> web.StreamResponse | None:
        if fault.delay_s is not None:
            assert self._closing is not None
            try:
                async with asyncio.timeout(fault.delay_s):
                    await self._closing.wait()
                return web.Response(status=503)  # shutting down: nobody is listening
            except TimeoutError:
                pass
        if fault.reset:
            assert request.transport is not None
            request.transport.abort()  # RST, no status line: the client sees a disconnect
            return web.Response(status=500)  # never reaches the wire
        if fault.status is None:
            return None
        headers = {} if fault.retry_after is None else {"Retry-After": fault.retry_after}
        body = fault.body if fault.body is not None else _fault_body(fault.status)
        return web.Response(status=fault.status, text=body, headers=headers)

    def _process(self, raw: bytes) -> web.Response:
        try:
            event = json.loads(raw)
        except ValueError:
            return _invalid(["Event object is not valid JSON"])
        if not isinstance(event, dict):
            return _invalid(["Event object must be a JSON object"])
        errors = self._validate(event)
        if errors:
            return _invalid(errors)
        dedup_key = event.get("dedup_key") or uuid.uuid4().hex
        self.events.append(event)
        self._apply_action(event["event_action"], dedup_key)
        return web.json_response(
            {"status": "success", "message": "Event processed", "dedup_key": dedup_key},
            status=202,
        )

    def _validate(self, event: dict[str, Any]) -> list[str]:
        errors = _routing_key_errors(event.get("routing_key"), self._routing_keys)
        action = event.get("event_action")
        if action not in ACTIONS:
            errors.append("'event_action' is missing or invalid (trigger, acknowledge, resolve)")
        dedup_key = event.get("dedup_key")
        if dedup_key is not None and not isinstance(dedup_key, str):
            errors.append("'dedup_key' must be a string")
        elif isinstance(dedup_key, str) and len(dedup_key) > MAX_DEDUP_KEY:
            errors.append(f"'dedup_key' is too long (max {MAX_DEDUP_KEY} characters)")
        if action in ("acknowledge", "resolve") and not dedup_key:
            errors.append("'dedup_key' is required for acknowledge and resolve")
        if action == "trigger":
            errors.extend(_payload_errors(event.get("payload")))
        return errors

    def _apply_action(self, action: str, dedup_key: str) -> None:
        state = self.alerts.get(dedup_key)
        is_open = state in ("triggered", "acknowledged")
        if action == "trigger" and not is_open:
            self.alerts[dedup_key] = "triggered"
            self.alerts_opened += 1
        elif action == "acknowledge" and is_open:
            self.alerts[dedup_key] = "acknowledged"
        elif action == "resolve" and is_open:
            self.alerts[dedup_key] = "resolved"
        # Anything else (ack/resolve of an unknown or closed alert) is accepted and ignored.


def _routing_key_errors(key: object, known: frozenset[str] | None) -> list[str]:
    if not isinstance(key, str) or len(key) != ROUTING_KEY_LENGTH:
        return ["Length of 'routing_key' is incorrect (should be 32 characters)"]
    if not key.isalnum():
        return ["'routing_key' cannot contain non-alphanumeric characters."]
    if known is not None and key not in known:
        return ["Invalid routing key"]
    return []


def _payload_errors(payload: object) -> list[str]:
    if not isinstance(payload, dict):
        return ["'payload' is missing or not an object"]
    errors = []
    summary = payload.get("summary")
    if not isinstance(summary, str) or not summary:
        errors.append("'payload.summary' is missing or blank")
    elif len(summary) > MAX_SUMMARY:
        errors.append(f"'payload.summary' is too long (max {MAX_SUMMARY} characters)")
    source = payload.get("source")
    if not isinstance(source, str) or not source:
        errors.append("'payload.source' is missing or blank")
    if payload.get("severity") not in SEVERITIES:
        errors.append(
            "'payload.severity' is invalid (must be one of critical, error, warning, info)"
        )
    return errors


def _invalid(errors: list[str]) -> web.Response:
    body = {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
    return web.json_response(body, status=400)


def _fault_body(status: int) -> str:
    if status == 429:
        return json.dumps({"status": "throttle event", "message": "Too many requests"})
    if status == 400:
        return json.dumps(
            {"status": "invalid event", "message": "Event object is invalid", "errors": ["fault"]}
        )
    return f"{status} fault from FakePagerDuty"


# -- v3 webhooks: PagerDuty telling a subscriber what happened to an incident ---------------

_USERS = {"Ana Engineer": "PLH1HKV", "Ben Oncall": "PTUXL6G", "PagerDuty": "P0000PD"}


def v3_event(
    event_type: str,
    dedup_key: str,
    *,
    agent: str = "Ana Engineer",
    number: int = 1,
    status: str = "acknowledged",
    assignees: tuple[str, ...] = (),
    occurred_at: datetime | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """A v3 webhook body for an incident event, as PagerDuty documents it."""
    at = (occurred_at or datetime.now(UTC)).isoformat(timespec="milliseconds")
    incident_id = "Q" + hashlib.sha256(dedup_key.encode()).hexdigest()[:13].upper()
    user = _USERS.get(agent, "PXXXXXX")
    return {
        "event": {
            "id": event_id or uuid.uuid4().hex[:26].upper(),
            "event_type": event_type,
            "resource_type": "incident",
            "occurred_at": at.replace("+00:00", "Z"),
            "agent": {
                "html_url": f"https://acme.pagerduty.com/users/{user}",
                "id": user,
                "self": f"https://api.pagerduty.com/users/{user}",
                "summary": agent,
                "type": "user_reference",
            },
            "client": None,
            "data": {
                "id": incident_id,
                "type": "incident",
                "self": f"https://api.pagerduty.com/incidents/{incident_id}",
                "html_url": f"https://acme.pagerduty.com/incidents/{incident_id}",
                "number": number,
                "status": status,
                "incident_key": dedup_key,
                "created_at": at.replace("+00:00", "Z"),
                "title": f"Incident {dedup_key}",
                "service": {
                    "html_url": "https://acme.pagerduty.com/services/PF9KMXH",
                    "id": "PF9KMXH",
                    "self": "https://api.pagerduty.com/services/PF9KMXH",
                    "summary": "Platform",
                    "type": "service_reference",
                },
                "assignees": [
                    {
                        "html_url": f"https://acme.pagerduty.com/users/{_USERS.get(a, 'P1')}",
                        "id": _USERS.get(a, "P1"),
                        "summary": a,
                        "type": "user_reference",
                        "self": f"https://api.pagerduty.com/users/{_USERS.get(a, 'P1')}",
                    }
                    for a in assignees
                ],
                "escalation_policy": {
                    "html_url": "https://acme.pagerduty.com/escalation_policies/P",
                    "id": "PUS0KTE",
                    "self": "https://api.pagerduty.com/e/P",
                    "summary": "Platform on-call",
                    "type": "escalation_policy_reference",
                },
                "teams": [],
                "priority": None,
                "urgency": "high",
                "conference_bridge": None,
                "resolve_reason": None,
            },
        }
    }


def sign(body: bytes, secrets: list[str]) -> str:
    """The X-PagerDuty-Signature value: one v1= entry per active secret."""
    return ",".join("v1=" + hmac.new(s.encode(), body, hashlib.sha256).hexdigest() for s in secrets)
