"""The alert webhook listener (aiohttp): monitoring alerts and PagerDuty v3 events in.

`POST /alerts/<source>` takes the configured source's payload (Alertmanager, Grafana,
Pingdom or the generic JSON) and `POST /pagerduty` takes PagerDuty v3 webhooks. Each
request is checked in this order, cheapest refusal first: a known source (404), its
credential compared in constant time (401; either is 429 past the listener's rate, so
unverified load is shed first), the source's rate
limit (429), the body size (413), the payload (400 not JSON, 422 wrong shape); for
PagerDuty the signature (401) and the replay window (422), in adapters.pagerduty_webhook.
Only then is it decoded into neutral values (gateway.alerts, gateway.parse.pagerduty_events) and
committed to the durable inbox; 200 is answered after the commit, 503 with Retry-After if it
failed. A refusal never quotes the request and nothing secret is logged.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog
from aiohttp import web

from adapters.pagerduty_webhook import PagerDutyHook, Refusal, check
from gateway.domain import Accepted
from gateway.parse.alert_payloads import BadPayload, decode
from gateway.run import metrics
from gateway.run.alert_intake import AlertIntake
from rules.alert_rules import AlertSource

log = structlog.get_logger("adapters.alerts_http")
_HMAC_PREFIX = "sha256="
READ_TIMEOUT_S = 30.0  # a body slower than this to arrive gets 408


@dataclass(frozen=True)
class SourceAuth:
    """One configured alert source and the credential it must present."""

    name: str
    kind: AlertSource
    auth: str  # bearer | hmac | url_token
    secret: bytes
    hmac_header: str = "X-Signature-256"
    rate_per_minute: int = 600
    # Grafana's HMAC option with a timestamp header signs "<unix seconds>:<body>"; a
    # timestamp further than hmac_max_age_s from now is refused (a replay).
    hmac_timestamp_header: str | None = None
    hmac_max_age_s: float = 300.0


class TokenBucket:
    """`rate_per_minute` requests a minute, in bursts of up to that many."""

    def __init__(self, rate_per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity = float(rate_per_minute)
        self._per_s = rate_per_minute / 60.0
        self._tokens = self._capacity
        self._clock = clock
        self._at = clock()

    def take(self) -> float | None:
        """None when allowed; else the seconds until a request would be."""
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._at) * self._per_s)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return None
        return (1 - self._tokens) / self._per_s


def credential_ok(
    source: SourceAuth, request: web.Request, body: object, now: float | None = None
) -> bool:
    """The request carries the source's credential (constant-time comparisons); `now` (Unix
    seconds) for a signed timestamp's freshness."""
    if source.auth == "bearer":
        given = request.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), source.secret
        )
    if source.auth == "url_token":
        return hmac.compare_digest(request.query.get("token", "").encode(), source.secret)
    sig = request.headers.get(source.hmac_header, "").strip().removeprefix(_HMAC_PREFIX)
    if not isinstance(body, bytes):
        return False
    signed = body
    if source.hmac_timestamp_header is not None:
        stamp = request.headers.get(source.hmac_timestamp_header, "").strip()
        if (
            not stamp.isdigit()
            or len(stamp) > 12
            or abs(int(stamp) - (time.time() if now is None else now)) > source.hmac_max_age_s
        ):
            return False
        signed = stamp.encode() + b":" + body
    expected = hmac.new(source.secret, signed, "sha256").hexdigest()
    return hmac.compare_digest(sig.lower().encode(), expected.encode())


def _refuse(
    status: int, reason: str, source: str, why: str, headers: dict[str, str] | None = None
) -> web.Response:
    metrics.REJECTED.inc(reason=f"webhook_{why}")
    log.warning("alerts.rejected", source=source, status=status, reason=why)
    return web.json_response(
        {"status": "rejected", "reason": reason}, status=status, headers=headers
    )


class AlertWebhookServer:
    """The listener. `state` is "starting", then "listening" (health)."""

    def __init__(
        self,
        intake: AlertIntake,
        sources: Sequence[SourceAuth],
        *,
        host: str,
        port: int,
        max_body_bytes: int,
        rate_per_minute: int,
        commit_timeout_s: float = 10.0,
        pagerduty: PagerDutyHook | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._intake = intake
        self._sources = {s.name: s for s in sources}
        self._buckets = {s.name: TokenBucket(s.rate_per_minute) for s in sources}
        self._global = TokenBucket(rate_per_minute)
        self._host, self._port = host, port
        self._max_body = max_body_bytes
        self._commit_timeout_s = commit_timeout_s
        self._pagerduty = pagerduty
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.state = "starting"

    def app(self) -> web.Application:
        """The aiohttp application (routes and the body limit)."""
        app = web.Application(client_max_size=self._max_body)
        app.router.add_post("/alerts/{source}", self._alert)
        if self._pagerduty is not None:
            app.router.add_post("/pagerduty", self._pd)
        return app

    async def start(self) -> None:
        """Bind and serve."""
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self.state = "listening"

    async def stop(self) -> None:
        """Stop taking requests; those in flight finish their commit."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.state = "stopped"

    async def _body(self, request: web.Request, source: str) -> bytes | web.Response:
        """The body, or the refusal: too large (413) or too slow to arrive (408)."""
        if request.content_length is not None and request.content_length > self._max_body:
            return _refuse(413, "body too large", source, "too_big")
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                return await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _refuse(413, "body too large", source, "too_big")
        except TimeoutError:
            return _refuse(408, "body too slow", source, "too_slow")

    def _shed(
        self, over: float | None, status: int, reason: str, source: str, why: str
    ) -> web.Response:
        # Unverified load is shed first: past the listener's limit, a request without a good
        # credential gets 429 and no log line of its own (a flood must not flood the logs),
        # while a source presenting its credential is only held to its own limit.
        if over is None:
            return _refuse(status, reason, source, why)
        metrics.REJECTED.inc(reason="webhook_rate")
        return web.json_response(
            {"status": "rejected", "reason": "too many requests"},
            status=429,
            headers={"Retry-After": str(max(1, round(over)))},
        )

    async def _alert(self, request: web.Request) -> web.Response:  # noqa: PLR0911  (a refusal per check)
        name = request.match_info["source"]
        over = self._global.take()
        source = self._sources.get(name)
        if source is None:
            return self._shed(over, 404, "unknown source", "-", "unknown_source")
        body: bytes | web.Response | None = None
        if source.auth == "hmac":
            body = await self._body(request, name)
            if isinstance(body, web.Response):
                return body
        now = self._clock().timestamp() if self._clock else None
        if not credential_ok(source, request, body, now):
            return self._shed(over, 401, "bad credentials", name, "credentials")
        wait = self._buckets[name].take()
        if wait is not None:
            return _refuse(
                429, "too many requests", name, "rate", {"Retry-After": str(max(1, round(wait)))}
            )
        if body is None:
            body = await self._body(request, name)
        if isinstance(body, web.Response):
            return body
        try:
            notification = decode(source.kind, name, body)
        except BadPayload as exc:
            status = 400 if exc.reason.startswith("the body is not") else 422
            return _refuse(status, exc.reason, name, "bad_payload")
        raw = body
        return await self._commit(
            name,
            lambda: self._intake.accept_alert(notification, raw, self._commit_timeout_s),
            alerts=len(notification.alerts),
        )

    async def _pd(self, request: web.Request) -> web.Response:
        hook = self._pagerduty
        if hook is None:  # the route exists only with a hook
            raise web.HTTPNotFound
        over = self._global.take()
        body = await self._body(request, "pagerduty")
        if isinstance(body, web.Response):
            return body
        event = check(hook, request.headers, body, self._clock() if self._clock else None)
        if isinstance(event, Refusal):
            if event.why == "signature":
                return self._shed(over, event.status, event.reason, "pagerduty", event.why)
            return _refuse(event.status, event.reason, "pagerduty", event.why)
        return await self._commit(
            "pagerduty",
            lambda: self._intake.accept_pagerduty(event, self._commit_timeout_s),
            event_type=event.event_type,
        )

    async def _commit(
        self, source: str, accept: Callable[[], Awaitable[Accepted]], **fields: object
    ) -> web.Response:
        try:
            accepted = await accept()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the sender retries; never the exception text
            metrics.REJECTED.inc(reason="commit_failed")
            log.error("alerts.commit_failed", source=source, error=type(exc).__name__)
            return web.json_response(
                {"status": "unavailable"}, status=503, headers={"Retry-After": "5"}
            )
        metrics.ACCEPTED.inc(channel="webhook")
        log.info(
            "alerts.accepted",
            source=source,
            inbox_id=accepted.inbox_id,
            duplicate=accepted.duplicate,
            **fields,
        )
        return web.json_response({"status": "accepted", "duplicate": accepted.duplicate})
