"""Configuration of the daemon's watch on itself: how long a link may be down before
/healthz says so (`[health]`), the heartbeat to an outside monitor (`[heartbeat]`), the
end-to-end canary (`[canary]`) and the page sent when the service fails for good
(`[notify_failure]`)."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from gateway.config.base import Secret, _Model

_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def _ping_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme == "https" and parts.hostname:
        return value
    if parts.scheme == "http" and parts.hostname in _LOOPBACK:
        return value  # a monitor (or a test) on this host
    raise ValueError("must be an https:// URL (http:// only on loopback)")


class HealthConfig(_Model):
    """When a link that is down makes the daemon unhealthy."""

    # A link down (disconnected, reconnecting, its peer unreachable) for longer than this
    # makes /healthz unhealthy; shorter blips are normal reconnects.
    down_grace_s: float = Field(default=30.0, gt=0)


class HeartbeatConfig(_Model):
    """A dead man's switch: a ping to an outside monitor (healthchecks.io, Cronitor, Grafana
    OnCall, Better Stack, Uptime Kuma push…) sent every `interval_s` only while the daemon is
    healthy. The monitor pages when the pings stop: a dead host, a hung daemon, or a link
    down for longer than `[health] down_grace_s`."""

    url: str
    method: Literal["GET", "POST"] = "GET"
    # Optional: pinged instead while unhealthy (healthchecks.io's `/fail`), so the monitor
    # alerts at once rather than after its grace period.
    fail_url: str | None = None
    interval_s: float = Field(default=60.0, gt=0)
    timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("url", "fail_url")
    @classmethod
    def _check_urls(cls, value: str | None) -> str | None:
        return None if value is None else _ping_url(value)


class CanaryConfig(_Model):
    """The end-to-end self-test: a signed test message through intake, pipeline and outbox
    every `interval_s`; one not through within `deadline_s` makes the daemon unhealthy.
    It never pages, mails or posts anything."""

    enabled: bool = True
    interval_s: float = Field(default=300.0, gt=0)
    deadline_s: float = Field(default=120.0, gt=0)


class NotifyFailureConfig(_Model):
    """`chatops-gateway notify-failure` (run by the unit's OnFailure= hook): the PagerDuty
    routing key to page when the service fails for good; by default [pagerduty]'s."""

    routing_key: Secret | None = None
    severity: Literal["critical", "error", "warning", "info"] = "critical"
